//! `fanin`: many branch sites, each with a backlog of Sales Invoices, into one head office
//! started after them: invoices applied per second across all producers.

use super::{
    consumer_checkpoint, current_seq, free_port, invoice, item, make_site, seed_masters, serve,
    set_setting, start_served, subscribe, Report, Served,
};
use crate::error::{Error, Result};
use crate::service::documents;
use crate::service::documents::WriteFlags;
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store;
use crate::streaming::producer::approve_all;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const INVOICES: usize = 200;
/// Items the invoices name.
const ITEMS: usize = 50;

/// Inserts `docs` of `doctype` in one transaction.
async fn insert_all(
    site: &Site,
    doctype: &str,
    docs: impl Iterator<Item = serde_json::Value>,
) -> Result<()> {
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        ..Default::default()
    };
    let reg = site.meta();
    let dt = reg.get(doctype)?;
    let mut tx = site.store.begin().await?;
    for doc in docs {
        documents::insert_in(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &dt,
            },
            &mut tx,
            store::doc_from(doc),
            &flags,
        )
        .await?;
    }
    tx.commit().await
}

/// Writes the masters and the Items every invoice names (no dependency fetch is measured).
async fn stock(site: &Site) -> Result<()> {
    seed_masters(site).await?;
    insert_all(site, "Item", (0..ITEMS).map(|i| item("F-", i))).await
}

/// The site opened again, to read its changed `site_config.json`.
async fn reopen(site: Site) -> Result<Site> {
    site.store.close().await;
    crate::hooks::open(&site.dir).await
}

/// Runs the measure: 50 branches at `--docs` 10,000 and more (one per 200 documents below,
/// at least 2), 200 invoices each, one `serve` process per branch.
pub(super) async fn run(tmp: &Path, docs: usize, report: &mut Report) -> Result<()> {
    let branches = (docs / INVOICES).clamp(2, 50);
    let client = reqwest::Client::new();
    let admin = Caller::administrator();
    let cport = free_port()?;
    let series_of = |i: usize| format!("B{i:02}-SINV-.#####");
    let head = make_site(&tmp.join("fanin-head"), "head", cport).await?;
    // Each branch names its invoices in a series of its own, as in the tour; the head office
    // accepts them all.
    let mut all_series = vec!["HO-SINV-.#####".to_string()];
    all_series.extend((0..branches).map(series_of));
    set_setting(
        &head,
        "naming_series",
        json!({ "Sales Invoice": all_series }),
    )?;
    let head = reopen(head).await?;
    stock(&head).await?;
    // The user the branches call back as (approval statuses).
    head.generate_keys(&admin, "Administrator").await?;
    let mut served = Vec::with_capacity(branches);
    let mut sites = Vec::with_capacity(branches);
    for i in 0..branches {
        let name = format!("b{i:02}");
        let port = free_port()?;
        let site = make_site(&tmp.join(format!("fanin-{name}")), &name, port).await?;
        set_setting(
            &site,
            "naming_series",
            json!({"Sales Invoice": [series_of(i)]}),
        )?;
        let site = reopen(site).await?;
        stock(&site).await?;
        let b = start_served(&site, port, &client).await?;
        subscribe(&head, &b, &["Sales Invoice"]).await?;
        approve_all(&site, &head.config.url).await?;
        served.push(b);
        sites.push(site);
        crate::progress::report("fanin sites", i as u64 + 1, Some(branches as u64));
    }
    let mut targets = Vec::with_capacity(branches);
    for (i, site) in sites.iter().enumerate() {
        let invoices = (0..INVOICES).map(|i| invoice("F-", i, ITEMS));
        insert_all(site, "Sales Invoice", invoices).await?;
        targets.push((served[i].url.clone(), current_seq(site).await?));
        crate::progress::report("fanin backlog", i as u64 + 1, Some(branches as u64));
    }
    let data_dir = head.dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let started = Instant::now();
    let child = serve(&data_dir, cport)?;
    let _head_served = Served {
        child,
        url: format!("http://127.0.0.1:{cport}"),
        auth: String::new(),
    };
    let total = (branches * INVOICES) as u64;
    loop {
        let mut done = 0u64;
        let mut all = true;
        for (url, target) in &targets {
            let at = consumer_checkpoint(&head, url).await?;
            if at >= *target {
                done += INVOICES as u64;
            } else {
                all = false;
            }
        }
        crate::progress::report("fanin", done, Some(total));
        if all {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(Error::Internal(format!(
                "fanin: stuck at {done} of {total} invoices"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    crate::progress::finish("fanin", "done");
    let synced = {
        let mut conn = head.store.conn().await?;
        store::fetch_docs(
            &mut conn,
            r#"SELECT COUNT(*) AS n FROM "tabSales Invoice""#,
            &[],
        )
        .await?
        .first()
        .and_then(|r| r.get("n"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
    };
    if synced != total {
        return Err(Error::Internal(format!(
            "fanin: the head office holds {synced} invoices, not {total}"
        )));
    }
    let per_s = total as f64 / took;
    report.extra.insert(
        "fanin".into(),
        json!({
            "producers": branches,
            "invoices_per_producer": INVOICES,
            "invoices_per_s": per_s,
            // Without the stream measures in the same run there is nothing to compare with.
            "pct_of_stream_apply": (report.stream_apply_per_s > 0.0)
                .then(|| 100.0 * per_s / report.stream_apply_per_s),
            "seconds": took,
        }),
    );
    drop(served);
    for s in sites {
        s.store.close().await;
    }
    head.store.close().await;
    Ok(())
}
