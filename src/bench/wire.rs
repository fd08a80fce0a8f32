//! `wire`: what a shop's line carries. The bytes of the pull pages of 1,000 invoices (fewer on
//! a small run) as they cross the wire plain, gzip and zstd; then the time to move up to 5,000
//! invoices to a consumer through a 256 kbit/s link with 300 ms of delay each way (its Items
//! came through the same link before, untimed).

use super::slow_link::SlowLink;
use super::*;

const PULL: &str = "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer";

pub(super) async fn run(
    tmp: &Path,
    docs: usize,
    client: &reqwest::Client,
    report: &mut Report,
) -> Result<()> {
    let invoices = (docs / 20).clamp(50, 5000);
    let mut out = serde_json::Map::new();

    // The pages, pulled as a consumer would, in each coding.
    let (pport, cport) = (free_port()?, free_port()?);
    let producer = make_site(&tmp.join("wire-p"), "wirep", pport).await?;
    let consumer = make_site(&tmp.join("wire-c"), "wirec", cport).await?;
    seed_masters(&producer).await?;
    let p = start_served(&producer, pport, client).await?;
    // Not served: its pages are pulled here. Registration still needs its keys.
    consumer
        .generate_keys(&Caller::administrator(), "Administrator")
        .await?;
    subscribe(&consumer, &p, &["Sales Invoice"]).await?;
    approve_all(&producer, &consumer.config.url).await?;
    let sample = invoices.min(1000);
    write_backlog(&producer, "W-", 2 * sample).await?;
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    for coding in ["plain", "gzip", "zstd"] {
        let bytes = pulled_bytes(&raw, &p, &consumer.config.url, coding).await?;
        out.insert(
            format!("bytes_per_1000_invoices_{coding}"),
            json!(bytes as f64 * 1000.0 / sample as f64),
        );
    }
    drop(p);
    consumer.store.close().await;

    // The slow link.
    let (pport, cport) = (free_port()?, free_port()?);
    let link = SlowLink::start(0, pport, 256, Duration::from_millis(300))
        .await
        .map_err(|e| Error::Internal(format!("slow link: {e}")))?;
    let producer = make_site(&tmp.join("slow-p"), "slowp", link.port).await?;
    let consumer = make_site(&tmp.join("slow-c"), "slowc", cport).await?;
    seed_masters(&producer).await?;
    seed_masters(&consumer).await?;
    let mut p = start_served(&producer, pport, client).await?;
    p.url = format!("http://127.0.0.1:{}", link.port);
    let c = start_served(&consumer, cport, client).await?;
    subscribe(&consumer, &p, &["Item", "Sales Invoice"]).await?;
    approve_all(&producer, &c.url).await?;
    // The Items come first, as from a head office, and are not timed: the line then carries
    // the invoices only.
    write_range(&producer, "S-", 2 * invoices, 0..invoices).await?;
    let items_done = current_seq(&producer).await?;
    wait_caught_up(&consumer, &p.url, items_done, "slow link: items").await?;
    let (down0, up0) = (
        link.bytes_down.load(std::sync::atomic::Ordering::Relaxed),
        link.bytes_up.load(std::sync::atomic::Ordering::Relaxed),
    );
    write_range(&producer, "S-", 2 * invoices, invoices..2 * invoices).await?;
    let target = current_seq(&producer).await?;
    let took = wait_caught_up(&consumer, &p.url, target, "slow link").await?;
    out.insert("slow_link_invoices".into(), json!(invoices));
    out.insert("slow_link_seconds".into(), json!(took));
    out.insert(
        "slow_link_bytes_down".into(),
        json!(link.bytes_down.load(std::sync::atomic::Ordering::Relaxed) - down0),
    );
    out.insert(
        "slow_link_bytes_up".into(),
        json!(link.bytes_up.load(std::sync::atomic::Ordering::Relaxed) - up0),
    );
    report.extra.insert("wire".into(), Value::Object(out));
    Ok(())
}

/// The bytes of every page of the consumer's logs, pulled from the start in `coding`.
async fn pulled_bytes(
    raw: &reqwest::Client,
    p: &Served,
    consumer: &str,
    coding: &str,
) -> Result<u64> {
    let accept = match coding {
        "plain" => "identity",
        other => other,
    };
    let (mut after, mut total) = (0i64, 0u64);
    loop {
        let r = raw
            .post(format!("{}{PULL}", p.url))
            .header("authorization", &p.auth)
            .header("accept-encoding", accept)
            .form(&[
                ("event_consumer", consumer.to_string()),
                ("doctypes", "[\"Sales Invoice\"]".to_string()),
                ("after_seq", after.to_string()),
                ("limit", "500".to_string()),
            ])
            .send()
            .await
            .map_err(|e| Error::Internal(format!("wire: pull: {e}")))?;
        let header = |k: &str| {
            r.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (last, more) = (
            header("x-docstream-last-seq"),
            header("x-docstream-has-more"),
        );
        let body = r
            .bytes()
            .await
            .map_err(|e| Error::Internal(format!("wire: pull: {e}")))?;
        total += body.len() as u64;
        let last: i64 = last.and_then(|l| l.parse().ok()).unwrap_or(after);
        if more.is_none() || last <= after {
            return Ok(total);
        }
        after = last;
    }
}
