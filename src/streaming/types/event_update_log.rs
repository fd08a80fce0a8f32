//! Event Update Log: logs are written by the streaming core; deleting one must not free its seq.

use crate::error::Result;
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::site::Site;
use crate::store::Conn;
use crate::store::Doc;
use crate::streaming::Streaming;
use async_trait::async_trait;
use serde_json::Value;

/// Keeps the deleted seqs from being given out again (SQLite takes the next seq from the
/// newest log).
pub async fn before_delete(conn: &mut Conn) -> Result<()> {
    crate::streaming::update_log::keep_seq_floor(conn).await
}

/// Event Update Log's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn before_delete(
        &self,
        _w: &Write<'_>,
        conn: &mut Conn,
        _doc: &Doc,
        _pending: &mut Pending,
    ) -> Result<()> {
        before_delete(conn).await
    }

    /// A log as read shows the consumers that have received it.
    async fn on_read(&self, site: &Site, conn: &mut Conn, doc: &mut Doc) -> Result<()> {
        site.streaming().acks.flush(site).await?;
        let consumers = crate::streaming::producer::consumers_of(conn, doc).await?;
        doc.insert("consumers".into(), Value::Array(consumers));
        Ok(())
    }
}
