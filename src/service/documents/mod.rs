//! The one write path for documents: insert, update, submit, cancel, delete, rename, and reads.
//!
//! Every write runs in one transaction that also carries the type's hooks and the change log
//! (`super::hooks`), so a change and its side effects commit together or not at all. The
//! write path calls the hooks without knowing who provides them; it must not import the
//! modules that do (`doctypes`, `streaming`).

mod children;
mod defaults;
mod delete;
mod docstatus;
mod fields;
mod insert;
mod links;
mod load;
mod rename;
mod secrets;
mod singles;
mod update;

pub use delete::delete_in;
pub use fields::missing_mandatory;
pub use insert::{check_name, insert_in};
pub use links::links_of;
pub use load::{load_doc, load_doc_for_update, name_text, name_value};
pub use rename::rename_in;
pub use secrets::{get_auth, set_auth};
pub use update::{update_in, update_loaded};

use super::hooks::{self, Deferred};
use crate::error::{Error, Result};
use crate::meta::DocType;
use crate::site::Site;
use crate::store::Doc;
use serde_json::Value;

/// Options of a write that server code (not API clients) may set.
#[derive(Debug, Clone, Default)]
pub struct WriteFlags {
    /// Skip DocPerm checks (server work).
    pub ignore_permissions: bool,
    /// Allow setting read-only fields.
    pub set_read_only: bool,
    /// Keep the name given in the document whatever the naming rule.
    pub keep_name: bool,
    /// Keep `owner`, `creation` and `modified` as given (documents copied from another site).
    pub keep_timestamps: bool,
    /// Skip Link validation.
    pub ignore_links: bool,
    /// The site where the change was first made, when it came from another site.
    pub origin: Option<String>,
    /// Made from another site's document of another type (a Document Type Mapping): a local
    /// document, so local defaults and fetched values apply. Other applied documents are
    /// stored as sent.
    pub mapped: bool,
    /// Fields (top level) kept as the producer holds them (`streaming::apply::as_sent`): a
    /// mandatory one may stay empty, a Select may hold a value that is not one of its options.
    pub unenforced: Vec<String>,
}

/// Side effects collected while a document is prepared, applied after its row is written.
#[derive(Debug, Default)]
pub struct Pending {
    /// True when the write added update logs (consumers are notified after commit).
    pub logs_written: bool,
    /// True when the save came from the other site of a stream (`incoming_change`).
    pub incoming: bool,
    /// Work to do once the transaction has committed.
    pub after_commit: Vec<Box<dyn Deferred>>,
    /// Password fields to encrypt: (fieldname, clear value).
    pub secrets: Vec<(String, String)>,
    /// A new login password (User only).
    pub login_password: Option<String>,
    /// True when the write changes document types (reload meta after commit).
    pub meta_changed: bool,
    /// True when the document comes from another site's update log: it is stored as sent
    /// (validation only: no defaults, fetched values or recomputation).
    pub applied: bool,
}

fn not_found(dt: &DocType, name: &str) -> Error {
    Error::DoesNotExist(format!("{} {} not found", dt.name, name))
}

/// True for a value Frappe counts as not set: none, null, blank text or no rows.
pub fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// The docstatus a client asks for: 0, 1 or 2 as a number or numeric text; anything else
/// is refused rather than read as 0.
fn requested_docstatus(input: &Doc) -> Result<Option<i64>> {
    match input.get("docstatus") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (0..=2).contains(n))
            .map(Some)
            .ok_or_else(|| Error::Validation(format!("docstatus must be 0, 1 or 2, not {v}"))),
    }
}

fn docstatus_of(doc: &Doc) -> i64 {
    doc.get("docstatus")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

impl Site {
    /// Runs what a committed write left to do: meta reload, the change log's notice, and the
    /// deferred work (calls to other sites).
    pub async fn after_commit(&self, pending: Pending) -> Result<()> {
        if pending.meta_changed {
            self.reload_meta().await?;
        }
        if pending.logs_written {
            if let Some(log) = hooks::of(self)?.change_log() {
                log.committed(self);
            }
        }
        for action in pending.after_commit {
            action.run(self).await;
        }
        Ok(())
    }
}
