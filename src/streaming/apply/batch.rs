//! One update of a page: applied (in a savepoint when the page is applied carefully) with
//! its sync log; what a page's updates learn and share as they go.
//! Must not commit: the page's transaction is its caller's.

use super::*;

/// Applies one update in a savepoint and writes (or, for `retry_of`, updates) its sync log.
/// Returns true when the change wrote update logs of its own (re-published).
pub(super) async fn apply_and_log(
    a: &Applying<'_>,
    tx: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    retry_of: Option<&Doc>,
    batch: &mut BatchState,
) -> Result<bool> {
    let key = (sub.local_type.clone(), inc.docname.clone());
    let blocker = if retry_of.is_none() {
        batch.failed.get(&key).cloned()
    } else {
        None
    };
    let outcome = match blocker {
        Some(b) => Err(Error::Validation(format!("waiting on {b}"))),
        None => {
            // A failed attempt's savepoint takes back its writes; what it taught the batch
            // (dependencies inserted and their Synced logs) is taken back with them.
            let mark = batch.careful.then(|| batch.known.mark());
            let known = &mut batch.known;
            let mut attempt = async |conn: &mut Conn| {
                known.note = None;
                known.conflict = None;
                let local = apply_one(a, conn, sub, inc, known).await?;
                files::store_files(a, conn, sub, inc, &local, known).await?;
                Ok(local)
            };
            if let Some(mark) = mark {
                let out = store::in_savepoint(tx, attempt).await?;
                if out.is_err() {
                    batch.known.rewind(mark);
                }
                out
            } else {
                // Optimistic: no savepoint. A failure leaves the transaction dirty, so the
                // page is rolled back and applied again with one savepoint per update.
                match attempt(tx).await {
                    Ok(local) => Ok(local),
                    Err(_) => {
                        batch.dirty = true;
                        return Ok(false);
                    }
                }
            }
        }
    };
    let wrote = outcome.is_ok() && batch.streamed.contains(&sub.local_type);
    if outcome.is_ok() && sub.mapping.is_none() {
        let doc = match inc.update_type.as_str() {
            "Update" => inc.data.get("changed"),
            _ => Some(&inc.data),
        };
        let known = &mut batch.known;
        if let Some(n) = doc.and_then(|d| linked_here::note_for(a.reg, known, &sub.local_type, d)) {
            known.add_note(n);
        }
    }
    if let Some(r) = batch.known.repair.clone() {
        batch.known.note_first(r);
    }
    let outcome = match (outcome, batch.known.conflict.take()) {
        (Ok(local), Some(c)) => Outcome::Conflict(local, c),
        (Ok(local), None) => Outcome::Applied(local),
        (Err(e), _) => Outcome::Failed(e),
    };
    let failed = !matches!(outcome, Outcome::Applied(_));
    batch.told.push(story::Outcome {
        doctype: sub.local_type.clone(),
        docname: inc.docname.clone(),
        update_type: inc.update_type.clone(),
        error: match &outcome {
            Outcome::Applied(_) => None,
            Outcome::Conflict(local, c) => Some(conflict::message(a, &sub.local_type, local, c)),
            Outcome::Failed(e) => Some(e.message()),
        },
    });
    let name = write_sync_log(a, tx, sub, inc, outcome, retry_of, &mut batch.known).await?;
    if failed && !batch.failed.contains_key(&key) {
        batch.failed.insert(key, name);
    }
    Ok(wrote)
}

/// What a batch knows without asking the database for every log.
#[derive(Debug, Default)]
pub struct BatchState {
    /// Each update in its own savepoint (after an optimistic attempt failed, and for retries).
    pub(super) careful: bool,
    /// An optimistic attempt failed: the transaction must be rolled back.
    pub(super) dirty: bool,
    /// Unresolved Failed sync logs by (local type, producer's name).
    pub(super) failed: std::collections::HashMap<(String, String), String>,
    /// Local types with consumers of their own (applying them writes update logs).
    pub(super) streamed: std::collections::HashSet<String>,
    /// Documents known to exist here before this batch touched them (dependency checks).
    pub(super) known: Known,
    /// What became of each update, for the terminal once the page commits.
    pub(super) told: Vec<story::Outcome>,
}

