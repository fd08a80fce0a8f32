//! `fanout`: one producer, many consumer sites (served several to a process, each keeping its
//! long poll open), single updates at 100/s: latency to the last consumer and the producer's
//! CPU, against the same run with one consumer.

use super::{
    cpu_seconds, current_seq, free_port, make_site, serve, set_setting, start_served, subscribe,
    wait_caught_up, Report, Served,
};
use crate::error::{Error, Result};
use crate::service::documents::WriteFlags;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store;
use crate::streaming::producer::approve_all;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Consumer processes besides the one that holds the first consumer alone.
const PROCESSES: usize = 4;
const WRITES_PER_S: u64 = 100;

/// What one phase measured.
struct Phase {
    p50_ms: f64,
    p99_ms: f64,
    writes: u64,
    /// All the producer process's CPU, serving pulls included.
    cpu_s: f64,
    /// The CPU of the write requests alone (the producer's own accounting, `/metrics`).
    write_cpu_s: f64,
    /// All the consumer processes' CPU.
    consumers_cpu_s: f64,
}

/// The producer's `docstream_request_cpu_seconds_total{kind="write"}`.
async fn write_cpu_seconds(client: &reqwest::Client, url: &str) -> Result<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Internal(format!("cannot read {url}/metrics: {e}")))?
        .text()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    text.lines()
        .find_map(|l| l.strip_prefix(r#"docstream_request_cpu_seconds_total{kind="write"} "#))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Internal(format!("{url}/metrics has no write CPU figure")))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(
            ((sorted.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(sorted.len().saturating_sub(1)),
        )
        .copied()
        .unwrap_or(f64::NAN)
}

/// Updates one ToDo at [`WRITES_PER_S`] for `secs`, waits for every consumer, and times each
/// log from the producer's commit to the last consumer's commit.
async fn phase(
    client: &reqwest::Client,
    p: &Served,
    producer: &Site,
    consumers: &[Site],
    consumer_pids: &[u32],
    todo: &str,
    secs: u64,
) -> Result<Phase> {
    let first = current_seq(producer).await? + 1;
    let pid = p.child.id();
    let consumers_cpu = || consumer_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let consumers_cpu_before = consumers_cpu();
    let cpu_before = cpu_seconds(pid);
    let write_cpu_before = write_cpu_seconds(client, &p.url).await?;
    let writes = WRITES_PER_S * secs;
    let tick = Duration::from_micros(1_000_000 / WRITES_PER_S);
    let started = Instant::now();
    for k in 0..writes {
        let r = client
            .put(format!("{}/api/resource/ToDo/{todo}", p.url))
            .header("authorization", &p.auth)
            .json(&json!({"description": format!("fanout {k}")}))
            .send()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let _ = r.bytes().await;
        if let Some(rest) = (tick * (k as u32 + 1)).checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        if k % 100 == 0 {
            crate::progress::report("fanout writes", k, Some(writes));
        }
    }
    let last = current_seq(producer).await?;
    for c in consumers {
        wait_caught_up(c, &p.url, last, "fanout drain").await?;
    }
    let cpu_s = cpu_seconds(pid) - cpu_before;
    let consumers_cpu_s = consumers_cpu() - consumers_cpu_before;
    let write_cpu_s = write_cpu_seconds(client, &p.url).await? - write_cpu_before;
    let parse =
        |s: &str| chrono::NaiveDateTime::parse_from_str(s, crate::time::DATETIME_FORMAT).ok();
    let range = [
        store::Param::Int(Some(first)),
        store::Param::Int(Some(last)),
    ];
    let mut latest: HashMap<i64, chrono::NaiveDateTime> = HashMap::new();
    for c in consumers {
        let mut conn = c.store.conn().await?;
        for r in store::fetch_docs(
            &mut conn,
            r#"SELECT seq, creation FROM "tabEvent Sync Log" WHERE seq >= $1 AND seq <= $2"#,
            &range,
        )
        .await?
        {
            let (Some(seq), Some(at)) = (
                r.get("seq").and_then(Value::as_i64),
                r.get("creation").and_then(Value::as_str).and_then(parse),
            ) else {
                continue;
            };
            let e = latest.entry(seq).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let mut conn = producer.store.conn().await?;
    let logs = store::fetch_docs(
        &mut conn,
        r#"SELECT seq, creation FROM "tabEvent Update Log" WHERE seq >= $1 AND seq <= $2"#,
        &range,
    )
    .await?;
    let mut lat: Vec<f64> = logs
        .iter()
        .filter_map(|r| {
            let seq = r.get("seq")?.as_i64()?;
            let made = parse(r.get("creation")?.as_str()?)?;
            Some((*latest.get(&seq)? - made).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok(Phase {
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        writes,
        cpu_s,
        write_cpu_s,
        consumers_cpu_s,
    })
}

/// Runs the measure: 200 consumers at `--docs` 10,000 and more (one per 50 documents below,
/// at least 2), writes for 20 s (5 s below 10,000 documents).
pub(super) async fn run(tmp: &Path, docs: usize, report: &mut Report) -> Result<()> {
    let consumers = (docs / 50).clamp(2, 200);
    let secs = if docs >= 10_000 { 20 } else { 5 };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let admin = Caller::administrator();
    let pport = free_port()?;
    let producer = make_site(&tmp.join("fan-p"), "fan-p", pport).await?;
    let p = start_served(&producer, pport, &client).await?;
    let todo = producer
        .insert_doc(
            &admin,
            "ToDo",
            store::doc_from(json!({"description": "fanout probe"})),
            &WriteFlags::default(),
        )
        .await?["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The first consumer has a process of its own (the one-consumer phase); the others are
    // spread over PROCESSES more. Their URLs lead nowhere: only their long polls serve them.
    let folder_of = |i: usize| -> PathBuf {
        let k = if i == 0 { 0 } else { 1 + (i - 1) % PROCESSES };
        tmp.join(format!("fan-c{k}"))
    };
    let mut sites = Vec::with_capacity(consumers);
    for i in 0..consumers {
        let name = format!("c{i:03}");
        let site = make_site(&folder_of(i), &name, free_port()?).await?;
        set_setting(&site, "pull_interval", json!(3600))?;
        site.generate_keys(&admin, "Administrator").await?;
        subscribe(&site, &p, &["ToDo"]).await?;
        sites.push(site);
        crate::progress::report("fanout sites", i as u64 + 1, Some(consumers as u64));
    }
    approve_all(&producer, &sites[0].config.url).await?;
    let start = |k: usize| -> Result<Served> {
        let child = serve(&tmp.join(format!("fan-c{k}")), free_port()?)?;
        Ok(Served {
            child,
            url: String::new(),
            auth: String::new(),
        })
    };
    let mut servers = vec![start(0)?];
    // Its long poll is open once it has caught up with the approval.
    wait_caught_up(
        &sites[0],
        &p.url,
        current_seq(&producer).await?,
        "fanout start",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids = |servers: &[Served]| servers.iter().map(|s| s.child.id()).collect::<Vec<_>>();
    let one = phase(
        &client,
        &p,
        &producer,
        &sites[..1],
        &pids(&servers),
        &todo,
        secs,
    )
    .await?;
    for s in &sites[1..] {
        approve_all(&producer, &s.config.url).await?;
    }
    for k in 1..=PROCESSES.min(consumers - 1) {
        servers.push(start(k)?);
    }
    let high = current_seq(&producer).await?;
    for s in &sites {
        wait_caught_up(s, &p.url, high, "fanout start").await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let many = phase(&client, &p, &producer, &sites, &pids(&servers), &todo, secs).await?;
    let delivered = |ph: &Phase, n: usize| ph.writes as f64 * n as f64;
    let per_write = |ph: &Phase| ph.write_cpu_s * 1e6 / ph.writes as f64;
    let process_per_write = |ph: &Phase| ph.cpu_s * 1e6 / ph.writes as f64;
    report.extra.insert(
        "fanout".into(),
        json!({
            "consumers": consumers,
            "consumer_processes": servers.len(),
            "writes_per_s": WRITES_PER_S,
            "seconds": secs,
            "p50_ms_to_last_consumer": many.p50_ms,
            "p99_ms_to_last_consumer": many.p99_ms,
            "p50_ms_one_consumer": one.p50_ms,
            "p99_ms_one_consumer": one.p99_ms,
            "producer_cpu_us_per_write": per_write(&many),
            "producer_cpu_us_per_write_one_consumer": per_write(&one),
            "producer_process_cpu_us_per_write": process_per_write(&many),
            "producer_process_cpu_us_per_write_one_consumer": process_per_write(&one),
            "producer_cpu_us_per_delivered_log": many.cpu_s * 1e6 / delivered(&many, consumers),
            "consumer_cpu_us_per_delivered_log": many.consumers_cpu_s * 1e6 / delivered(&many, consumers),
            "consumer_cpu_us_per_delivered_log_one_consumer": one.consumers_cpu_s * 1e6 / delivered(&one, 1),
        }),
    );
    drop(servers);
    drop(p);
    for s in sites {
        s.store.close().await;
    }
    producer.store.close().await;
    Ok(())
}
