//! `multi_process`: one PostgreSQL site served by three processes, 16 clients spread over
//! them, and a consumer: docs/s, and whether the consumer ends with exactly the producer's
//! documents.

use super::concurrent_write::{insert_items, Databases};
use super::{
    current_seq, free_port, make_site, seed_masters, serve, start_served, subscribe,
    wait_caught_up, wait_ready, Report, Served,
};
use crate::error::{Error, Result};
use crate::service::permissions::Caller;
use crate::service::provisioning;
use crate::site::Site;
use crate::store;
use crate::streaming::producer::approve_all;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const PROCESSES: usize = 3;
const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(8);

async fn item_names(site: &Site) -> Result<BTreeSet<String>> {
    let mut conn = site.store.conn().await?;
    Ok(
        store::fetch_docs(&mut conn, r#"SELECT name FROM "tabItem""#, &[])
            .await?
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
    )
}

/// Runs the measure on the PostgreSQL server `db`.
pub(super) async fn run(tmp: &Path, db: &str, report: &mut Report) -> Result<()> {
    let mut dbs = Databases::new(db);
    let result = measure(tmp, &mut dbs).await;
    dbs.drop_all().await;
    report.extra.insert("multi_process".into(), result?);
    Ok(())
}

async fn measure(tmp: &Path, dbs: &mut Databases) -> Result<Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let admin = Caller::administrator();
    let url = dbs.make().await?;
    let ports: Vec<u16> = (0..PROCESSES).map(|_| free_port()).collect::<Result<_>>()?;
    let producer = provisioning::new_site(
        &tmp.join("mp-p"),
        "mp-p",
        "bench",
        Some(&format!("http://127.0.0.1:{}", ports[0])),
        Some(&url),
        crate::hooks::install,
    )
    .await?;
    seed_masters(&producer).await?;
    let first = start_served(&producer, ports[0], &client).await?;
    let mut servers: Vec<Served> = Vec::new();
    let folder = producer
        .dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for port in &ports[1..] {
        let served = Served {
            child: serve(&folder, *port)?,
            url: format!("http://127.0.0.1:{port}"),
            auth: first.auth.clone(),
        };
        wait_ready(&client, &served.url).await?;
        servers.push(served);
    }
    let cport = free_port()?;
    let consumer = make_site(&tmp.join("mp-c"), "mp-c", cport).await?;
    seed_masters(&consumer).await?;
    // The user the producer calls back as (approval statuses).
    consumer.generate_keys(&admin, "Administrator").await?;
    subscribe(&consumer, &first, &["Item"]).await?;
    approve_all(&producer, &consumer.config.url).await?;
    let consumer_served = start_served(&consumer, cport, &client).await?;
    let urls: Vec<String> = std::iter::once(first.url.clone())
        .chain(servers.iter().map(|s| s.url.clone()))
        .collect();
    let started = Instant::now();
    let total = insert_items(&client, &urls, &first.auth, CLIENTS, "MP", RUN).await?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    crate::progress::finish("multi_process writes", &format!("{rate:.0}/s"));
    let high = current_seq(&producer).await?;
    let drain = wait_caught_up(&consumer, &first.url, high, "multi_process drain").await?;
    let (want, got) = (item_names(&producer).await?, item_names(&consumer).await?);
    let exact = want == got;
    if !exact {
        return Err(Error::Internal(format!(
            "multi_process: the consumer holds {} Items, the producer {} ({} missing, {} extra)",
            got.len(),
            want.len(),
            want.difference(&got).count(),
            got.difference(&want).count()
        )));
    }
    drop(consumer_served);
    drop(servers);
    drop(first);
    producer.store.close().await;
    consumer.store.close().await;
    Ok(json!({
        "processes": PROCESSES,
        "clients": CLIENTS,
        "docs": total,
        "docs_per_s": rate,
        "consumer_drain_s": drain,
        "consumer_exact": exact,
    }))
}
