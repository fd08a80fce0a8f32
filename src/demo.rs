//! `docstream demo`: two wired sites (head office and a branch) with sample data, served on
//! two ports, as `ho.localhost` and `branch.localhost`, until Ctrl-C.

use crate::api::Sites;
use crate::config::SiteConfig;
use crate::error::{Error, Result};
use crate::server;
use crate::service::documents::WriteFlags;
use crate::service::permissions::Caller;
use crate::service::provisioning;
use crate::site::Site;
use crate::store::doc_from;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

const PASSWORD: &str = "admin";
const SUBSCRIBER: &str = "sync@example.com";

/// A demo site's URL: a host name of its own under `localhost` (a browser keeps one session
/// per host name, so both sites stay logged in side by side; the sites resolve such names to
/// the loopback address themselves).
fn demo_url(name: &str, port: u16) -> String {
    let host = if name == "branch" { "branch" } else { "ho" };
    format!("http://{host}.localhost:{port}")
}

async fn open_or_create(dir: &Path, name: &str, port: u16) -> Result<(Arc<Site>, bool)> {
    let url = demo_url(name, port);
    if dir.join(name).join("site_config.json").is_file() {
        return Ok((crate::hooks::open(&dir.join(name)).await?.into_arc(), false));
    }
    let site = provisioning::new_site(dir, name, PASSWORD, Some(&url), None, crate::hooks::install)
        .await?;
    site.store.close().await;
    drop(site);
    // Each site names its invoices in a series of its own, as companies of one group do: the
    // head office receives the branch's invoices under their names and mints its own apart.
    let path = dir.join(name).join("site_config.json");
    let mut config = SiteConfig::load(&path)?;
    let own = if name == "branch" {
        "BR-SINV-.YYYY.-"
    } else {
        "HO-SINV-.YYYY.-"
    };
    let mut series = vec![own.to_string()];
    if name != "branch" {
        series.push("BR-SINV-.YYYY.-".into());
    }
    config.naming_series.insert("Sales Invoice".into(), series);
    config.save(&path)?;
    Ok((crate::hooks::open(&dir.join(name)).await?.into_arc(), true))
}

/// Creates the Event Subscriber with API keys; returns (key, secret).
async fn subscriber(site: &Site) -> Result<(String, String)> {
    let admin = Caller::administrator();
    site.insert_doc(&admin, "User", doc_from(json!({"email": SUBSCRIBER, "first_name": "Sync", "roles": [{"role": "System Manager"}], "new_password": PASSWORD})), &WriteFlags::default()).await?;
    site.generate_keys(&admin, SUBSCRIBER).await
}

async fn sample_data(site: &Site) -> Result<()> {
    let admin = Caller::administrator();
    let f = WriteFlags::default();
    site.insert_doc(&admin, "UOM", doc_from(json!({"uom_name": "Nos"})), &f)
        .await?;
    for g in ["Products", "Services"] {
        site.insert_doc(
            &admin,
            "Item Group",
            doc_from(json!({"item_group_name": g})),
            &f,
        )
        .await?;
    }
    for (code, name, group, rate) in [
        ("WIDGET", "Widget", "Products", 12.5),
        ("GADGET", "Gadget", "Products", 30.0),
        ("SETUP", "Installation", "Services", 80.0),
    ] {
        site.insert_doc(&admin, "Item", doc_from(json!({"item_code": code, "item_name": name, "item_group": group, "stock_uom": "Nos", "standard_rate": rate})), &f).await?;
    }
    for c in ["Acme Corp", "Globex"] {
        site.insert_doc(
            &admin,
            "Customer",
            doc_from(json!({"customer_name": c, "customer_type": "Company"})),
            &f,
        )
        .await?;
    }
    site.insert_doc(
        &admin,
        "Supplier",
        doc_from(json!({"supplier_name": "Initech"})),
        &f,
    )
    .await?;
    Ok(())
}

