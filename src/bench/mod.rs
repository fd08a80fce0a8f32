//! `docstream bench`: measures the site server on temporary SQLite sites, each served by its own
//! `docstream serve` process on loopback, next to a raw batched insert of the same rows.

use crate::error::{Error, Result};
use crate::service::documents;
use crate::service::documents::WriteFlags;
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::service::provisioning;
use crate::site::Site;
use crate::store::{self, Doc};
use crate::streaming::producer::approve_all;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod concurrent_write;
mod fanin;
mod fanout;
mod long_poll;
mod multi_process;
pub mod slow_link;
mod verify;
mod wire;

const ITEM_GROUPS: usize = 100;
const ROWS_PER_INVOICE: usize = 5;

/// What one run measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub docs: usize,
    pub sqlite_synchronous: String,
    pub raw_insert_per_s: f64,
    pub producer_write_per_s: serde_json::Map<String, Value>,
    pub stream_apply_per_s: f64,
    pub latency_ms: serde_json::Map<String, Value>,
    pub catch_up_peak_rss_mb: f64,
    pub extra: serde_json::Map<String, Value>,
}

struct Served {
    child: Child,
    url: String,
    auth: String,
}

/// Subscribes `consumer` to `producer`'s `doctypes` (same names, no existing documents) as
/// the Administrator whose keys `producer.auth` holds.
async fn subscribe(consumer: &Site, producer: &Served, doctypes: &[&str]) -> Result<()> {
    let (key, secret) = producer
        .auth
        .trim_start_matches("token ")
        .split_once(':')
        .unwrap_or_default();
    let rows: Vec<Value> = doctypes
        .iter()
        .map(|t| json!({"ref_doctype": t, "use_same_name": 1, "sync_existing": 0}))
        .collect();
    consumer
        .insert_doc(
            &Caller::administrator(),
            "Event Producer",
            store::doc_from(
                json!({"producer_url": producer.url, "producer_doctypes": rows,
                "user": "Administrator", "api_key": key, "api_secret": secret}),
            ),
            &WriteFlags::default(),
        )
        .await?;
    Ok(())
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One producer of the producer_write phase and what its turns added up to.
struct ProducerRun {
    label: &'static str,
    site: Site,
    served: Served,
    took: Duration,
    cpu_s: f64,
    names: Vec<String>,
}

/// Passes of raw_insert, each on a fresh site; the median is reported.
const RAW_INSERT_PASSES: usize = 3;

/// Documents written to one producer before the next takes its turn (producer_write).
const PRODUCER_WRITE_TURN: usize = 250;

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Internal(format!("no free port: {e}")))
}

/// The documents of the benchmark: N/2 Items then N/2 Sales Invoices of 5 rows.
fn item(prefix: &str, i: usize) -> Value {
    json!({"item_code": format!("{prefix}ITEM-{i:07}"), "item_name": format!("Item {i}"), "item_group": format!("Group {:03}", i % ITEM_GROUPS), "stock_uom": "Nos", "standard_rate": (i % 100) as f64 + 0.5, "description": "A benchmark item"})
}

fn invoice(prefix: &str, i: usize, items: usize) -> Value {
    let rows: Vec<Value> = (0..ROWS_PER_INVOICE)
        .map(|r| {
            let it = (i * ROWS_PER_INVOICE + r) % items.max(1);
            json!({"item_code": format!("{prefix}ITEM-{it:07}"), "item_name": format!("Item {it}"), "qty": (r + 1) as f64, "rate": 10.0, "amount": 10.0 * (r + 1) as f64, "uom": "Nos"})
        })
        .collect();
    json!({"customer": "Bench Customer", "posting_date": "2026-11-23", "due_date": "2026-12-23", "items": rows, "total": 150.0, "grand_total": 150.0})
}

async fn make_site(root: &Path, name: &str, port: u16) -> Result<Site> {
    provisioning::new_site(
        root,
        name,
        "bench",
        Some(&format!("http://127.0.0.1:{port}")),
        None,
        crate::hooks::install,
    )
    .await
}

