//! `multi_process`: one PostgreSQL site served by three processes, 16 clients spread over
//! them, and a consumer: docs/s, and whether the consumer ends with exactly the producer's
//! documents.

use super::concurrent_write::Databases;
use super::{
    current_seq, free_port, item, make_site, seed_masters, serve, start_served, wait_caught_up,
    wait_ready, Report, Served,
};
use crate::error::{Error, Result};
use crate::service::documents::WriteFlags;
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
    let (key, secret) = first
        .auth
        .trim_start_matches("token ")
        .split_once(':')
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .unwrap_or_default();
    consumer
        .insert_doc(
            &admin,
            "Event Producer",
            store::doc_from(json!({"producer_url": first.url,
                "producer_doctypes": [{"ref_doctype": "Item", "use_same_name": 1, "sync_existing": 0}],
                "user": "Administrator", "api_key": key, "api_secret": secret})),
            &WriteFlags::default(),
        )
        .await?;
    approve_all(&producer, &consumer.config.url).await?;
    let consumer_served = start_served(&consumer, cport, &client).await?;
    let urls: Vec<String> = std::iter::once(first.url.clone())
        .chain(servers.iter().map(|s| s.url.clone()))
        .collect();
    let deadline = Instant::now() + RUN;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (client, url, auth) = (
            client.clone(),
            urls[c % urls.len()].clone(),
            first.auth.clone(),
        );
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let r = client
                    .post(format!("{url}/api/resource/Item"))
                    .header("authorization", &auth)
                    .json(&item(&format!("MP{c}-"), done as usize))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!(
                        "insert failed: {}",
                        r.text().await.unwrap_or_default()
                    ));
                }
                done += 1;
            }
            Ok(done)
        });
    }
    let mut total = 0u64;
    while let Some(t) = tasks.join_next().await {
        total += t
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::Internal)?;
    }
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
