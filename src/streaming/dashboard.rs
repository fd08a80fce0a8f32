//! The streaming dashboard: for each Event Producer (this site consuming) and each Event
//! Consumer (this site producing), its status, lag in updates, last sync and failures.
//!
//! Local facts come from this site's tables. What only the other site knows (a producer's logs
//! after our checkpoint; a consumer's sync logs) is asked of it with the stored keys, all sites
//! in parallel and each within [`REMOTE_TIMEOUT`], so one site that is down cannot stall the
//! page: its card says "Unreachable" with the error instead.

use super::apply::ProducerInfo;
use super::consumer::{checkpoint, remote_for, unsent_updates};
use super::producer::value_text;
use super::remote::RemoteSite;
use super::update_log::current_seq;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store::{self, Param};
use crate::streaming::Streaming;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

/// How long the dashboard waits for another site.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

async fn with_timeout<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REMOTE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(Error::Validation("no answer within 3 seconds".into())))
}

/// (ref_doctype, status) rows of a streaming document's child table.
async fn type_rows(
    site: &Site,
    child: &str,
    parent: &str,
    unsub_field: &str,
) -> Result<Vec<Value>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        &format!(
            r#"SELECT ref_doctype, status, {unsub} AS unsubscribed FROM {} WHERE parent = $1 ORDER BY idx"#,
            store::q(&crate::meta::table_name(child)),
            unsub = store::q(unsub_field)
        ),
        &[Param::Text(Some(parent.into()))],
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            json!({
                "ref_doctype": value_text(r.get("ref_doctype")),
                "status": value_text(r.get("status")),
                "unsubscribed": r.get("unsubscribed").and_then(Value::as_i64) == Some(1),
            })
        })
        .collect())
}

/// The overall status of a subscription from its rows: Active when something flows.
fn subscription_status(rows: &[Value]) -> &'static str {
    let live: Vec<&str> = rows
        .iter()
        .filter(|r| r["unsubscribed"] != true)
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    if live.contains(&"Approved") {
        "Active"
    } else if live.contains(&"Pending") {
        "Pending approval"
    } else if live.is_empty() {
        "No document types"
    } else {
        "Rejected"
    }
}

async fn names(site: &Site, table: &str) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        &format!("SELECT name FROM {} ORDER BY name", store::q(table)),
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| value_text(r.get("name"))).collect())
}

async fn scalar(site: &Site, sql: &str, params: &[Param]) -> Result<Value> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(&mut conn, sql, params).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().map(|(_, v)| v))
        .unwrap_or(Value::Null))
}