async fn seed_masters(site: &Site) -> Result<()> {
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        ..Default::default()
    };
    let reg = site.meta();
    let mut tx = site.store.begin().await?;
    documents::insert_in(
        &Write {
            site,
            reg: &reg,
            caller: &admin,
            dt: &*reg.get("UOM")?,
        },
        &mut tx,
        store::doc_from(json!({"uom_name": "Nos"})),
        &flags,
    )
    .await?;
    documents::insert_in(
        &Write {
            site,
            reg: &reg,
            caller: &admin,
            dt: &*reg.get("Customer")?,
        },
        &mut tx,
        store::doc_from(json!({"customer_name": "Bench Customer"})),
        &flags,
    )
    .await?;
    for g in 0..ITEM_GROUPS {
        documents::insert_in(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &*reg.get("Item Group")?,
            },
            &mut tx,
            store::doc_from(json!({"item_group_name": format!("Group {g:03}")})),
            &flags,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Writes the same rows with plain batched INSERTs, one transaction per 1,000 documents.
async fn raw_insert(site: &Site, n: usize) -> Result<f64> {
    let reg = site.meta();
    let (item_dt, inv_dt, row_dt) = (
        reg.get("Item")?,
        reg.get("Sales Invoice")?,
        reg.get("Sales Invoice Item")?,
    );
    let now = site.clock.now();
    let std_cols = |m: &mut Doc, name: String| {
        m.insert("name".into(), Value::String(name));
        for k in ["owner", "modified_by"] {
            m.insert(k.into(), "Administrator".into());
        }
        for k in ["creation", "modified"] {
            m.insert(k.into(), now.clone().into());
        }
        m.insert("docstatus".into(), 0.into());
        m.insert("idx".into(), 0.into());
    };
    let half = n / 2;
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut tx = site.store.begin().await?;
        for j in i..(i + 1000).min(n) {
            if j < half {
                let mut d = store::doc_from(item("RAW-", j));
                std_cols(&mut d, format!("RAW-ITEM-{j:07}"));
                store::insert_row(&mut tx, &item_dt, &d).await?;
            } else {
                let k = j - half;
                let mut d = store::doc_from(invoice("RAW-", k, half));
                let name = format!("RAW-SINV-{k:07}");
                std_cols(&mut d, name.clone());
                store::insert_row(&mut tx, &inv_dt, &d).await?;
                for (r, row) in d["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    let mut row = store::doc_from(row);
                    // Named as the REST path names them (`hash`), so the floor writes the same
                    // rows, index order included.
                    std_cols(&mut row, crate::service::naming::hash_name());
                    row.insert("parent".into(), name.clone().into());
                    row.insert("parentfield".into(), "items".into());
                    row.insert("parenttype".into(), "Sales Invoice".into());
                    row.insert("idx".into(), (r + 1).into());
                    store::insert_row(&mut tx, &row_dt, &row).await?;
                }
            }
        }
        tx.commit().await?;
        i += 1000;
        crate::progress::report("raw_insert", i.min(n) as u64, Some(n as u64));
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn serve(data_dir: &Path, port: u16) -> Result<Child> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("cannot find own binary: {e}")))?;
    Command::new(exe)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot start serve: {e}")))
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(format!("{url}/health"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Internal(format!("{url} did not start")))
}

async fn start_served(site: &Site, port: u16, client: &reqwest::Client) -> Result<Served> {
    let (key, secret) = site
        .generate_keys(&Caller::administrator(), "Administrator")
        .await?;
    let data_dir = site.dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let child = serve(&data_dir, port)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(client, &url).await?;
    Ok(Served {
        child,
        url,
        auth: format!("token {key}:{secret}"),
    })
}

/// Creates documents `range` of the `n` over REST (Items first, then Sales Invoices); returns
/// the time it took and the created names.
async fn rest_inserts(
    client: &reqwest::Client,
    s: &Served,
    prefix: &str,
    n: usize,
    range: std::ops::Range<usize>,
) -> Result<(Duration, Vec<String>)> {
    let half = n / 2;
    let started = Instant::now();
    let mut names = Vec::with_capacity(range.len());
    for j in range {
        let (doctype, body) = if j < half {
            ("Item", item(prefix, j))
        } else {
            ("Sales Invoice", invoice(prefix, j - half, half))
        };
        let r = client
            .post(format!("{}/api/resource/{doctype}", s.url))
            .header("authorization", &s.auth)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Internal(format!("insert failed: {e}")))?;
        if !r.status().is_success() {
            let t = r.text().await.unwrap_or_default();
            return Err(Error::Internal(format!("insert {doctype} failed: {t}")));
        }
        let v: Value = r.json().await.map_err(|e| Error::Internal(e.to_string()))?;
        names.push(format!(
            "{doctype}/{}",
            v["data"]["name"].as_str().unwrap_or_default()
        ));
    }
    Ok((started.elapsed(), names))
}

async fn rest_gets(client: &reqwest::Client, s: &Served, names: &[String]) -> Result<f64> {
    let started = Instant::now();
    for (i, n) in names.iter().enumerate() {
        let r = client
            .get(format!("{}/api/resource/{n}", s.url))
            .header("authorization", &s.auth)
            .send()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !r.status().is_success() {
            return Err(Error::Internal(format!("get {n} failed: {}", r.status())));
        }
        let _ = r.bytes().await;
        if i % 500 == 0 {
            crate::progress::report("rest_get", i as u64, Some(names.len() as u64));
        }
    }
    crate::progress::finish("rest_get", "done");
    Ok(names.len() as f64 / started.elapsed().as_secs_f64())
}

