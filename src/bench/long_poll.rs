//! Long-poll measures: `latency_longpoll` (a consumer the producer cannot reach) and
//! `waiting_pulls` (what 1,000 waiting pulls cost a producer).

use super::{
    add_consumers, cpu_seconds, current_seq, free_port, idle_consumer_sink, make_site,
    seed_masters, serve, set_setting, start_served, wait_ready, Latency, LatencyRun, Report,
    Served,
};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Waiting pulls the producer holds in `waiting_pulls`.
const WAITING_PULLS: usize = 1000;
/// How long they are held idle while the producer's CPU is counted.
const IDLE_HOLD: Duration = Duration::from_secs(10);

/// The latency run again with the consumer served on a port the producer does not know (its
/// URL points at nothing): notifications fail, and only its long poll brings the changes.
pub(super) async fn latency(run: &LatencyRun<'_>, data_dir: &Path) -> Result<Latency> {
    set_setting(run.consumer, "pull_wait_seconds", json!(25))?;
    let hidden = free_port()?;
    let child = serve(data_dir, hidden)?;
    let served = Served {
        child,
        url: format!("http://127.0.0.1:{hidden}"),
        auth: String::new(),
    };
    wait_ready(run.client, &served.url).await?;
    let lat = run.measure("latency_longpoll").await;
    drop(served);
    set_setting(run.consumer, "pull_wait_seconds", json!(0))?;
    lat
}

/// Resident memory of a process now (VmRSS), in MB.
fn rss_mb(pid: u32) -> f64 {
    super::status_mb(pid, "VmRSS")
}

/// The soft open-file limit of this process (inherited by the producer it starts).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A producer with 1,000 approved consumer sites holds one waiting pull from each: its extra
/// memory, its CPU while they wait, and how long one write takes to answer them all.
pub(super) async fn waiting_pulls(tmp: &Path, report: &mut Report) -> Result<()> {
    let needed = (WAITING_PULLS as u64) * 2 + 200;
    if open_file_limit().is_some_and(|l| l < needed) {
        eprintln!("waiting_pulls skipped: the open-file limit is under {needed} (raise it with `ulimit -n {needed}`)");
        return Ok(());
    }
    let port = free_port()?;
    let site = make_site(&tmp.join("wp"), "wp", port).await?;
    seed_masters(&site).await?;
    let sink = idle_consumer_sink().await?;
    add_consumers(&site, &sink, 0, WAITING_PULLS).await?;
    // One connection per pull, as from 1,000 sites.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let served = start_served(&site, port, &client).await?;
    let pid = served.child.id();
    let after = current_seq(&site).await?.to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_mb(pid);
    let method = "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer";
    let mut pulls = tokio::task::JoinSet::new();
    for i in 0..WAITING_PULLS {
        let form = [
            ("event_consumer", format!("{sink}/consumer-{i}")),
            ("doctypes", r#"["Item", "Sales Invoice"]"#.to_string()),
            ("after_seq", after.clone()),
            ("wait", "30".to_string()),
        ];
        let req = client
            .post(format!("{}/api/method/{method}", served.url))
            .header("authorization", &served.auth)
            .form(&form);
        pulls.spawn(async move {
            let r = req.send().await.map_err(|e| e.to_string())?;
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((Instant::now(), body))
        });
    }
    // Every pull has been received (each acknowledges its checkpoint) and waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(IDLE_HOLD).await;
    let idle_cpu = cpu_seconds(pid) - cpu_before;
    let rss_held = rss_mb(pid);
    crate::progress::finish("waiting_pulls", "held");
    let written = Instant::now();
    let r = client
        .post(format!("{}/api/resource/Item", served.url))
        .header("authorization", &served.auth)
        .json(&super::item("WP-", 0))
        .send()
        .await
        .map_err(|e| Error::Internal(format!("insert failed: {e}")))?;
    if !r.status().is_success() {
        return Err(Error::Internal(format!(
            "insert failed: {}",
            r.text().await.unwrap_or_default()
        )));
    }
    let (mut woken, mut last) = (0, Duration::ZERO);
    while let Some(answer) = pulls.join_next().await {
        let (at, body) = answer
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::Internal)?;
        if body["message"].as_array().is_some_and(|m| m.len() == 1) {
            woken += 1;
        }
        last = last.max(at.saturating_duration_since(written));
    }
    report.extra.insert(
        "waiting_pulls".into(),
        json!({
            "pulls": WAITING_PULLS,
            "extra_rss_mb": rss_held - rss_before,
            "idle_cpu_ms_per_s": idle_cpu * 1000.0 / IDLE_HOLD.as_secs_f64(),
            "woken_with_the_write": woken,
            "all_answered_ms": last.as_secs_f64() * 1000.0,
        }),
    );
    drop(served);
    site.store.close().await;
    Ok(())
}