/// Subscribes `consumer` to `types` of `producer` and approves them on the producer.
async fn wire(
    producer: &Site,
    consumer: &Site,
    keys_on_producer: &(String, String),
    types: &[&str],
) -> Result<()> {
    let admin = Caller::administrator();
    let rows: Vec<Value> = types
        .iter()
        .map(|t| json!({"ref_doctype": t, "use_same_name": 1, "sync_existing": 1}))
        .collect();
    consumer
        .insert_doc(&admin, "Event Producer", doc_from(json!({"producer_url": producer.config.url, "producer_doctypes": rows, "user": SUBSCRIBER, "api_key": keys_on_producer.0, "api_secret": keys_on_producer.1})), &WriteFlags::default())
        .await?;
    crate::streaming::producer::approve_all(producer, &consumer.config.url).await
}

/// Runs the demo until Ctrl-C.
pub async fn run(dir: &Path, port: u16) -> Result<()> {
    let (head, new_head) = open_or_create(dir, "head-office", port).await?;
    let (branch, new_branch) = open_or_create(dir, "branch", port + 1).await?;
    let mut servers = Vec::new();
    for (site, p) in [(&head, port), (&branch, port + 1)] {
        let listener = server::bind(&format!("127.0.0.1:{p}"))?;
        let sites = Arc::new(Sites::from_sites(vec![site.clone()]));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        servers.push((
            tokio::spawn(server::serve(sites, listener, None, async {
                let _ = rx.await;
            })),
            tx,
        ));
    }
    if new_head && new_branch {
        eprintln!("Setting up: users, keys, sample data, subscriptions...");
        let head_keys = subscriber(&head).await?;
        let branch_keys = subscriber(&branch).await?;
        sample_data(&head).await?;
        wire(
            &head,
            &branch,
            &head_keys,
            &["UOM", "Item Group", "Item", "Customer", "Supplier"],
        )
        .await?;
        wire(&branch, &head, &branch_keys, &["Sales Invoice"]).await?;
        let admin = Caller::administrator();
        crate::streaming::consumer::pull(&branch, &head.config.url).await?;
        branch
            .insert_doc(
                &admin,
                "Sales Invoice",
                doc_from(
                    json!({"customer": "Acme Corp", "items": [{"item_code": "WIDGET", "qty": 4}]}),
                ),
                &WriteFlags::default(),
            )
            .await?;
    } else if new_head != new_branch {
        return Err(Error::Validation(format!(
            "{} holds only one of the demo sites: remove it or use another --data-dir",
            dir.display()
        )));
    }
    println!("docstream demo is running (Ctrl-C stops it)\n");
    println!(
        "  head office (producer of Items, Customers, Suppliers): {}",
        head.config.url
    );
    println!(
        "  branch      (producer of Sales Invoices):              {}",
        branch.config.url
    );
    println!(
        "\n  web desk: {}/app and {}/app (streaming dashboard: /app/streaming-dashboard)",
        head.config.url, branch.config.url
    );
    println!("  log in on either as Administrator / {PASSWORD} (REST API under /api)");
    println!("  each site has a host name of its own, so a browser keeps both sessions at once");
    println!("  the Event Subscriber on both is {SUBSCRIBER} / {PASSWORD}");
    println!("  try it: create an Item on the head office, and watch the branch log it here:\n");
    println!(
        "    curl -s -c /tmp/ho-cookies {h}/api/method/login -H 'content-type: application/json' -d '{{\"usr\": \"Administrator\", \"pwd\": \"{PASSWORD}\"}}' && \\\n    curl -s -b /tmp/ho-cookies {h}/api/resource/Item -H 'content-type: application/json' -d '{{\"item_code\": \"GADGET-1\", \"item_group\": \"Products\", \"standard_rate\": 9}}'\n",
        h = head.config.url
    );
    println!("  each line below is one batch the sites applied, a failure or a resync.\n");
    server::shutdown_signal().await;
    for (handle, tx) in servers {
        let _ = tx.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(9), handle).await;
    }
    Ok(())
}