/// An idle consumer endpoint: answers every notification with 200 and never pulls.
async fn idle_consumer_sink() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Internal(format!("no sink port: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({"message": null})) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// Adds `count` approved Event Consumers subscribed to Item and Sales Invoice (idle: nobody pulls).
async fn add_consumers(site: &Site, sink: &str, from: usize, count: usize) -> Result<()> {
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: true,
        ..Default::default()
    };
    for i in from..from + count {
        let doc = json!({"name": format!("{sink}/consumer-{i}"), "callback_url": format!("{sink}/consumer-{i}"), "user": "Administrator", "api_key": "bench", "api_secret": "bench",
            "consumer_doctypes": [{"ref_doctype": "Item", "status": "Approved", "sync_existing": 0}, {"ref_doctype": "Sales Invoice", "status": "Approved", "sync_existing": 0}]});
        site.insert_doc(&admin, "Event Consumer", store::doc_from(doc), &flags)
            .await?;
    }
    Ok(())
}

/// Runs the benchmark and prints a table (and JSON to `json`).
pub async fn run(
    docs: usize,
    json_out: Option<&Path>,
    db: Option<&str>,
    only: Option<&str>,
) -> Result<()> {
    let docs = docs.max(2);
    let only = Only::parse(only)?;
    let tmp = std::env::temp_dir().join(format!("docstream-bench-{}", std::process::id()));
    let result = run_in(&tmp, docs, db, &only).await;
    let _ = std::fs::remove_dir_all(&tmp);
    let report = result?;
    print_table(&report);
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| Error::Validation(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(())
}

/// The groups of measures `--only` may name, in the order they run.
const GROUPS: [&str; 8] = [
    "stream",
    "verify",
    "wire",
    "waiting_pulls",
    "concurrent_write",
    "fanout",
    "fanin",
    "multi_process",
];

/// The groups a run takes (`--only`, else all).
struct Only(Vec<String>);

impl Only {
    fn parse(only: Option<&str>) -> Result<Only> {
        let Some(list) = only else {
            return Ok(Only(GROUPS.iter().map(|g| g.to_string()).collect()));
        };
        let picked: Vec<String> = list.split(',').map(|g| g.trim().to_string()).collect();
        if let Some(bad) = picked.iter().find(|g| !GROUPS.contains(&g.as_str())) {
            return Err(Error::Validation(format!(
                "--only: unknown measure group {bad:?}; the groups are {}",
                GROUPS.join(", ")
            )));
        }
        Ok(Only(picked))
    }

    fn has(&self, group: &str) -> bool {
        self.0.iter().any(|g| g == group)
    }
}

async fn run_in(tmp: &Path, docs: usize, db: Option<&str>, only: &Only) -> Result<Report> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut report = Report {
        docs,
        sqlite_synchronous: "NORMAL".into(),
        ..Default::default()
    };
    if only.has("stream") {
        core_measures(tmp, docs, &client, &mut report).await?;
    }
    if only.has("verify") {
        eprintln!("== verify");
        verify::run(tmp, docs, &client, &mut report).await?;
    }
    if only.has("wire") {
        eprintln!("== wire");
        wire::run(tmp, docs, &client, &mut report).await?;
    }
    if only.has("waiting_pulls") {
        eprintln!("== waiting_pulls");
        long_poll::waiting_pulls(tmp, &mut report).await?;
    }
    if only.has("concurrent_write") {
        eprintln!("== concurrent_write");
        concurrent_write::run(tmp, db, &mut report).await?;
    }
    if only.has("fanout") {
        eprintln!("== fanout");
        fanout::run(tmp, docs, &mut report).await?;
    }
    if only.has("fanin") {
        eprintln!("== fanin");
        fanin::run(tmp, docs, &mut report).await?;
    }
    if only.has("multi_process") {
        eprintln!("== multi_process");
        match db {
            Some(url) => multi_process::run(tmp, url, &mut report).await?,
            None => {
                eprintln!("multi_process: skipped (give --db postgres://user@host/db to run it)")
            }
        }
    }
    Ok(report)
}

/// raw_insert, producer_write, rest_get and the stream measures.
async fn core_measures(
    tmp: &Path,
    docs: usize,
    client: &reqwest::Client,
    report: &mut Report,
) -> Result<()> {
    eprintln!("== raw_insert");
    // One pass lasts under a second at 10,000 documents, where this VM's speed swings by a
    // quarter: the floor is the median of three passes, each into a fresh site.
    let mut passes = Vec::new();
    for pass in 0..RAW_INSERT_PASSES {
        let name = format!("raw{pass}");
        let raw_site = make_site(&tmp.join(&name), &name, free_port()?).await?;
        seed_masters(&raw_site).await?;
        passes.push(raw_insert(&raw_site, docs).await?);
        raw_site.store.close().await;
    }
    report
        .extra
        .insert("raw_insert_passes_per_s".into(), json!(passes));
    passes.sort_by(f64::total_cmp);
    report.raw_insert_per_s = passes[passes.len() / 2];
    crate::progress::finish("raw_insert", "done");

    // One producer per setting, written in turns of PRODUCER_WRITE_TURN documents each, so the
    // three rates see the same moments of the machine (its speed drifts) and the same table
    // sizes; the cost of logging is their difference.
    let sink = idle_consumer_sink().await?;
    let mut producers = Vec::new();
    for (label, consumers) in [("off", 0), ("1", 1), ("10", 10)] {
        let port = free_port()?;
        let name = format!("producer-{label}");
        let site = make_site(&tmp.join(&name), &name, port).await?;
        seed_masters(&site).await?;
        add_consumers(&site, &sink, 0, consumers).await?;
        let served = start_served(&site, port, client).await?;
        producers.push(ProducerRun {
            label,
            site,
            served,
            took: Duration::ZERO,
            cpu_s: 0.0,
            names: Vec::new(),
        });
    }
    let mut from = 0;
    while from < docs {
        let to = (from + PRODUCER_WRITE_TURN).min(docs);
        for p in producers.iter_mut() {
            let pid = p.served.child.id();
            let cpu_before = cpu_seconds(pid);
            let prefix = format!("W{}-", p.label);
            let (t, mut n) = rest_inserts(client, &p.served, &prefix, docs, from..to).await?;
            p.cpu_s += cpu_seconds(pid) - cpu_before;
            p.took += t;
            p.names.append(&mut n);
        }
        from = to;
        crate::progress::report("producer_write", from as u64, Some(docs as u64));
    }
    crate::progress::finish("producer_write", "done");
    // The server's CPU per document is steadier than its rate: it leaves out the client and
    // the machine's other work.
    let mut cpu_us = serde_json::Map::new();
    for p in &producers {
        report.producer_write_per_s.insert(
            p.label.to_string(),
            json!(docs as f64 / p.took.as_secs_f64()),
        );
        cpu_us.insert(p.label.to_string(), json!(p.cpu_s * 1e6 / docs as f64));
    }
    report
        .extra
        .insert("producer_cpu_us_per_doc".into(), Value::Object(cpu_us));
    let gets = rest_gets(client, &producers[0].served, &producers[0].names).await?;
    report.extra.insert("rest_get_per_s".into(), json!(gets));
    let off = report.producer_write_per_s["off"].as_f64().unwrap_or(1.0);
    for k in ["1", "10"] {
        let on = report.producer_write_per_s[k].as_f64().unwrap_or(0.0);
        report.extra.insert(
            format!("update_log_cost_pct_{k}"),
            json!((1.0 - on / off) * 100.0),
        );
    }
    for p in producers {
        drop(p.served);
        p.site.store.close().await;
    }
    stream_measures(tmp, docs, client, report).await
}

/// Writes documents in-process, 1,000 per transaction (fast set-up of a backlog).
async fn write_backlog(site: &Site, prefix: &str, n: usize) -> Result<()> {
    write_range(site, prefix, n, 0..n).await
}

/// Writes the documents `range` of the `n` benchmark documents (`0..n / 2`: the Items).
async fn write_range(
    site: &Site,
    prefix: &str,
    n: usize,
    range: std::ops::Range<usize>,
) -> Result<()> {
    let upto = range.end;
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        ..Default::default()
    };
    let reg = site.meta();
    let (item_dt, inv_dt) = (reg.get("Item")?, reg.get("Sales Invoice")?);
    let half = n / 2;
    let mut i = range.start;
    while i < upto {
        let mut tx = site.store.begin().await?;
        for j in i..(i + 1000).min(upto) {
            if j < half {
                documents::insert_in(
                    &Write {
                        site,
                        reg: &reg,
                        caller: &admin,
                        dt: &item_dt,
                    },
                    &mut tx,
                    store::doc_from(item(prefix, j)),
                    &flags,
                )
                .await?;
            } else {
                documents::insert_in(
                    &Write {
                        site,
                        reg: &reg,
                        caller: &admin,
                        dt: &inv_dt,
                    },
                    &mut tx,
                    store::doc_from(invoice(prefix, j - half, half)),
                    &flags,
                )
                .await?;
            }
        }
        tx.commit().await?;
        i += 1000;
        crate::progress::report("backlog", i.min(upto) as u64, Some(upto as u64));
    }
    Ok(())
}