/// One producer this site consumes from.
async fn producer_card(site: &Site, url: String, unsent: bool) -> Result<Value> {
    let types = type_rows(site, "Event Producer Document Type", &url, "unsubscribe").await?;
    let (last_seq, last_update) = checkpoint(site, &url)
        .await
        .unwrap_or((None, String::new()));
    let failed = scalar(
        site,
        r#"SELECT COUNT(*) AS n FROM "tabEvent Sync Log" WHERE event_producer = $1 AND status = 'Failed'"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    // Among the failures: changes kept here until a person chooses (`apply/conflict.rs`).
    let conflicts = scalar(
        site,
        r#"SELECT COUNT(*) AS n FROM "tabEvent Sync Log" WHERE event_producer = $1 AND status = 'Failed' AND conflict IS NOT NULL"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let last_sync = scalar(
        site,
        r#"SELECT MAX(creation) AS m FROM "tabEvent Sync Log" WHERE event_producer = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let mut status = subscription_status(&types).to_string();
    let mut error = Value::Null;
    // A condition that raises on the producer holds documents back: said on both sites.
    if last_seq.is_some() {
        if let Ok(Ok(f)) =
            tokio::time::timeout(REMOTE_TIMEOUT, remote_condition_failures(site, &url)).await
        {
            if let Some(text) = condition_failure_text(&f) {
                status = "Condition fails".into();
                error = json!(text);
            }
        }
    }
    // A producer that connects: whether it is connected now (this process's link) and since.
    let connection = if super::tunnel::is_producer_connects(site, &url).await? {
        let since = scalar(
            site,
            r#"SELECT connected_since AS m FROM "tabEvent Producer" WHERE name = $1"#,
            &[Param::Text(Some(url.clone()))],
        )
        .await?;
        json!({"connected": site.streaming().tunnels.is_connected(&url), "since": since})
    } else {
        Value::Null
    };
    // Lag: logs of our types the producer holds after our checkpoint (an upper bound: logs our
    // subscription filters out, such as our own changes coming back, are counted too).
    let lag = match last_seq {
        Some(seq) => {
            let remote_types = ProducerInfo::load(site, &url).await?.remote_types();
            match with_timeout(remote_lag(site, &url, seq, &remote_types)).await {
                Ok(n) => json!(n),
                Err(e) => {
                    status = "Unreachable".into();
                    error = json!(e.message());
                    Value::Null
                }
            }
        }
        None => Value::Null,
    };
    // A changed history is shown until a person clears it: never "Up to date" meanwhile.
    let history = scalar(
        site,
        r#"SELECT history_changed AS h FROM "tabEvent Producer Last Update" WHERE name = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let history = value_text(Some(&history));
    let lag = if history.is_empty() {
        lag
    } else {
        status = "History changed".into();
        error = json!(history);
        Value::Null
    };
    // The last verification: differences left are shown until a verification finds none.
    let verified = store_row(
        site,
        r#"SELECT last_verified, verified_documents, verify_differences, last_in_step FROM "tabEvent Producer Last Update" WHERE name = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let differences = verified
        .get("verify_differences")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let lag = if differences > 0 && history.is_empty() {
        status = "Differences found".into();
        error = json!(format!(
            "the last verification found {differences} differences: see Verification Report on the Event Producer Last Update"
        ));
        Value::Null
    } else {
        lag
    };
    Ok(json!({
        "url": url,
        "status": status,
        "error": error,
        "types": types,
        "checkpoint": last_seq,
        "last_update": last_update,
        "lag": lag,
        "last_sync": last_sync,
        "failed": failed,
        "conflicts": conflicts,
        "verified": {
            "at": verified.get("last_verified").filter(|v| v.as_str() != Some(super::verify::DUE_NOW)),
            "documents": verified.get("verified_documents"),
            "differences": differences,
            "in_step_at": verified.get("last_in_step"),
        },
        "unsent": unsent,
        "connection": connection,
        "failures_link": format!(
            "/app/event-sync-log?status=Failed&event_producer={}",
            percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC)
        ),
    }))
}

/// The first row of a query, empty when there is none.
async fn store_row(site: &Site, sql: &str, params: &[Param]) -> Result<crate::store::Doc> {
    let mut conn = site.store.conn().await?;
    Ok(crate::store::fetch_docs(&mut conn, sql, params)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// What the producer says its conditions on this site's rows raised on.
async fn remote_condition_failures(site: &Site, url: &str) -> Result<Value> {
    let remote = remote_for(site, url).await?;
    remote
        .call(
            "docstream.streaming.condition_failures",
            &[("event_consumer", site.config.url.clone())],
        )
        .await
}

/// The sentence a dashboard shows for a condition that raises, if one does.
fn condition_failure_text(failures: &Value) -> Option<String> {
    let parts: Vec<String> = failures
        .as_array()?
        .iter()
        .map(|f| {
            format!(
                "{}: the condition raised on {} documents, held back until it is corrected ({})",
                value_text(f.get("doctype")),
                f["documents"],
                value_text(f.get("error"))
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

async fn remote_lag(site: &Site, url: &str, after: i64, types: &[String]) -> Result<i64> {
    if types.is_empty() {
        return Ok(0);
    }
    let remote = remote_for(site, url).await?;
    let n = remote
        .call(
            "frappe.client.get_count",
            &[
                ("doctype", "Event Update Log".into()),
                (
                    "filters",
                    json!([["seq", ">", after], ["ref_doctype", "in", types]]).to_string(),
                ),
            ],
        )
        .await?;
    Ok(n.as_i64().unwrap_or(0))
}

/// One consumer that pulls from this site.
async fn consumer_card(site: &Site, url: String, high: i64) -> Result<Value> {
    let types = type_rows(site, "Event Consumer Document Type", &url, "unsubscribed").await?;
    let acked = scalar(
        site,
        r#"SELECT acked_seq FROM "__consumer_progress" WHERE consumer = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?
    .as_i64();
    let approved: Vec<String> = types
        .iter()
        .filter(|r| r["status"] == "Approved" && r["unsubscribed"] != true)
        .map(|r| value_text(r.get("ref_doctype")))
        .collect();
    // Lag: logs of approved types after what the consumer acknowledged (its next pull
    // acknowledges what it applied, so a caught-up consumer shows its last page until then).
    let lag = if approved.is_empty() {
        0
    } else {
        let mut params = vec![
            Param::Int(Some(acked.unwrap_or(0))),
            Param::Text(Some(url.clone())),
        ];
        let marks: Vec<String> = approved
            .iter()
            .map(|t| {
                params.push(Param::Text(Some(t.clone())));
                format!("${}", params.len())
            })
            .collect();
        scalar(
            site,
            &format!(
                r#"SELECT COUNT(*) AS n FROM "tabEvent Update Log" WHERE name > $1
                   AND (origin IS NULL OR origin <> $2) AND (for_consumer IS NULL OR for_consumer = '' OR for_consumer = $2)
                   AND ref_doctype IN ({})"#,
                marks.join(", ")
            ),
            &params,
        )
        .await?
        .as_i64()
        .unwrap_or(0)
    };
    let mut status = subscription_status(&types).to_string();
    let mut error = Value::Null;
    let (failed, last_sync) = match with_timeout(remote_sync_facts(site, &url)).await {
        Ok((f, l)) => (json!(f), l),
        Err(e) => {
            status = "Unreachable".into();
            error = json!(e.message());
            (Value::Null, Value::Null)
        }
    };
    let conditions = {
        let mut conn = site.store.conn().await?;
        json!(super::condition::failures(&mut conn, &url).await?)
    };
    if let Some(text) = condition_failure_text(&conditions) {
        status = "Condition fails".into();
        error = json!(text);
    }
    // This site's last check of what the consumer holds (consumers that check nothing
    // themselves): what it lacks is shown until a check finds nothing.
    let verified = store_row(
        site,
        r#"SELECT verified_at, documents, differences, report, in_step_at FROM "__consumer_verification" WHERE consumer = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let differences = verified
        .get("differences")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if differences > 0 {
        status = "Differences found".into();
        let report = value_text(verified.get("report"));
        let mut lines: Vec<&str> = report.lines().skip(1).take(5).collect();
        if differences > 5 {
            lines.push("...");
        }
        error = json!(format!(
            "the last check found {differences} documents missing or different on the consumer (a producer cannot repair them): {}",
            lines.join("; ")
        ));
    }
    let own =
        percent_encoding::utf8_percent_encode(&site.config.url, percent_encoding::NON_ALPHANUMERIC);
    Ok(json!({
        "url": url,
        "status": status,
        "error": error,
        "types": types,
        "acknowledged": acked,
        "condition_failures": conditions,
        "verified": {
            "at": verified.get("verified_at"),
            "documents": verified.get("documents"),
            "differences": differences,
            "in_step_at": verified.get("in_step_at"),
        },
        "current_seq": high,
        "lag": lag,
        "last_sync": last_sync,
        "failed": failed,
        "failures_link": format!("{url}/app/event-sync-log?status=Failed&event_producer={own}"),
    }))
}

/// The consumer's count of Failed syncs from this site and the time of its last sync.
async fn remote_sync_facts(site: &Site, url: &str) -> Result<(i64, Value)> {
    let remote: RemoteSite = super::remote_with_stored_keys(site, "Event Consumer", url).await?;
    let me = site.config.url.clone();
    let count_args = [
        ("doctype", "Event Sync Log".to_string()),
        (
            "filters",
            json!([["event_producer", "=", me], ["status", "=", "Failed"]]).to_string(),
        ),
    ];
    let list_args = [
        ("doctype", "Event Sync Log".to_string()),
        ("fields", json!(["creation"]).to_string()),
        ("filters", json!([["event_producer", "=", me]]).to_string()),
        ("order_by", "creation desc".into()),
        ("limit_page_length", "1".into()),
    ];
    let failed = remote.call("frappe.client.get_count", &count_args);
    let last = remote.call("frappe.client.get_list", &list_args);
    let (failed, last) = tokio::join!(failed, last);
    let last = last?
        .get(0)
        .and_then(|r| r.get("creation"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok((failed?.as_i64().unwrap_or(0), last))
}

/// The whole dashboard: `{"site", "producers": [...], "consumers": [...]}`.
pub async fn build(site: &Site) -> Result<Value> {
    site.streaming().acks.flush(site).await?;
    let unsent = unsent_updates(site).await?;
    let producers = names(site, "tabEvent Producer").await?;
    let consumers = names(site, "tabEvent Consumer").await?;
    let high = {
        let mut conn = site.store.conn().await?;
        current_seq(&mut conn).await?
    };
    let p = join_all(producers.into_iter().map(|url| {
        let unsent = unsent.contains(&url);
        producer_card(site, url, unsent)
    }));
    let c = join_all(
        consumers
            .into_iter()
            .map(|url| consumer_card(site, url, high)),
    );
    let (p, c) = tokio::join!(p, c);
    Ok(json!({
        "site": site.config.url,
        "current_seq": high,
        "producers": p.into_iter().collect::<Result<Vec<_>>>()?,
        "consumers": c.into_iter().collect::<Result<Vec<_>>>()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_rows() {
        let row = |s: &str, u: bool| json!({"status": s, "unsubscribed": u});
        assert_eq!(
            subscription_status(&[row("Approved", false), row("Pending", false)]),
            "Active"
        );
        assert_eq!(
            subscription_status(&[row("Pending", false)]),
            "Pending approval"
        );
        assert_eq!(
            subscription_status(&[row("Approved", true)]),
            "No document types"
        );
        assert_eq!(subscription_status(&[row("Rejected", false)]), "Rejected");
    }
}