/// What a batch knows about linked documents.
#[derive(Debug, Default)]
pub struct Known {
    /// (type, name) of documents that existed here before the batch touched them.
    pub(super) present: std::collections::HashSet<(String, String)>,
    /// Missing documents already fetched from the producer (before the transaction).
    pub(super) fetched: std::collections::HashMap<(String, String), Value>,
    /// Field names of the producer's mapped types (None: the producer would not say).
    pub(super) remote_fields:
        std::collections::HashMap<String, Option<std::collections::HashSet<String>>>,
    /// (local type, name) of same-name Creates of the page whose document was not here when
    /// the page began (spares a lookup each).
    pub(super) absent: std::collections::HashSet<(String, String)>,
    /// New sync log rows, written together before the checkpoint moves.
    pub(super) sync_logs: Vec<Vec<Param>>,
    /// Documents synced in this batch, by (local type, producer name), with the creation of
    /// the newest producer log applied for each (empty when not known; `resent.rs`).
    pub(super) synced: std::collections::HashMap<(String, String), String>,
    /// Files the page's documents attach, downloaded before the transaction, by URL.
    pub(super) files: files::Attached,
    /// What applying the current update did besides the usual (an echo merged), for its
    /// sync log.
    pub(super) note: Option<String>,
    /// The current update is applied again after the producer's history changed.
    pub(super) replaying: bool,
    /// Linked documents held here that differ from the producer's copy, not yet noted on a
    /// sync log (`linked_here.rs`).
    pub(super) linked_here: std::collections::HashMap<(String, String), String>,
    /// Those noted by this page.
    pub(super) linked_noted: Vec<(String, String)>,
    /// Producer documents kept here under another name (a conflict resolved by keeping
    /// both), by (local type, producer's name): their updates follow that name.
    pub(super) kept_both: std::collections::HashMap<(String, String), String>,
    /// The current update is a repair verification asked for (the note begins with this).
    pub(super) repair: Option<String>,
    /// Fields of the current update that conflict with this site's edits (`conflict.rs`),
    /// kept here and recorded on its sync log.
    pub(super) conflict: Option<Value>,
    /// The producer answers `getdoctype` (Frappe, which pulls by time, or docstream that binds
    /// its pages): links it holds where this site holds text are followed (`dependencies.rs`).
    pub(super) gives_definitions: bool,
    /// Fields the producer's definitions make mandatory, by type (`as_sent.rs`).
    pub(super) producer_required:
        std::collections::HashMap<String, std::collections::HashSet<String>>,
}

/// What [`Known`] held before an attempt, to take back what a failed one added.
pub(super) struct Mark {
    sync_logs: usize,
    linked_noted: usize,
    present: std::collections::HashSet<(String, String)>,
    absent: std::collections::HashSet<(String, String)>,
    synced: std::collections::HashMap<(String, String), String>,
    kept_both: std::collections::HashMap<(String, String), String>,
}

impl Known {
    /// Adds `n` after what the current update's note already says.
    pub(super) fn add_note(&mut self, n: String) {
        self.note = Some(match self.note.take() {
            Some(before) => format!("{before}; {n}"),
            None => n,
        });
    }

    /// Puts `n` before what the current update's note already says.
    pub(super) fn note_first(&mut self, n: String) {
        self.note = Some(match self.note.take() {
            Some(after) => format!("{n}; {after}"),
            None => n,
        });
    }

    /// Where the batch stands before an attempt.
    pub(super) fn mark(&self) -> Mark {
        Mark {
            sync_logs: self.sync_logs.len(),
            linked_noted: self.linked_noted.len(),
            present: self.present.clone(),
            absent: self.absent.clone(),
            synced: self.synced.clone(),
            kept_both: self.kept_both.clone(),
        }
    }

    /// Takes back what an attempt rolled back to its savepoint had added.
    pub(super) fn rewind(&mut self, m: Mark) {
        self.sync_logs.truncate(m.sync_logs);
        self.linked_noted.truncate(m.linked_noted);
        self.present = m.present;
        self.absent = m.absent;
        self.synced = m.synced;
        self.kept_both = m.kept_both;
    }
}

impl BatchState {
    pub(super) async fn load(conn: &mut Conn, producer: &str) -> Result<BatchState> {
        let mut st = BatchState::default();
        let failed = store::fetch_docs(
            conn,
            r#"SELECT name, ref_doctype, producer_doc FROM "tabEvent Sync Log" WHERE event_producer = $1 AND status = 'Failed' ORDER BY seq DESC, creation DESC"#,
            &[Param::Text(Some(producer.into()))],
        )
        .await?;
        for f in failed {
            st.failed.insert(
                (text(f.get("ref_doctype")), text(f.get("producer_doc"))),
                text(f.get("name")),
            );
        }
        for r in store::fetch_docs(
            conn,
            r#"SELECT ref_doctype, remote_name, local_name FROM "__kept_both" WHERE producer = $1"#,
            &[Param::Text(Some(producer.into()))],
        )
        .await?
        {
            st.known.kept_both.insert(
                (text(r.get("ref_doctype")), text(r.get("remote_name"))),
                text(r.get("local_name")),
            );
        }
        let streamed = store::fetch_docs(
            conn,
            r#"SELECT DISTINCT ref_doctype FROM "tabEvent Consumer Document Type""#,
            &[],
        )
        .await?;
        st.streamed = streamed
            .iter()
            .map(|r| text(r.get("ref_doctype")))
            .collect();
        Ok(st)
    }
}