/// Writes `n` updates of existing Items in-process, 1,000 per transaction.
async fn write_update_backlog(site: &Site, prefix: &str, items: usize, n: usize) -> Result<()> {
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        ..Default::default()
    };
    let reg = site.meta();
    let item_dt = reg.get("Item")?;
    let mut i = 0;
    while i < n {
        let mut tx = site.store.begin().await?;
        for j in i..(i + 1000).min(n) {
            let name = format!("{prefix}ITEM-{:07}", j % items.max(1));
            documents::update_in(
                &Write {
                    site,
                    reg: &reg,
                    caller: &admin,
                    dt: &item_dt,
                },
                &mut tx,
                &name,
                store::doc_from(json!({"standard_rate": j as f64 + 0.25})),
                &flags,
            )
            .await?;
        }
        tx.commit().await?;
        i += 1000;
        crate::progress::report("update backlog", i.min(n) as u64, Some(n as u64));
    }
    Ok(())
}

async fn current_seq(site: &Site) -> Result<i64> {
    let mut conn = site.store.conn().await?;
    crate::streaming::update_log::current_seq(&mut conn).await
}

async fn consumer_checkpoint(site: &Site, producer_url: &str) -> Result<i64> {
    Ok(crate::streaming::consumer::checkpoint(site, producer_url)
        .await?
        .0
        .unwrap_or(0))
}

