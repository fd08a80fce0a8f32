//! Applying pulled update logs on the consumer: strictly in order, each page in one
//! transaction with its sync logs and checkpoint; a failure is isolated in a savepoint.
//!
//! `mod.rs` holds the page (its attempts and the checkpoint); `producer_info.rs` what the
//! consumer knows of a producer; `batch.rs` one update and its sync log; `document.rs` the
//! Create/Update/Delete semantics. Everything applying one page works with travels in one
//! [`Applying`] value. Nothing here talks HTTP but through `RemoteSite`.
//! Must not apply a page it has not checked whole, nor one read under a producer or a
//! checkpoint that changed since.

use super::remote::RemoteSite;
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry};
use crate::service::documents;
use crate::service::documents::{load_doc, load_doc_for_update, name_text, WriteFlags};
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::Streaming;
use serde_json::{json, Value};

mod as_sent;
mod batch;
mod conflict;
mod dependencies;
mod document;
mod echo;
mod files;
mod held;
mod linked_here;
mod local_names;
mod mapped;
mod producer_info;
mod repair;
mod replay;
mod resent;
mod resolve;
mod resync;
mod story;
mod sync_log;

use as_sent::as_sent;
use batch::*;
use dependencies::*;
use document::*;
use local_names::*;
pub use local_names::{producer_names, rename_links, LocalNames};
use mapped::*;
use producer_info::{binds_key, read_stamp, TextLinks};
pub use producer_info::{
    stored_checkpoint, Checkpoint, ProducerInfo, ProducerInfos, SubscribedType,
};
pub use repair::repair;
pub use replay::{history_changed, history_key, stored_history};
pub use resolve::{resolve_conflict, Keep};
pub use resync::{resync, retry_due};
pub use sync_log::FETCHED_NOTES;
use sync_log::*;

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// What applying one page works with, the same for each of its updates.
#[derive(Clone, Copy)]
pub(super) struct Applying<'a> {
    pub site: &'a Site,
    /// The types as the page began.
    pub reg: &'a Registry,
    pub info: &'a ProducerInfo,
    /// The Event Subscriber, who writes what is applied.
    pub caller: &'a Caller,
    pub remote: &'a RemoteSite,
}

