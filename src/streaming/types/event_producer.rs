//! Event Producer (consumer side): the handshake on insert, edits sent to the producer,
//! status mirrors written by the producer, and clean-up on delete.

use super::deferred::{ProducerChanged, SendToProducer, Unregister};
use crate::error::{Error, Result};
use crate::meta::Registry;
use crate::service::documents::Pending;
use crate::service::documents::WriteFlags;
use crate::service::hooks::Prepared;
use crate::service::hooks::{DocEvents, Write};
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::consumer;
use async_trait::async_trait;
use serde_json::Value;

fn text_of(v: Option<&Value>) -> String {
    crate::streaming::producer::value_text(v)
}

fn text(doc: &Doc, f: &str) -> String {
    doc.get(f)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The rows' fields that the producer must hear about.
fn subscription_of(doc: &Doc) -> Vec<(String, i64, String, i64, String)> {
    doc.get("producer_doctypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r.get("ref_doctype")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                r.get("unsubscribe").and_then(Value::as_i64).unwrap_or(0),
                r.get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                r.get("sync_existing").and_then(Value::as_i64).unwrap_or(1),
                if r.get("has_mapping").and_then(Value::as_i64) == Some(1) {
                    r.get("mapping")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

pub async fn validate(
    reg: &Registry,
    conn: &mut Conn,
    doc: &mut Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    if doc.get("incoming_change").and_then(Value::as_i64) == Some(1) {
        pending.incoming = true;
    }
    doc.insert("incoming_change".into(), Value::from(0));
    if let Some(o) = old {
        if text(o, "producer_url") != text(doc, "producer_url") {
            return Err(Error::Validation(
                "The Producer URL cannot change: delete this Event Producer and create a new one"
                    .into(),
            ));
        }
        let connection = |d: &Doc| {
            let c = text(d, "connection");
            if c.is_empty() {
                "Direct".to_string()
            } else {
                c
            }
        };
        if connection(o) != connection(doc) {
            return Err(Error::Validation(
                "The Connection cannot change: delete this Event Producer and create a new one with the other Connection"
                    .into(),
            ));
        }
    }
    for (t, _, condition, _, mapping) in subscription_of(doc) {
        // An unmapped row's condition reads the producer's document, whose fields the local
        // type holds once registered (a new producer's rows are checked when they follow it).
        let checked = match reg.get(&t) {
            Ok(dt) if mapping.is_empty() && old.is_some() => {
                crate::streaming::condition::check_for(&dt, &condition)
            }
            _ => crate::streaming::condition::check(&condition),
        };
        checked.map_err(|e| Error::Validation(format!("{t}: {e}")))?;
    }
    // The producer keeps one Event Consumer row per type it sends, so the types asked of it
    // must differ; two rows may make the same local type (one through a mapping), as in Frappe.
    let rows: Vec<Value> = doc
        .get("producer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (r, remote) in rows.iter().zip(consumer::remote_types(conn, &rows).await?) {
        if !seen.insert(remote.clone()) {
            let local = r
                .get("ref_doctype")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(Error::Validation(if local == remote {
                format!("{remote} appears twice in the Event Producer Document Types")
            } else {
                format!("{local}: its mapping asks the producer for {remote}, which another row of the Event Producer Document Types already asks for")
            }));
        }
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
    let Some(old) = old else { return Ok(()) };
    let url = text(doc, "name");
    if pending.incoming {
        pending.after_commit.push(Box::new(ProducerChanged(url)));
        return Ok(());
    }
    if subscription_of(doc) != subscription_of(old) {
        if consumer::add_remote_name_fields(site, conn, doc).await? {
            pending.meta_changed = true;
        }
        // Rows or conditions changed: what this site should hold changed with them.
        crate::streaming::verify::due_now(conn, &url).await?;
        pending
            .after_commit
            .push(Box::new(SendToProducer(url.clone())));
        pending.after_commit.push(Box::new(ProducerChanged(url)));
    }
    Ok(())
}

pub async fn before_delete(
    site: &Site,
    conn: &mut Conn,
    doc: &Doc,
    pending: &mut Pending,
) -> Result<()> {
    let url = text(doc, "name");
    store::execute(
        conn,
        r#"DELETE FROM "tabEvent Producer Last Update" WHERE name = $1"#,
        &[Param::Text(Some(url.clone()))],
    )
    .await?;
    let secret = crate::service::documents::get_auth(conn, "Event Producer", &url, "api_secret")
        .await?
        .map(|s| site.cipher.decrypt(&s))
        .transpose()?
        .unwrap_or_default();
    pending.after_commit.push(Box::new(Unregister {
        producer_url: url,
        api_key: text(doc, "api_key"),
        api_secret: secret,
    }));
    Ok(())
}

/// Event Producer's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    /// The handshake with the producer, before the insert's transaction.
    async fn prepare_insert(
        &self,
        w: &Write<'_>,
        input: &mut Doc,
        flags: &mut WriteFlags,
    ) -> Result<Option<Box<dyn Prepared>>> {
        if !flags.ignore_permissions {
            w.caller.require(w.dt, crate::meta::PermType::Create)?;
        }
        let registration = consumer::register(w.site, input).await?;
        // The row statuses come from the producer's reply (Pending for a producer that connects).
        flags.set_read_only = true;
        Ok(Some(Box::new(Handshake(registration))))
    }

    /// Rows added to the subscription: their types follow the producer's definitions before
    /// the save (it links to them).
    async fn prepare_update(&self, w: &Write<'_>, name: &str, patch: &mut Doc) -> Result<()> {
        let incoming = patch.get("incoming_change").is_some_and(|v| {
            v.as_i64() == Some(1) || v.as_bool() == Some(true) || v.as_str() == Some("1")
        });
        let Some(rows) = patch.get("producer_doctypes").and_then(Value::as_array) else {
            return Ok(());
        };
        if incoming {
            return Ok(());
        }
        let before: Vec<String> = {
            let mut conn = w.site.store.conn().await?;
            store::fetch_docs(
                &mut conn,
                r#"SELECT ref_doctype FROM "tabEvent Producer Document Type" WHERE parent = $1"#,
                &[Param::text(name)],
            )
            .await?
            .iter()
            .map(|r| text_of(r.get("ref_doctype")))
            .collect()
        };
        let reg = w.site.meta();
        let new: Vec<Value> = rows
            .iter()
            .filter(|r| {
                let t = text_of(r.get("ref_doctype"));
                !before.contains(&t) || !reg.exists(&t)
            })
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let remote = consumer::remote_for(w.site, name).await?;
        consumer::follow_rows(w.site, &remote, &new).await
    }

    /// A save from the producer (`incoming_change`) may set the status mirrors.
    fn flags_for_update(&self, patch: &Doc, flags: &mut WriteFlags) {
        let incoming = patch.get("incoming_change").is_some_and(|v| {
            v.as_i64() == Some(1) || v.as_bool() == Some(true) || v.as_str() == Some("1")
        });
        if incoming {
            flags.set_read_only = true;
        }
    }

    async fn validate(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        validate(w.reg, conn, doc, old, pending).await
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
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()> {
        before_delete(w.site, conn, doc, pending).await
    }
}

/// The handshake made before an Event Producer's insert (none yet for a producer that
/// connects: it is made at its first connection).
struct Handshake(Option<consumer::Registration>);

#[async_trait]
impl Prepared for Handshake {
    /// Stores what the handshake learned, in the insert's transaction.
    async fn finish(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()> {
        if let Some(r) = &self.0 {
            if consumer::store_registration(w.site, conn, doc, r).await? {
                pending.meta_changed = true;
                crate::service::hooks::bump_meta_version(conn, pending).await?;
            }
            pending
                .after_commit
                .push(Box::new(super::deferred::WakePuller));
        }
        Ok(())
    }

    /// Removes the registration when the transaction failed.
    async fn undo(self: Box<Self>, site: &Site) {
        let Some(r) = self.0 else { return };
        if let Err(e) = r
            .remote
            .delete_doc("Event Consumer", &site.config.url)
            .await
        {
            tracing::warn!(producer = %r.producer_url, "could not remove the registration after a failed save: {e}");
        }
    }
}