/// CPU time (user + system) a process has used so far, in seconds (Linux's fixed 100 ticks/s).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A memory figure of a process's `/proc/PID/status` (`VmHWM`, `VmRSS`) in MB.
fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident memory (VmHWM) of a process in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM")
}

/// Waits until the consumer's checkpoint reaches `target`; returns the seconds it took.
async fn wait_caught_up(
    consumer: &Site,
    producer_url: &str,
    target: i64,
    label: &str,
) -> Result<f64> {
    let started = Instant::now();
    loop {
        let at = consumer_checkpoint(consumer, producer_url).await?;
        crate::progress::report(label, at.max(0) as u64, Some(target.max(0) as u64));
        if at >= target {
            crate::progress::finish(label, "done");
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(Error::Internal(format!(
                "{label}: consumer stuck at {at} of {target}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// stream_apply, latency and catch_up_memory between a producer and a consumer process.
async fn stream_measures(
    tmp: &Path,
    docs: usize,
    client: &reqwest::Client,
    report: &mut Report,
) -> Result<()> {
    let (pport, cport) = (free_port()?, free_port()?);
    let producer = make_site(&tmp.join("sp"), "sp", pport).await?.into_arc();
    let consumer = make_site(&tmp.join("sc"), "sc", cport).await?.into_arc();
    seed_masters(&producer).await?;
    seed_masters(&consumer).await?;
    // The phases below measure push and backlogs as before long polls; latency_longpoll
    // turns them on for its own run.
    set_setting(&consumer, "pull_wait_seconds", json!(0))?;
    let p = start_served(&producer, pport, client).await?;
    let mut c = start_served(&consumer, cport, client).await?;
    let admin = Caller::administrator();
    subscribe(&consumer, &p, &["Item", "Sales Invoice", "ToDo"]).await?;
    approve_all(&producer, &c.url).await?;

    // stream_apply: N documents written while the consumer is stopped.
    drop(c);
    write_backlog(&producer, "S-", docs).await?;
    let target = current_seq(&producer).await?;
    let data_dir = consumer
        .dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let child = serve(&data_dir, cport)?;
    c = Served {
        child,
        url: format!("http://127.0.0.1:{cport}"),
        auth: String::new(),
    };
    let took = wait_caught_up(&consumer, &p.url, target, "stream_apply").await?;
    report.stream_apply_per_s = docs as f64 / took;
    report.extra.insert(
        "stream_apply_pct_of_raw".into(),
        json!(100.0 * report.stream_apply_per_s / report.raw_insert_per_s.max(1.0)),
    );

    // latency: single updates at 50/s for 20 s with push on.
    let todo = producer
        .insert_doc(
            &admin,
            "ToDo",
            store::doc_from(json!({"description": "latency probe"})),
            &WriteFlags::default(),
        )
        .await?;
    let todo_name = todo["name"].as_str().unwrap_or_default().to_string();
    wait_caught_up(
        &consumer,
        &p.url,
        current_seq(&producer).await?,
        "latency warm-up",
    )
    .await?;
    let run = LatencyRun {
        client,
        p: &p,
        producer: &producer,
        consumer: &consumer,
        todo: &todo_name,
    };
    let lat = run.measure("latency").await?;
    report.latency_ms.insert("p50".into(), json!(lat.p50));
    report.latency_ms.insert("p99".into(), json!(lat.p99));
    report
        .extra
        .insert("latency_samples".into(), json!(lat.samples));

    // latency_longpoll: the same, with the consumer where the producer cannot reach it.
    drop(c);
    let lat = long_poll::latency(&run, &data_dir).await?;
    report
        .extra
        .insert("latency_longpoll_ms".into(), json!(lat));

    // catch_up_memory: 10 x N pending updates, consumer stopped, then measured while it catches up.
    write_update_backlog(&producer, "S-", docs / 2, docs * 10).await?;
    let target = current_seq(&producer).await?;
    let child = serve(&data_dir, cport)?;
    let pid = child.id();
    let c = Served {
        child,
        url: format!("http://127.0.0.1:{cport}"),
        auth: String::new(),
    };
    let took = wait_caught_up(&consumer, &p.url, target, "catch_up").await?;
    report.catch_up_peak_rss_mb = peak_rss_mb(pid);
    report
        .extra
        .insert("catch_up_updates".into(), json!(docs * 10));
    report
        .extra
        .insert("catch_up_per_s".into(), json!((docs * 10) as f64 / took));
    drop(c);

    // stream_apply with every dependency missing: a fresh consumer without any master data
    // receives N/2 Sales Invoices; their Customer, Items, Item Groups and UOM come along.
    let dport = free_port()?;
    let bare = make_site(&tmp.join("sd"), "sd", dport).await?.into_arc();
    let d = start_served(&bare, dport, client).await?;
    subscribe(&bare, &p, &["Sales Invoice"]).await?;
    approve_all(&producer, &d.url).await?;
    drop(d);
    let invoices = (docs / 2).max(1);
    let inv_dt = producer.meta().get("Sales Invoice")?;
    let mut i = 0;
    while i < invoices {
        let reg = producer.meta();
        let mut tx = producer.store.begin().await?;
        for j in i..(i + 1000).min(invoices) {
            let flags = WriteFlags {
                ignore_permissions: true,
                ..Default::default()
            };
            documents::insert_in(
                &Write {
                    site: &producer,
                    reg: &reg,
                    caller: &admin,
                    dt: &inv_dt,
                },
                &mut tx,
                store::doc_from(invoice("S-", j, docs / 2)),
                &flags,
            )
            .await?;
        }
        tx.commit().await?;
        i += 1000;
        crate::progress::report(
            "invoice backlog",
            i.min(invoices) as u64,
            Some(invoices as u64),
        );
    }
    let target = current_seq(&producer).await?;
    let bare_dir = bare.dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let child = serve(&bare_dir, dport)?;
    let d = Served {
        child,
        url: format!("http://127.0.0.1:{dport}"),
        auth: String::new(),
    };
    let took = wait_caught_up(&bare, &p.url, target, "stream_apply_missing_deps").await?;
    report
        .extra
        .insert("stream_apply_missing_deps_invoices".into(), json!(invoices));
    report.extra.insert(
        "stream_apply_missing_deps_per_s".into(),
        json!(invoices as f64 / took),
    );
    let mut bc = bare.store.conn().await?;
    let counts = store::fetch_docs(
        &mut bc,
        r#"SELECT (SELECT COUNT(*) FROM "tabEvent Sync Log" WHERE status = 'Failed') AS failed, (SELECT COUNT(*) FROM "tabSales Invoice") AS invoices, (SELECT COUNT(*) FROM "tabItem") AS items"#,
        &[],
    )
    .await?;
    drop(bc);
    let get = |k: &str| {
        counts
            .first()
            .and_then(|r| r.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    report
        .extra
        .insert("stream_apply_missing_deps_failed".into(), get("failed"));
    report.extra.insert(
        "stream_apply_missing_deps_items_fetched".into(),
        get("items"),
    );
    if get("failed").as_i64().unwrap_or(0) > 0 || get("invoices").as_i64() != Some(invoices as i64)
    {
        return Err(Error::Internal(format!(
            "dependency run incomplete: {} invoices applied of {invoices}, {} failed",
            get("invoices"),
            get("failed")
        )));
    }
    drop(d);
    drop(p);
    Ok(())
}

/// Writes one `site_config.json` setting of a site (read when its `serve` starts).
fn set_setting(site: &Site, key: &str, value: Value) -> Result<()> {
    let path = site.dir.join("site_config.json");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?,
    )?;
    config[key] = value;
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Percentiles of a latency run, in milliseconds.
#[derive(Debug, serde::Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    samples: usize,
}

/// Single updates of one ToDo at 50/s for 20 s, each timed from producer commit to consumer
/// commit.
struct LatencyRun<'a> {
    client: &'a reqwest::Client,
    p: &'a Served,
    producer: &'a Site,
    consumer: &'a Site,
    todo: &'a str,
}

impl LatencyRun<'_> {
    async fn measure(&self, label: &str) -> Result<Latency> {
        let (p, producer, consumer) = (self.p, self.producer, self.consumer);
        let first_seq = current_seq(producer).await? + 1;
        let updates = 1000;
        let tick = Duration::from_millis(20);
        let t0 = Instant::now();
        for k in 0..updates {
            let r = self
                .client
                .put(format!("{}/api/resource/ToDo/{}", p.url, self.todo))
                .header("authorization", &p.auth)
                .json(&json!({"description": format!("{label} update {k}")}))
                .send()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            let _ = r.bytes().await;
            let next = tick * (k + 1);
            if let Some(rest) = next.checked_sub(t0.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            if k % 50 == 0 {
                crate::progress::report(label, k as u64, Some(updates as u64));
            }
        }
        let last_seq = current_seq(producer).await?;
        wait_caught_up(consumer, &p.url, last_seq, &format!("{label} drain")).await?;
        let mut lat = latencies(producer, consumer, first_seq, last_seq).await?;
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| {
            lat.get(
                ((lat.len() as f64 * q).ceil() as usize)
                    .saturating_sub(1)
                    .min(lat.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(f64::NAN)
        };
        Ok(Latency {
            p50: pct(0.50),
            p99: pct(0.99),
            samples: lat.len(),
        })
    }
}

/// Milliseconds from each producer log's creation to the consumer's sync log of that seq.
async fn latencies(producer: &Site, consumer: &Site, from: i64, to: i64) -> Result<Vec<f64>> {
    let parse =
        |s: &str| chrono::NaiveDateTime::parse_from_str(s, crate::time::DATETIME_FORMAT).ok();
    let mut pc = producer.store.conn().await?;
    let plogs = store::fetch_docs(
        &mut pc,
        r#"SELECT seq, creation FROM "tabEvent Update Log" WHERE seq >= $1 AND seq <= $2"#,
        &[store::Param::Int(Some(from)), store::Param::Int(Some(to))],
    )
    .await?;
    let mut cc = consumer.store.conn().await?;
    let slogs = store::fetch_docs(
        &mut cc,
        r#"SELECT seq, creation FROM "tabEvent Sync Log" WHERE seq >= $1 AND seq <= $2"#,
        &[store::Param::Int(Some(from)), store::Param::Int(Some(to))],
    )
    .await?;
    let applied: std::collections::HashMap<i64, String> = slogs
        .iter()
        .filter_map(|r| {
            Some((
                r.get("seq")?.as_i64()?,
                r.get("creation")?.as_str()?.to_string(),
            ))
        })
        .collect();
    Ok(plogs
        .iter()
        .filter_map(|r| {
            let seq = r.get("seq")?.as_i64()?;
            let made = parse(r.get("creation")?.as_str()?)?;
            let got = parse(applied.get(&seq)?)?;
            Some((got - made).num_microseconds()? as f64 / 1000.0)
        })
        .collect())
}

fn print_table(r: &Report) {
    let f = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .map(|x| format!("{x:>12.0}"))
            .unwrap_or_else(|| format!("{:>12}", "-"))
    };
    let mut out = String::new();
    out.push_str(&format!("\ndocstream bench: {} documents (N/2 Items, N/2 Sales Invoices x {ROWS_PER_INVOICE} rows), SQLite WAL synchronous={}\n", r.docs, r.sqlite_synchronous));
    out.push_str(&format!("{:<40}{:>12}\n", "measure", "docs/s"));
    let extra = |k: &str| r.extra.get(k);
    let raw = json!(r.raw_insert_per_s);
    let apply = json!(r.stream_apply_per_s);
    for (label, v) in [
        ("raw_insert (batched, 1000/tx, median)", Some(&raw)),
        (
            "producer_write, streaming off",
            r.producer_write_per_s.get("off"),
        ),
        (
            "producer_write, 1 consumer",
            r.producer_write_per_s.get("1"),
        ),
        (
            "producer_write, 10 consumers",
            r.producer_write_per_s.get("10"),
        ),
        ("rest_get (GET /api/resource)", extra("rest_get_per_s")),
        ("stream_apply", Some(&apply)),
        ("catch_up (updates/s)", extra("catch_up_per_s")),
        (
            "stream_apply, dependencies missing",
            extra("stream_apply_missing_deps_per_s"),
        ),
    ] {
        out.push_str(&format!("{label:<40}{}\n", f(v)));
    }
    let ms = |k: &str| {
        r.latency_ms
            .get(k)
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    out.push_str(&format!(
        "{:<40}{:>10.1} ms\n",
        "latency p50 (push on, 50 updates/s)",
        ms("p50")
    ));
    out.push_str(&format!("{:<40}{:>10.1} ms\n", "latency p99", ms("p99")));
    let sub = |k: &str, f: &str| {
        extra(k)
            .and_then(|m| m.get(f))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    for q in ["p50", "p99"] {
        let label = format!("latency_longpoll {q} (no push)");
        let v = sub("latency_longpoll_ms", q);
        out.push_str(&format!("{label:<40}{v:>10.1} ms\n"));
    }
    if let Some(fo) = extra("fanout") {
        let n = fo.get("consumers").and_then(Value::as_u64).unwrap_or(0);
        let g = |k: &str| fo.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        for (label, v, unit) in [
            (
                format!("fanout p50, last of {n} consumers"),
                g("p50_ms_to_last_consumer"),
                "ms",
            ),
            (
                format!("fanout p99, last of {n} consumers"),
                g("p99_ms_to_last_consumer"),
                "ms",
            ),
            (
                "fanout p99, 1 consumer".to_string(),
                g("p99_ms_one_consumer"),
                "ms",
            ),
            (
                format!("fanout write request CPU, {n}"),
                g("producer_cpu_us_per_write"),
                "us",
            ),
            (
                "fanout write request CPU, 1".to_string(),
                g("producer_cpu_us_per_write_one_consumer"),
                "us",
            ),
            (
                format!("fanout producer process CPU/write, {n}"),
                g("producer_process_cpu_us_per_write"),
                "us",
            ),
            (
                "fanout producer process CPU/write, 1".to_string(),
                g("producer_process_cpu_us_per_write_one_consumer"),
                "us",
            ),
            (
                "fanout producer CPU/delivered log".to_string(),
                g("producer_cpu_us_per_delivered_log"),
                "us",
            ),
            (
                format!("fanout consumers' CPU/delivered log, {n}"),
                g("consumer_cpu_us_per_delivered_log"),
                "us",
            ),
            (
                "fanout consumer's CPU/delivered log, 1".to_string(),
                g("consumer_cpu_us_per_delivered_log_one_consumer"),
                "us",
            ),
        ] {
            out.push_str(&format!("{label:<40}{v:>10.1} {unit}\n"));
        }
    }
    if let Some(v) = extra("verify") {
        let g = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let n = g("documents");
        out.push_str(&format!(
            "{:<40}{:>10.2} s\n",
            format!("verify, {n:.0} documents in step"),
            g("in_step_seconds")
        ));
        out.push_str(&format!(
            "{:<40}{:>7.1} KB up, {:.1} KB down\n",
            "verify in step, on the wire",
            g("in_step_bytes_sent") / 1024.0,
            g("in_step_bytes_received") / 1024.0
        ));
        out.push_str(&format!(
            "{:<40}{:>10.2} s\n",
            "verify in step, producer CPU",
            g("in_step_producer_cpu_seconds")
        ));
        out.push_str(&format!(
            "{:<40}{:>10.2} s\n",
            "verify, find and repair 10",
            g("ten_differences_found_and_repaired_seconds")
        ));
    }
    if let Some(w) = extra("wire") {
        let g = |k: &str| w.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        for (label, key) in [
            (
                "wire per 1,000 invoices, plain",
                "bytes_per_1000_invoices_plain",
            ),
            (
                "wire per 1,000 invoices, gzip",
                "bytes_per_1000_invoices_gzip",
            ),
            (
                "wire per 1,000 invoices, zstd",
                "bytes_per_1000_invoices_zstd",
            ),
        ] {
            out.push_str(&format!("{label:<40}{:>10.1} KB\n", g(key) / 1024.0));
        }
        out.push_str(&format!(
            "{:<40}{:>10.1}x\n",
            "wire, zstd smaller by",
            g("bytes_per_1000_invoices_plain") / g("bytes_per_1000_invoices_zstd")
        ));
        out.push_str(&format!(
            "{:<40}{:>10.1} s\n",
            format!(
                "slow link, {} invoices (256 kbit/s, 300 ms)",
                g("slow_link_invoices")
            ),
            g("slow_link_seconds")
        ));
        out.push_str(&format!(
            "{:<40}{:>10.1} KB\n",
            "slow link, bytes down",
            g("slow_link_bytes_down") / 1024.0
        ));
    }
    if let Some(fi) = extra("fanin") {
        let g = |k: &str| fi.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let label = format!("fanin, {} producers (invoices/s)", g("producers"));
        out.push_str(&format!("{label:<40}{:>10.0}\n", g("invoices_per_s")));
        let label = "fanin / stream_apply";
        match g("pct_of_stream_apply") {
            p if p.is_nan() => out.push_str(&format!("{label:<40}{:>10}  (stream not run)\n", "-")),
            p => out.push_str(&format!("{label:<40}{p:>10.1}%\n")),
        }
    }
    if let Some(mp) = extra("multi_process") {
        let g = |k: &str| mp.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let label = "multi_process, 3 pg processes (docs/s)";
        out.push_str(&format!("{label:<40}{:>10.0}\n", g("docs_per_s")));
    }
    if let Some(cw) = extra("concurrent_write") {
        let rate = |path: &[&str]| {
            path.iter()
                .try_fold(cw, |v, k| v.get(*k))
                .and_then(Value::as_f64)
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into())
        };
        for backend in ["sqlite", "postgres"] {
            for (mode, label) in [
                ("off", "streaming off"),
                ("1_consumer", "1 consumer"),
                ("raw_one_row_commit_per_s", "raw 1 row/commit"),
            ] {
                if cw.get(backend).and_then(|b| b.get(mode)).is_none() {
                    continue;
                }
                let short = if backend == "postgres" { "pg" } else { backend };
                let label = format!("concurrent_write {short}, {label}");
                out.push_str(&format!(
                    "{label:<40}{:>8} {:>8} {:>8}  (1/4/16 clients)\n",
                    rate(&[backend, mode, "1"]),
                    rate(&[backend, mode, "4"]),
                    rate(&[backend, mode, "16"])
                ));
            }
        }
    }
    if extra("waiting_pulls").is_some() {
        for (label, f, unit) in [
            ("waiting_pulls: extra RSS, 1000 pulls", "extra_rss_mb", "MB"),
            ("waiting_pulls: CPU while idle", "idle_cpu_ms_per_s", "ms/s"),
            (
                "waiting_pulls: one write answers all",
                "all_answered_ms",
                "ms",
            ),
        ] {
            let v = sub("waiting_pulls", f);
            out.push_str(&format!("{label:<40}{v:>10.1} {unit}\n"));
        }
    }
    out.push_str(&format!(
        "{:<40}{:>10.1} MB\n",
        "catch_up_memory (consumer VmHWM)", r.catch_up_peak_rss_mb
    ));
    for k in ["off", "1", "10"] {
        if let Some(us) = extra("producer_cpu_us_per_doc")
            .and_then(|m| m.get(k))
            .and_then(Value::as_f64)
        {
            let label = format!("producer CPU per document, {k}");
            out.push_str(&format!("{label:<40}{us:>10.0} us\n"));
        }
    }
    let pct = [
        ("stream_apply_pct_of_raw", "stream_apply / raw_insert"),
        ("update_log_cost_pct_1", "update log cost, 1 consumer(s)"),
        ("update_log_cost_pct_10", "update log cost, 10 consumer(s)"),
    ];
    for (key, label) in pct {
        if let Some(c) = extra(key).and_then(Value::as_f64) {
            out.push_str(&format!("{label:<40}{c:>11.1}%\n"));
        }
    }
    println!("{out}");
}