impl<'a> Applying<'a> {
    /// The write context of a document of type `dt`.
    fn write(&self, dt: &'a DocType) -> Write<'a> {
        Write {
            site: self.site,
            reg: self.reg,
            caller: self.caller,
            dt,
        }
    }
}

/// One incoming update, its data parsed once.
#[derive(Debug, Clone)]
pub struct Incoming {
    update_type: String,
    remote_type: String,
    docname: String,
    data: Value,
    raw_data: Value,
    seq: Option<i64>,
    origin: String,
    creation: String,
}

impl Incoming {
    /// Reads an Event Update Log as the producer sent it.
    pub fn from_log(mut log: Value) -> Incoming {
        let raw = log.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let data = match &raw {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        Incoming {
            update_type: text(log.get("update_type")),
            remote_type: text(log.get("ref_doctype")),
            docname: text(log.get("docname")),
            data,
            raw_data: raw,
            seq: log.get("seq").and_then(Value::as_i64),
            origin: text(log.get("origin")),
            creation: text(log.get("creation")),
        }
    }

    /// The log's `seq` (none from a Frappe producer).
    pub fn seq(&self) -> Option<i64> {
        self.seq
    }
}

/// Where a page was read from: the checkpoint it was asked after and the logs it holds up to.
#[derive(Debug, Clone)]
pub struct PageBounds {
    /// The checkpoint the page was asked after (docstream producers).
    pub after: Option<i64>,
    /// Where the checkpoint goes once the page is applied.
    pub cursor: Option<i64>,
    /// The page was bound to its request: from now on the producer's pages must be.
    pub bound: bool,
    /// The identity of the producer's log at `cursor` (`streaming::history`), kept with it.
    pub history: Option<String>,
}

/// Applies a page of logs and moves the checkpoint to its cursor, all in one transaction.
/// None when the page cannot be applied as read: the Event Producer changed since `info` was
/// read, or the checkpoint went back before the page (read both again and pull anew).
pub async fn apply_batch(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
    bounds: PageBounds,
) -> Result<Option<usize>> {
    // Types follow the producer's definitions first, so that the page's fields are held.
    held::follow_unheld(site, info, remote, logs).await;
    // Missing dependencies are fetched before the write transaction opens, in parallel.
    let reg = site.meta();
    let (docs, here) = prefetch_dependencies(site, &reg, info, remote, logs).await;
    let mut prefetched = Prefetched {
        linked_here: linked_here::check(site, &reg, info, remote, here).await,
        docs,
        files: files::prefetch_files(site, &reg, info, remote, logs).await,
    };
    let source = (site, info, remote);
    let attempt = apply_page(source, logs, &bounds, &mut prefetched, false).await?;
    Ok(match attempt {
        Attempt::Applied(n) => Some(n),
        Attempt::Stale => None,
        // An update failed: apply the page again, isolating each update in a savepoint.
        Attempt::Failed => match apply_page(source, logs, &bounds, &mut prefetched, true).await? {
            Attempt::Applied(n) => Some(n),
            Attempt::Stale => None,
            Attempt::Failed => Some(0),
        },
    })
}

/// What one attempt at a page came to.
enum Attempt {
    /// Committed, with this many updates applied.
    Applied(usize),
    /// An optimistic attempt hit a failure and rolled back.
    Failed,
    /// Rolled back: the page was read under a producer or a checkpoint that has changed.
    Stale,
}

/// What a page's documents need from the producer, fetched before its transaction: missing
/// linked documents (used by the first attempt only) and attached files.
struct Prefetched {
    /// Linked documents held here that differ from the producer's copy (`linked_here.rs`).
    linked_here: std::collections::HashMap<(String, String), String>,
    docs: std::collections::HashMap<(String, String), Value>,
    files: files::Attached,
}

/// One attempt at a page from `(site, producer, its client)`.
async fn apply_page(
    (site, info, remote): (&Site, &ProducerInfo, &RemoteSite),
    logs: &[Incoming],
    bounds: &PageBounds,
    prefetched: &mut Prefetched,
    careful: bool,
) -> Result<Attempt> {
    let reg = site.meta();
    let cursor = bounds.cursor;
    let mut tx = site.store.begin().await?;
    // The stamp and the checkpoint, read under the write lock (and cheaply: the writer's
    // cache is warm): another process may have applied this page, and the producer may have
    // changed since `info` was read.
    let (stamp, checkpoint) = read_stamp(&mut tx, &info.url).await?;
    let (stored_seq, _) = stored_checkpoint(checkpoint, &info.url)?;
    // docstream before 0.2 does not: asking would be a call it has no answer for.
    let gives_definitions = stored_seq.is_none() || info.binds || bounds.bound;
    let went_back = matches!((stored_seq, bounds.after), (Some(s), Some(a)) if s < a);
    if went_back || (!info.stamp.is_empty() && info.stamp != stamp) {
        return Ok(Attempt::Stale);
    }
    let caller = crate::service::auth::caller_in(&mut tx, &info.user).await?;
    let replay = replay::replay_until(&mut tx, &info.url).await?;
    let mut batch = BatchState::load(&mut tx, &info.url).await?;
    batch.known.fetched = std::mem::take(&mut prefetched.docs);
    batch.known.files = std::mem::take(&mut prefetched.files);
    batch.known.linked_here = prefetched.linked_here.clone();
    batch.known.gives_definitions = gives_definitions;
    batch.careful = careful;
    batch.known.absent = absent_at_start(&mut tx, &reg, info, logs).await?;
    let a = Applying {
        site,
        reg: &reg,
        info,
        caller: &caller,
        remote,
    };
    let mut applied = 0;
    let mut last_creation = None;
    let mut wrote_logs = false;
    for inc in logs {
        if let (Some(stored), Some(seq)) = (stored_seq, inc.seq) {
            if seq <= stored {
                continue;
            }
        }
        last_creation = Some(inc.creation.clone());
        if inc.origin == site.config.url {
            continue;
        }
        let Some(sub) = info.for_remote(&inc.remote_type) else {
            continue;
        };
        let replaying = matches!((replay, inc.seq), (Some(r), Some(s)) if s <= r);
        if replaying && replay::applied_before(&mut tx, &info.url, inc).await? {
            continue;
        }
        batch.known.replaying = replaying;
        applied += 1;
        wrote_logs |= apply_and_log(&a, &mut tx, sub, inc, None, &mut batch).await?;
        if batch.dirty {
            tx.rollback().await?;
            // The careful attempt needs the downloaded files again.
            prefetched.files = std::mem::take(&mut batch.known.files);
            return Ok(Attempt::Failed);
        }
    }
    batch.known.flush_sync_logs(&mut tx).await?;
    linked_here::mark_noted(&mut tx, &info.url, &batch.known.linked_noted).await?;
    let new_seq = match (stored_seq, cursor) {
        (Some(s), Some(c)) => Some(s.max(c)),
        (s, _) => s,
    };
    let mut sets = vec![];
    let mut params = vec![];
    if let Some(s) = new_seq {
        params.push(Param::Int(Some(s)));
        sets.push(format!("last_seq = ${}", params.len()));
    }
    if let Some(c) = last_creation.filter(|c| !c.is_empty()) {
        params.push(Param::Text(Some(c)));
        sets.push(format!("last_update = ${}", params.len()));
    }
    if let (Some(h), Some(c)) = (&bounds.history, cursor) {
        if new_seq == Some(c) {
            store::set_setting(&mut tx, &history_key(&info.url), &format!("{c} {h}")).await?;
        }
    }
    if let (Some(r), Some(s)) = (replay, new_seq) {
        if s >= r {
            replay::end_replay(&mut tx, &info.url).await?;
        }
    }
    if bounds.bound && !info.binds {
        // Written with the page, so that no later page is applied unbound.
        store::set_setting(&mut tx, &binds_key(&info.url), "1").await?;
    }
    if !sets.is_empty() {
        params.push(Param::Text(Some(info.url.clone())));
        store::execute(
            &mut tx,
            &format!(
                r#"UPDATE "tabEvent Producer Last Update" SET {} WHERE name = ${}"#,
                sets.join(", "),
                params.len()
            ),
            &params,
        )
        .await?;
    }
    tx.commit().await?;
    story::page_applied(site, &info.url, &batch.told);
    if wrote_logs {
        if let Some(me) = site.arc() {
            super::notifier::notify_consumers(me);
        }
    }
    Ok(Attempt::Applied(applied))
}
