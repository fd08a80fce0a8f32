//! File: its content (kept in the database) goes with the last File that refers to it.

use crate::error::Result;
use crate::service::documents::name_text;
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::{self, files, Conn, Doc, Param};
use async_trait::async_trait;
use serde_json::Value;

fn text(v: Option<&Value>) -> String {
    v.map(name_text).unwrap_or_default()
}

/// Before a File is deleted: its content goes too when no other File refers to it.
pub async fn before_delete(conn: &mut Conn, file: &Doc) -> Result<()> {
    let hash = text(file.get("content_hash"));
    if hash.is_empty() {
        return Ok(());
    }
    let others = store::fetch_scalar(
        conn,
        r#"SELECT COUNT(*) FROM "tabFile" WHERE content_hash = $1 AND name <> $2"#,
        &[
            Param::text(&hash),
            Param::Text(Some(text(file.get("name")))),
        ],
    )
    .await?
    .and_then(|v| v.as_i64())
    .unwrap_or(0);
    if others == 0 {
        files::delete_content(conn, &hash).await?;
    }
    Ok(())
}

/// File's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
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
