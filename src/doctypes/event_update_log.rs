//! Event Update Log: logs are written by the streaming core; deleting one must not free its seq.

use crate::error::Result;
use crate::store::Conn;

/// Keeps the deleted seqs from being given out again (SQLite takes the next seq from the
/// newest log).
pub async fn before_delete(conn: &mut Conn) -> Result<()> {
    crate::streaming::update_log::keep_seq_floor(conn).await
}
