//! `concurrent_write`: REST inserts from 1, 4 and 16 clients at once, on SQLite and (with
//! `--db`) PostgreSQL, streaming off and with one consumer, next to the store's raw limit.

use super::{add_consumers, free_port, idle_consumer_sink, item, seed_masters, start_served};
use crate::error::{Error, Result};
use crate::service::provisioning;
use crate::store;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long each client count writes.
const RUN: Duration = Duration::from_secs(4);
const CLIENTS: [usize; 3] = [1, 4, 16];

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

/// Databases made for the run, dropped at its end.
pub(super) struct Databases {
    admin: String,
    made: Vec<String>,
}

impl Databases {
    /// None made yet, on the server of `admin` (a database URL).
    pub(super) fn new(admin: &str) -> Databases {
        Databases {
            admin: admin.to_string(),
            made: Vec::new(),
        }
    }

    /// A new empty database; its URL.
    pub(super) async fn make(&mut self) -> Result<String> {
        let name = format!("docstream_bench_{}_{}", std::process::id(), self.made.len());
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            store::postgres_admin_execute(&self.admin, &sql).await?;
        }
        self.made.push(name.clone());
        Ok(with_database(&self.admin, &name))
    }

    /// Drops every database made.
    pub(super) async fn drop_all(&self) {
        for name in &self.made {
            let _ = store::postgres_admin_execute(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
    }
}

/// Runs the measure; PostgreSQL only with `db`.
pub(super) async fn run(tmp: &Path, db: Option<&str>, report: &mut super::Report) -> Result<()> {
    let mut out = Map::new();
    out.insert("sqlite".into(), backend(tmp, None).await?);
    out.insert(
        "sqlite_raw_insert_per_s".into(),
        json!(report.raw_insert_per_s),
    );
    match db {
        Some(url) => {
            let mut dbs = Databases::new(url);
            let result = async {
                let mut pg = backend(tmp, Some(&mut dbs)).await?;
                pg["raw_one_row_commit_per_s"] = raw_one_row(&mut dbs).await?;
                Ok::<_, Error>(pg)
            }
            .await;
            dbs.drop_all().await;
            out.insert("postgres".into(), result?);
        }
        None => eprintln!(
            "concurrent_write: PostgreSQL skipped (give --db postgres://user@host/db to run it)"
        ),
    }
    report
        .extra
        .insert("concurrent_write".into(), Value::Object(out));
    Ok(())
}

/// Docs/s by client count, streaming off and with one consumer.
async fn backend(tmp: &Path, mut dbs: Option<&mut Databases>) -> Result<Value> {
    let sink = idle_consumer_sink().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = Map::new();
    for (label, consumers) in [("off", 0), ("1_consumer", 1)] {
        let db = match dbs.as_deref_mut() {
            Some(d) => Some(d.make().await?),
            None => None,
        };
        let port = free_port()?;
        let name = format!("cw-{}-{label}", if db.is_some() { "pg" } else { "sqlite" });
        let url = format!("http://127.0.0.1:{port}");
        let site = provisioning::new_site(
            &tmp.join(&name),
            &name,
            "bench",
            Some(&url),
            db.as_deref(),
            crate::hooks::install,
        )
        .await?;
        seed_masters(&site).await?;
        add_consumers(&site, &sink, 0, consumers).await?;
        let served = start_served(&site, port, &client).await?;
        let mut rates = Map::new();
        for clients in CLIENTS {
            let started = Instant::now();
            let total = insert_items(
                &client,
                std::slice::from_ref(&served.url),
                &served.auth,
                clients,
                &format!("CW{clients}-"),
                RUN,
            )
            .await?;
            let rate = total as f64 / started.elapsed().as_secs_f64();
            crate::progress::finish(
                &format!("concurrent_write {name} {clients} clients"),
                &format!("{rate:.0}/s"),
            );
            rates.insert(clients.to_string(), json!(rate));
        }
        drop(served);
        site.store.close().await;
        out.insert(label.into(), Value::Object(rates));
    }
    Ok(Value::Object(out))
}

/// `clients` REST clients inserting Items for `run`, client `c` on `urls[c % len]` with names
/// `{prefix}{c}-...`; how many were inserted. A failed insert ends the run with its error.
pub(super) async fn insert_items(
    client: &reqwest::Client,
    urls: &[String],
    auth: &str,
    clients: usize,
    prefix: &str,
    run: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + run;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, url, auth) = (
            client.clone(),
            urls[c % urls.len()].clone(),
            auth.to_string(),
        );
        let prefix = format!("{prefix}{c}-");
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let r = client
                    .post(format!("{url}/api/resource/Item"))
                    .header("authorization", &auth)
                    .json(&item(&prefix, done as usize))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => done += 1,
                    Ok(r) => {
                        return Err(format!(
                            "insert failed: {}",
                            r.text().await.unwrap_or_default()
                        ))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(done)
        });
    }
    let mut total = 0;
    while let Some(t) = tasks.join_next().await {
        total += t
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::Internal)?;
    }
    Ok(total)
}

/// PostgreSQL's limit for this workload's shape: one-row inserts, one commit each, through
/// the store's own driver and pool (a connection from the pool, one statement), by 1, 4 and 16
/// clients at once.
async fn raw_one_row(dbs: &mut Databases) -> Result<Value> {
    let url = dbs.make().await?;
    let db = std::sync::Arc::new(store::Store::open(&url, false).await?);
    store::execute_batch(
        &mut db.conn().await?,
        "CREATE TABLE raw_rows (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
    )
    .await?;
    let mut rates = Map::new();
    for clients in CLIENTS {
        let deadline = Instant::now() + RUN;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let db = db.clone();
            tasks.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let params = [
                        store::Param::Text(Some(format!("{clients}-{c}-{done}"))),
                        store::Param::Text(Some(item("RAW-", done as usize).to_string())),
                    ];
                    store::execute(
                        &mut db.conn().await?,
                        "INSERT INTO raw_rows (name, data) VALUES ($1, $2)",
                        &params,
                    )
                    .await?;
                    done += 1;
                }
                Ok::<_, Error>(done)
            });
        }
        let mut total = 0;
        while let Some(t) = tasks.join_next().await {
            total += t.map_err(|e| Error::Internal(e.to_string()))??;
        }
        rates.insert(
            clients.to_string(),
            json!(total as f64 / started.elapsed().as_secs_f64()),
        );
    }
    db.close().await;
    Ok(Value::Object(rates))
}
