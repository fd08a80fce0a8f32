//! `/metrics` in Prometheus text format: requests, latencies and streaming counters.

use crate::site::Site;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS_MS: [u64; 8] = [1, 5, 10, 25, 50, 100, 500, 2500];

/// What a request is, for the CPU it costs.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// POST, PUT or DELETE on `/api/resource`.
    Write,
    /// `get_update_logs_for_consumer`, long polls included.
    Pull,
    /// Everything else.
    Other,
}

impl Kind {
    const ALL: [(Kind, &'static str); 3] = [
        (Kind::Write, "write"),
        (Kind::Pull, "pull"),
        (Kind::Other, "other"),
    ];

    /// Tells a request's kind from its method and URL.
    pub fn of(method: &axum::http::Method, uri: &axum::http::Uri) -> Kind {
        use axum::http::Method;
        let path = uri.path();
        let pull = "get_update_logs_for_consumer";
        if path.ends_with(pull) || (path == "/" && uri.query().is_some_and(|q| q.contains(pull))) {
            Kind::Pull
        } else if path.starts_with("/api/resource/")
            && matches!(*method, Method::POST | Method::PUT | Method::DELETE)
        {
            Kind::Write
        } else {
            Kind::Other
        }
    }
}

/// CPU time of the calling thread, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Process-wide request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    buckets: [AtomicU64; 8],
    count: AtomicU64,
    sum_us: AtomicU64,
    /// CPU spent polling requests, and how many, by [`Kind`].
    cpu_us: [AtomicU64; 3],
    by_kind: [AtomicU64; 3],
    /// Requests that waited in a long poll (not in the latency histogram).
    long_polls: AtomicU64,
}

impl Metrics {
    /// Records one finished request; one that waited in a long poll is counted by status
    /// but kept out of the latency histogram (its time is the producer's quiet).
    pub fn observe_request(&self, status: u16, took: Duration, waited: bool) {
        *self
            .by_status
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
        if waited {
            self.long_polls.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ms = took.as_millis() as u64;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Runs a request's future, adding the CPU its polls take to its kind's total (the store
    /// runs statements on the polling thread, so that is the request's whole cost).
    pub async fn on_cpu<F: std::future::Future>(&self, kind: Kind, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let total = &self.cpu_us[kind as usize];
        self.by_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
        std::future::poll_fn(|cx| {
            let before = thread_cpu_us();
            let r = std::future::Future::poll(f.as_mut(), cx);
            total.fetch_add(thread_cpu_us().saturating_sub(before), Ordering::Relaxed);
            r
        })
        .await
    }

    /// The text exposition, with the site's streaming figures read from its database, and the
    /// per-peer figures when `peers` (the caller may see the streaming dashboard).
    pub async fn render(&self, site: &Site, peers: bool) -> String {
        let mut out = String::new();
        out.push_str("# HELP docstream_http_requests_total HTTP requests by status.\n# TYPE docstream_http_requests_total counter\n");
        for (s, n) in self.by_status.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "docstream_http_requests_total{{status=\"{s}\"}} {n}");
        }
        out.push_str("# HELP docstream_http_request_duration_seconds Request latency.\n# TYPE docstream_http_request_duration_seconds histogram\n");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "docstream_http_request_duration_seconds_bucket{{le=\"{}\"}} {}",
                *b as f64 / 1000.0,
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "docstream_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "docstream_http_request_duration_seconds_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "docstream_http_request_duration_seconds_count {count}");
        out.push_str("# HELP docstream_long_poll_requests_total Pulls that waited for a new update log (kept out of the latency histogram).\n# TYPE docstream_long_poll_requests_total counter\n");
        let _ = writeln!(
            out,
            "docstream_long_poll_requests_total {}",
            self.long_polls.load(Ordering::Relaxed)
        );
        out.push_str("# HELP docstream_request_cpu_seconds_total CPU spent handling requests, by kind (write: POST/PUT/DELETE on /api/resource; pull: get_update_logs_for_consumer).\n# TYPE docstream_request_cpu_seconds_total counter\n");
        for (kind, label) in Kind::ALL {
            let _ = writeln!(
                out,
                "docstream_request_cpu_seconds_total{{kind=\"{label}\"}} {}",
                self.cpu_us[kind as usize].load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        out.push_str("# HELP docstream_requests_by_kind_total Requests by kind.\n# TYPE docstream_requests_by_kind_total counter\n");
        for (kind, label) in Kind::ALL {
            let _ = writeln!(
                out,
                "docstream_requests_by_kind_total{{kind=\"{label}\"}} {}",
                self.by_kind[kind as usize].load(Ordering::Relaxed)
            );
        }
        if let Ok(mut conn) = site.store.conn().await {
            if let Ok(n) = crate::streaming::update_log::current_seq(&mut conn).await {
                out.push_str("# HELP docstream_update_logs_written_total Event Update Logs written by this site.\n# TYPE docstream_update_logs_written_total counter\n");
                let _ = writeln!(out, "docstream_update_logs_written_total {n}");
            }
        }
        use crate::service::backup_schedule as backups;
        match backups::status(site).await {
            Ok(s) if backups::shown(site, &s) => {
                out.push_str("# HELP docstream_backup_last_success_timestamp_seconds When the last scheduled backup was written (0: never).\n# TYPE docstream_backup_last_success_timestamp_seconds gauge\n");
                let _ = writeln!(
                    out,
                    "docstream_backup_last_success_timestamp_seconds {}",
                    s.last_ok
                );
                out.push_str("# HELP docstream_backup_failures Scheduled backups failed since the last one written.\n# TYPE docstream_backup_failures gauge\n");
                let _ = writeln!(out, "docstream_backup_failures {}", s.failures_in_a_row);
                out.push_str("# HELP docstream_backup_overdue 1 when no scheduled backup was written for two intervals.\n# TYPE docstream_backup_overdue gauge\n");
                let overdue = u8::from(backups::overdue(site, &s));
                let _ = writeln!(out, "docstream_backup_overdue {overdue}");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("backup metrics: {e}"),
        }
        if peers {
            match crate::streaming::peer_metrics::render(site).await {
                Ok(p) => out.push_str(&p),
                Err(e) => tracing::warn!("per-peer metrics: {e}"),
            }
        }
        out
    }
}
