//! Event Consumer (producer side): approval rules, snapshots on approval, statuses sent back.

use super::deferred::TellConsumer;
use crate::error::{Error, Result};
use crate::meta::Registry;
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::Streaming;
use async_trait::async_trait;
use serde_json::Value;

fn rows(doc: Option<&Doc>) -> Vec<Value> {
    doc.and_then(|d| d.get("consumer_doctypes"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn row_type(r: &Value) -> String {
    r.get("ref_doctype")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn row_status(r: &Value) -> String {
    r.get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub fn validate(
    reg: &Registry,
    doc: &mut Doc,
    old: Option<&Doc>,
    caller: &Caller,
    pending: &mut Pending,
) -> Result<()> {
    let before = rows(old);
    if doc.get("incoming_change").and_then(Value::as_i64) == Some(1) {
        // An edit sent by the consumer: it never decides statuses.
        pending.incoming = true;
        if let Some(rs) = doc
            .get_mut("consumer_doctypes")
            .and_then(Value::as_array_mut)
        {
            for r in rs.iter_mut() {
                let was = before.iter().find(|b| row_type(b) == row_type(r));
                let status = was
                    .map(row_status)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "Pending".into());
                r["status"] = Value::String(status);
                // Frappe's consumer rewrites its rows without Sync Existing: a row keeps what
                // it was registered with, and a new one without it sends nothing existing,
                // as Frappe's producer does (else a row approved again would send them all).
                let given = r.get("sync_existing").filter(|v| !v.is_null()).cloned();
                r["sync_existing"] = match was {
                    Some(b) => b.get("sync_existing").cloned().unwrap_or(Value::from(0)),
                    None => given.unwrap_or(Value::from(0)),
                };
                // The producer's rule for this consumer: Frappe's consumer sends its rows
                // without it, and never decides it.
                r["leave_out"] = was
                    .and_then(|b| b.get("leave_out"))
                    .cloned()
                    .unwrap_or(Value::Null);
            }
        }
    } else if old.is_some() {
        let own_user = doc.get("user").and_then(Value::as_str).unwrap_or_default();
        let changed = rows(Some(doc)).iter().any(|r| {
            let was = before.iter().find(|b| row_type(b) == row_type(r));
            let left_out = |row: Option<&Value>| {
                row.and_then(|x| x.get("leave_out"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            was.map(row_status).unwrap_or_else(|| "Pending".into()) != row_status(r)
                || left_out(was) != left_out(Some(r))
        });
        if changed && caller.user == own_user && caller.user != "Administrator" {
            return Err(Error::Permission(format!("{own_user} is the consumer's own user and may not approve or reject its subscriptions, nor change what is left out for it")));
        }
    }
    doc.insert("incoming_change".into(), Value::from(0));
    for r in rows(Some(doc)) {
        let condition = r
            .get("condition")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let checked = match reg.get(&row_type(&r)) {
            Ok(dt) => crate::streaming::condition::check_for(&dt, condition),
            Err(_) => crate::streaming::condition::check(condition),
        };
        checked.map_err(|e| Error::Validation(format!("{}: {e}", row_type(&r))))?;
    }
    Ok(())
}

pub async fn after_write(
    site: &Site,
    conn: &mut Conn,
    doc: &Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    let changed = crate::streaming::producer::on_consumer_saved(site, conn, doc, old).await?;
    site.streaming().notifier.forget_consumers();
    if changed && !pending.incoming {
        let url = doc
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        pending.after_commit.push(Box::new(TellConsumer(url)));
    }
    Ok(())
}

pub async fn before_delete(conn: &mut Conn, doc: &Doc) -> Result<()> {
    let url = doc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for table in [
        "__consumer_type_state",
        "__consumer_progress",
        "__consumer_sent",
        "__condition_deliveries",
        "__consumer_verification",
    ] {
        store::execute(
            conn,
            &format!(r#"DELETE FROM "{table}" WHERE consumer = $1"#),
            &[Param::Text(Some(url.clone()))],
        )
        .await?;
    }
    Ok(())
}

/// Event Consumer's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        validate(w.reg, doc, old, w.caller, pending)
    }

    async fn after_write(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        after_write(w.site, conn, doc, old, pending).await
    }

    async fn before_delete(
        &self,
        _w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        _pending: &mut Pending,
    ) -> Result<()> {
        before_delete(conn, doc).await
    }
}
