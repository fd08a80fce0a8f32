//! File contents, kept in the site's database so that every process serving the site reads
//! them: chunks of base64 text per content hash (text, so that one value type serves both
//! backends' drivers; it costs a third more space than the bytes).

use super::{execute, fetch_scalar, Conn, Param};
use crate::error::Result;
use base64::Engine;

/// Bytes per chunk row.
pub const CHUNK_BYTES: usize = 192 * 1024;

/// True when content with this hash is stored.
pub async fn content_exists(conn: &mut Conn, hash: &str) -> Result<bool> {
    Ok(fetch_scalar(
        conn,
        r#"SELECT 1 FROM "__file_chunks" WHERE content_hash = $1 AND n = 0"#,
        &[Param::text(hash)],
    )
    .await?
    .is_some())
}

/// Stores chunk `n` of the content `hash`.
pub async fn write_chunk(conn: &mut Conn, hash: &str, n: i64, bytes: &[u8]) -> Result<()> {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    execute(
        conn,
        r#"INSERT INTO "__file_chunks" (content_hash, n, data) VALUES ($1, $2, $3)"#,
        &[
            Param::text(hash),
            Param::Int(Some(n)),
            Param::Text(Some(data)),
        ],
    )
    .await?;
    Ok(())
}

/// Chunk `n` of the content `hash`, if there is one.
pub async fn read_chunk(conn: &mut Conn, hash: &str, n: i64) -> Result<Option<Vec<u8>>> {
    let v = fetch_scalar(
        conn,
        r#"SELECT data FROM "__file_chunks" WHERE content_hash = $1 AND n = $2"#,
        &[Param::text(hash), Param::Int(Some(n))],
    )
    .await?;
    let Some(text) = v.as_ref().and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Some)
        .map_err(|e| crate::Error::Internal(format!("stored chunk {n} of {hash} is damaged: {e}")))
}

/// Removes the content `hash`.
pub async fn delete_content(conn: &mut Conn, hash: &str) -> Result<()> {
    execute(
        conn,
        r#"DELETE FROM "__file_chunks" WHERE content_hash = $1"#,
        &[Param::text(hash)],
    )
    .await?;
    Ok(())
}
