//! The hook points of the write path, in the manner of Frappe's `hooks.py` doc_events: the
//! write path calls them at fixed points and knows only that they exist; the layers above it
//! (`doctypes` and `streaming`) register theirs when a site opens (`crate::hooks`). This module
//! must not name a type's behaviour, nor import the modules that provide it.
//!
//! For each write, in order: `prepare_insert` (inserts, before the transaction), `validate`,
//! the row, `after_write` (or `before_delete`), then the change log, last inside the
//! transaction; after the commit, the deferred work and the change log's `committed`.

use super::diff::Diff;
use super::documents::{Pending, WriteFlags};
use super::permissions::Caller;
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry};
use crate::site::Site;
use crate::store::{Conn, Doc};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

/// What a hook sees of the write it runs in.
#[derive(Clone, Copy)]
pub struct Write<'a> {
    pub site: &'a Site,
    /// The types the write reads (one registry for the whole write).
    pub reg: &'a Registry,
    pub caller: &'a Caller,
    /// The type written.
    pub dt: &'a DocType,
}

/// A document type's behaviour at the write path's hook points; every method defaults to
/// doing nothing.
#[async_trait]
pub trait DocEvents: Send + Sync {
    /// Before an insert's transaction: work with another site, which the returned value
    /// finishes inside the transaction or undoes when it fails.
    async fn prepare_insert(
        &self,
        _w: &Write<'_>,
        _input: &mut Doc,
        _flags: &mut WriteFlags,
    ) -> Result<Option<Box<dyn Prepared>>> {
        Ok(None)
    }

    /// Before an update's transaction (an update made by `Site::update_doc`, as the API's
    /// are): work with another site that the update needs done first.
    async fn prepare_update(&self, _w: &Write<'_>, _name: &str, _patch: &mut Doc) -> Result<()> {
        Ok(())
    }

    /// The flags of an update, from what the update carries.
    fn flags_for_update(&self, _patch: &Doc, _flags: &mut WriteFlags) {}

    /// Before a save (`old` is None for an insert): may change the document or refuse it.
    async fn validate(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        _doc: &mut Doc,
        _old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        Ok(())
    }

    /// After the document's row and child rows are written, in the same transaction.
    async fn after_write(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        _doc: &Doc,
        _old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        Ok(())
    }

    /// Before a document is deleted, in the same transaction.
    async fn before_delete(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        _doc: &Doc,
        _pending: &mut Pending,
    ) -> Result<()> {
        Ok(())
    }

    /// A document as it is read: adds what is not stored with it.
    async fn on_read(&self, _site: &Site, _conn: &mut Conn, _doc: &mut Doc) -> Result<()> {
        Ok(())
    }
}

/// Work a `prepare_insert` did before the transaction.
#[async_trait]
pub trait Prepared: Send + Sync {
    /// Inside the insert's transaction, after the row: stores what the work learned.
    async fn finish(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()>;

    /// The transaction failed: undoes the work.
    async fn undo(self: Box<Self>, site: &Site);
}

/// Work that waits for the commit (calls to other sites, notifications); its failures are
/// its own to report.
#[async_trait]
pub trait Deferred: Send + Sync + std::fmt::Debug {
    /// Runs once the write has committed.
    async fn run(self: Box<Self>, site: &Site);
}

/// What a write changed, as the change log records it.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Insert(&'a Doc),
    /// The document's name and what changed.
    Update(&'a str, &'a Diff),
    Delete(&'a Doc),
    /// The document before and after.
    Rename(&'a Doc, &'a Doc),
}

/// The log of every write (the update log), recorded last inside the write's transaction.
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Whether writes of `dt` are logged, when that is known without the database.
    fn known(&self, dt: &DocType) -> Option<bool>;

    /// A query part, for a `UNION ALL` of `(t, name)` rows that a write runs anyway (its link
    /// look-up), answering one row tagged `tag` when the type named by parameter `$param` is
    /// logged: the write then needs no statement of its own to learn it.
    fn probe(&self, tag: i64, param: usize) -> String;

    /// Records a change; `probed` is what the probe answered, if it went. True when a log was
    /// written.
    async fn record(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        change: Change<'_>,
        flags: &WriteFlags,
        probed: Option<bool>,
    ) -> Result<bool>;

    /// After the commit of a write that logged.
    fn committed(&self, site: &Site);
}

/// The hooks of a site: per type, the behaviours registered for it (in registration order),
/// and the change log.
#[derive(Default)]
pub struct Hooks {
    doc_events: HashMap<String, Vec<Arc<dyn DocEvents>>>,
    change_log: Option<Arc<dyn ChangeLog>>,
}

impl Hooks {
    /// Registers `events` for the types `doctypes`.
    pub fn on(&mut self, doctypes: &[&str], events: Arc<dyn DocEvents>) {
        for t in doctypes {
            self.doc_events
                .entry(t.to_string())
                .or_default()
                .push(events.clone());
        }
    }

    /// Sets the change log.
    pub fn log_changes(&mut self, log: Arc<dyn ChangeLog>) {
        self.change_log = Some(log);
    }

    /// The behaviours of a type.
    pub fn of(&self, doctype: &str) -> &[Arc<dyn DocEvents>] {
        self.doc_events.get(doctype).map_or(&[], Vec::as_slice)
    }

    /// The change log, if one is registered.
    pub fn change_log(&self) -> Option<&Arc<dyn ChangeLog>> {
        self.change_log.as_ref()
    }
}

/// The hooks of a site, which the write path cannot run without.
pub fn of(site: &Site) -> Result<Arc<Hooks>> {
    site.extensions.get::<Hooks>().ok_or_else(|| {
        Error::Internal(format!(
            "site {} was opened without the hooks of its write path (a site is opened by the hooks module)",
            site.name
        ))
    })
}

impl Write<'_> {
    /// Runs `validate` of the type's behaviours.
    pub async fn validate(
        &self,
        hooks: &Hooks,
        conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        for h in hooks.of(&self.dt.name) {
            h.validate(self, conn, doc, old, pending).await?;
        }
        Ok(())
    }

    /// Runs `after_write` of the type's behaviours; bumps the types' version when the write
    /// changed types (other processes then reload theirs).
    pub async fn after_write(
        &self,
        hooks: &Hooks,
        conn: &mut Conn,
        doc: &Doc,
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        for h in hooks.of(&self.dt.name) {
            h.after_write(self, conn, doc, old, pending).await?;
        }
        bump_meta_version(conn, pending).await
    }

    /// Runs `before_delete` of the type's behaviours, then bumps the types' version as
    /// [`Write::after_write`] does.
    pub async fn before_delete(
        &self,
        hooks: &Hooks,
        conn: &mut Conn,
        doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()> {
        for h in hooks.of(&self.dt.name) {
            h.before_delete(self, conn, doc, pending).await?;
        }
        bump_meta_version(conn, pending).await
    }

    /// Records a change in the change log, if there is one.
    pub async fn record(
        &self,
        hooks: &Hooks,
        conn: &mut Conn,
        change: Change<'_>,
        flags: &WriteFlags,
        probed: Option<bool>,
    ) -> Result<bool> {
        match hooks.change_log() {
            Some(log) => log.record(self, conn, change, flags, probed).await,
            None => Ok(false),
        }
    }
}

/// Other processes reload their registry when this counter moves (same transaction).
pub async fn bump_meta_version(conn: &mut Conn, pending: &Pending) -> Result<()> {
    if pending.meta_changed {
        crate::store::next_counter(conn, crate::site::META_VERSION).await?;
    }
    Ok(())
}
