//! `/metrics` in Prometheus text format: requests, latencies and streaming counters.

use crate::site::Site;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS_MS: [u64; 8] = [1, 5, 10, 25, 50, 100, 500, 2500];

/// Process-wide request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    buckets: [AtomicU64; 8],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe_request(&self, status: u16, took: Duration) {
        *self
            .by_status
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
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

    /// The text exposition, with the site's streaming figures read from its database.
    pub async fn render(&self, site: &Site) -> String {
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
        if let Ok(mut conn) = site.store.conn().await {
            if let Ok(n) = crate::streaming::update_log::current_seq(&mut conn).await {
                out.push_str("# HELP docstream_update_logs_written_total Event Update Logs written by this site.\n# TYPE docstream_update_logs_written_total counter\n");
                let _ = writeln!(out, "docstream_update_logs_written_total {n}");
            }
        }
        out
    }
}
