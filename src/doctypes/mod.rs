//! Behaviour of built-in types (validation and hooks), one module per type; the fields
//! themselves are data in `doctypes/*.json`.

mod custom_field;
mod doctype;
mod document_type_mapping;
mod event_consumer;
mod event_producer;
mod event_subscriber;
mod event_update_log;
mod file;
mod sales_invoice;
mod server_script;
mod user;

use crate::error::Result;
use crate::meta::{DocType, Registry};
use crate::service::documents::{AfterCommit, Pending};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{Conn, Doc};
use crate::streaming::consumer::Registration;

/// Runs the type's validation before a save; may change the document.
#[allow(clippy::too_many_arguments)]
pub async fn validate(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &mut Doc,
    old: Option<&Doc>,
    caller: &Caller,
    pending: &mut Pending,
) -> Result<()> {
    if matches!(dt.name.as_str(), "User" | "Role") {
        site.key_cache.clear();
    }
    match dt.name.as_str() {
        "Event Producer" => event_producer::validate(conn, doc, old, pending).await,
        "Event Consumer" => event_consumer::validate(doc, old, caller, pending),
        "Event Subscriber" => event_subscriber::validate(doc, old),
        "User" => user::validate(doc, old),
        "DocType" => doctype::validate(reg, doc, old),
        "Custom Field" => custom_field::validate(reg, doc, old),
        "Server Script" => server_script::validate(doc),
        "Document Type Mapping" => document_type_mapping::validate(conn, reg, doc).await,
        "Sales Invoice" if !pending.applied => sales_invoice::validate(conn, reg, doc).await,
        _ => Ok(()),
    }
}

/// Runs the type's side effects after its row is written, in the same transaction.
pub async fn after_write(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    run_after_write(site, conn, reg, dt, doc, old, pending).await?;
    bump_meta_version(conn, pending).await
}

/// Other processes reload their registry when this counter moves (same transaction).
async fn bump_meta_version(conn: &mut Conn, pending: &Pending) -> Result<()> {
    if pending.meta_changed {
        crate::store::next_counter(conn, crate::site::META_VERSION).await?;
    }
    Ok(())
}

async fn run_after_write(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    match dt.name.as_str() {
        "DocType" => doctype::after_write(site, conn, doc, old, pending).await,
        "Custom Field" => custom_field::after_write(site, conn, reg, doc, pending).await,
        "Event Producer" => event_producer::after_write(site, conn, doc, old, pending).await,
        "Event Consumer" => event_consumer::after_write(site, conn, doc, old, pending).await,
        _ => Ok(()),
    }
}

/// Runs the type's checks before a delete, in the same transaction.
pub async fn before_delete(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    pending: &mut Pending,
) -> Result<()> {
    run_before_delete(site, conn, reg, dt, doc, pending).await?;
    bump_meta_version(conn, pending).await
}

async fn run_before_delete(
    site: &Site,
    conn: &mut Conn,
    _reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    pending: &mut Pending,
) -> Result<()> {
    site.key_cache.clear();
    match dt.name.as_str() {
        "User" => user::before_delete(doc),
        "Event Producer" => event_producer::before_delete(site, conn, doc, pending).await,
        "Event Consumer" => event_consumer::before_delete(conn, doc).await,
        "Event Update Log" => event_update_log::before_delete(conn).await,
        "File" => file::before_delete(conn, doc).await,
        "DocType" => doctype::before_delete(conn, doc, pending).await,
        "Custom Field" => {
            pending.meta_changed = true;
            Ok(())
        }
        "Role" => {
            let name = doc.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            if ["Administrator", "System Manager", "All", "Guest"].contains(&name) {
                return Err(crate::Error::Validation(format!(
                    "The built-in role {name} cannot be deleted"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Before an insert's transaction: work that needs another site (the Event Producer handshake).
pub async fn prepare_insert(
    site: &Site,
    caller: &Caller,
    dt: &DocType,
    input: &mut Doc,
    flags: &mut crate::service::documents::WriteFlags,
) -> Result<Option<Registration>> {
    if dt.name != "Event Producer" {
        return Ok(None);
    }
    if !flags.ignore_permissions {
        caller.require(dt, crate::meta::PermType::Create)?;
    }
    let registration = crate::streaming::consumer::register(site, input).await?;
    // The row statuses come from the producer's reply (Pending for a producer that connects).
    flags.set_read_only = true;
    Ok(registration)
}

/// Inside the insert's transaction, after the row: stores what `prepare_insert` learned.
pub async fn finish_insert(
    site: &Site,
    conn: &mut Conn,
    doc: &Doc,
    prepared: Option<&Registration>,
    pending: &mut Pending,
) -> Result<()> {
    if let Some(r) = prepared {
        if crate::streaming::consumer::store_registration(site, conn, doc, r).await? {
            pending.meta_changed = true;
            bump_meta_version(conn, pending).await?;
        }
        pending.after_commit.push(AfterCommit::WakePuller);
    }
    Ok(())
}

/// Undoes `prepare_insert` when the transaction failed.
pub async fn undo_prepare(site: &Site, prepared: Registration) {
    if let Err(e) = prepared
        .remote
        .delete_doc("Event Consumer", &site.config.url)
        .await
    {
        tracing::warn!(producer = %prepared.producer_url, "could not remove the registration after a failed save: {e}");
    }
}

/// Flags for an update: a save from the other site may set the status mirrors.
pub fn flags_for_update(
    dt: &DocType,
    patch: &Doc,
    flags: &crate::service::documents::WriteFlags,
) -> crate::service::documents::WriteFlags {
    let mut f = flags.clone();
    let incoming = patch
        .get("incoming_change")
        .map(|v| v.as_i64() == Some(1) || v.as_bool() == Some(true) || v.as_str() == Some("1"))
        .unwrap_or(false);
    if dt.name == "Event Producer" && incoming {
        f.set_read_only = true;
    }
    f
}

/// Runs one post-commit action; failures are logged (and queued where the spec asks).
pub async fn run_after_commit(site: &Site, action: AfterCommit) {
    match action {
        AfterCommit::TellConsumer(url) => {
            if let Err(e) = crate::streaming::producer::tell_consumer_statuses(site, &url).await {
                tracing::warn!(consumer = %url, "could not tell the consumer its statuses: {e}");
            }
        }
        AfterCommit::SendToProducer(url) => {
            if let Err(e) = crate::streaming::consumer::send_update(site, &url).await {
                tracing::warn!(producer = %url, "edit not yet sent to the producer (queued): {e}");
                let _ = crate::streaming::consumer::mark_unsent(site, &url).await;
            }
        }
        AfterCommit::Unregister {
            producer_url,
            api_key,
            api_secret,
        } => {
            let remote = crate::streaming::remote::RemoteSite::new(
                site.http.clone(),
                &producer_url,
                &api_key,
                &api_secret,
                site.config.max_answer_bytes(),
            );
            if let Err(e) = remote.delete_doc("Event Consumer", &site.config.url).await {
                tracing::warn!(producer = %producer_url, "could not delete the Event Consumer on the producer: {e}");
            }
        }
        AfterCommit::WakePuller => site.pull_wakeup.notify_one(),
        AfterCommit::ProducerChanged(url) => {
            crate::streaming::long_poll::restart(site, &url);
            site.pull_wakeup.notify_one();
        }
    }
}
