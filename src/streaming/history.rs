//! History identity: whether the update log a consumer has applied up to is still this
//! producer's log. A producer restored from an older backup (by the binary or behind its back:
//! a file copy, `sqlite3 .backup`, `pg_dump`) gives the same seqs out again to other changes;
//! its consumer's checkpoint would then pass over them in silence.
//!
//! A log's identity is the SHA-256 of its seq, `creation`, type, document and update type (a
//! log minted again differs at least in `creation`, which has microseconds). The identity "at
//! seq S" is that of the newest log at or before S. A consumer asks for it (`history` with
//! `after_seq`, empty the first time): the page then carries `history`, the identity at its
//! `last_seq`, which the consumer keeps with its checkpoint and sends with its next pull. The
//! producer answers `history_changed` instead of a page when the identity at the consumer's
//! checkpoint is not the one it sent, when that checkpoint is past its newest log, or when it
//! is behind logs pruned here (the newest pruned log's identity is kept, so pruning does not
//! hide a change). Consumers that do not ask get today's page.
//!
//! A restore made by the binary (`site NAME restore`) leaves a mark with an id in the
//! database; identities then include that id, so every consumer's checkpoint is another
//! history at its next pull, whatever seq it stood at, and the answer names the restore.
//! Must not decide what a consumer does about a change (`consumer.rs` and `apply/` do).

use crate::error::Result;
use crate::store::{self, Conn, Doc, Param};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// Where the newest pruned log's seq and identity are kept.
const PRUNED_KEY: &str = "history_pruned";

/// The restore this database came from, as `site NAME restore` marked it (empty when none).
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// A random id per restore: the history's epoch.
    pub id: String,
    made_at: String,
    restored_at: String,
}

impl Restored {
    /// The mark of this site's database, read once per process (a restore is refused while
    /// the site is served, so it cannot change under a running server).
    pub async fn of(site: &crate::site::Site) -> Result<Restored> {
        use super::Streaming;
        let rt = site.streaming();
        let r = rt
            .restored
            .get_or_try_init(|| async {
                let mut conn = site.store.conn().await?;
                Restored::read(&mut conn).await
            })
            .await?;
        Ok(r.clone())
    }

    async fn read(conn: &mut Conn) -> Result<Restored> {
        let mark = store::get_setting(conn, store::RESTORED_SETTING).await?;
        let mark: Value = mark
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or_default();
        let field = |k: &str| {
            mark.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Ok(Restored {
            id: field("id"),
            made_at: field("made_at"),
            restored_at: field("restored_at"),
        })
    }

    /// A reason that names the restore, when there was one.
    fn name(&self, reason: String) -> String {
        if self.id.is_empty() {
            return reason;
        }
        format!(
            "this site was restored with `docstream site ... restore` at {} UTC from a backup made at {} UTC ({reason})",
            self.restored_at, self.made_at
        )
    }
}

/// The identity of an update log row in the history `epoch` (a restore's id; empty before
/// any restore, which keeps identities as they were).
pub fn identity(row: &Doc, epoch: &str) -> String {
    let mut h = Sha256::new();
    if !epoch.is_empty() {
        h.update((epoch.len() as u64).to_be_bytes());
        h.update(epoch.as_bytes());
    }
    let seq = row
        .get("seq")
        .or_else(|| row.get("name"))
        .map(|v| text(Some(v)))
        .unwrap_or_default();
    for part in [
        seq,
        text(row.get("creation")),
        text(row.get("update_type")),
        text(row.get("ref_doctype")),
        text(row.get("docname")),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    crate::crypto::hex(&h.finalize())
}

/// The identity at `seq` among `rows` (sorted by seq): that of the newest row at or before it.
pub fn identity_in(rows: &[Doc], seq: i64, epoch: &str) -> Option<String> {
    rows.iter()
        .rev()
        .find(|r| r.get("seq").and_then(Value::as_i64).unwrap_or(i64::MAX) <= seq)
        .map(|r| identity(r, epoch))
}

/// Why the consumer's checkpoint `after` with identity `given` is not in this producer's
/// history, or None when it is (or cannot be told: no checkpoint, or no identity yet).
pub async fn changed(
    conn: &mut Conn,
    after: i64,
    given: &str,
    restored: &Restored,
) -> Result<Option<String>> {
    Ok(changed_in(conn, after, given, &restored.id)
        .await?
        .map(|r| restored.name(r)))
}

async fn changed_in(
    conn: &mut Conn,
    after: i64,
    given: &str,
    epoch: &str,
) -> Result<Option<String>> {
    let high = super::update_log::current_seq(conn).await?;
    if after > high {
        return Ok(Some(format!(
            "this site's newest update log is {high}, and the consumer has applied logs up to {after}: this site was restored from an older backup, or its database was replaced"
        )));
    }
    if after == 0 || given.is_empty() {
        return Ok(None);
    }
    let rows = newest_at(conn, after).await?;
    // Logs are pruned oldest first: the pruned identity matters only when none is kept.
    let pruned = match rows.first() {
        Some(_) => None,
        None => store::get_setting(conn, PRUNED_KEY).await?,
    };
    // "seq identity epoch": an identity kept before a restore is of another history.
    let pruned = pruned.as_deref().and_then(|p| p.split_once(' '));
    let here = match (rows.first(), pruned) {
        (Some(row), _) => Some(identity(row, epoch)),
        (None, Some((p, kept))) if p.parse::<i64>().unwrap_or(i64::MAX) <= after => {
            let (id, kept_epoch) = kept.split_once(' ').unwrap_or((kept, ""));
            Some(match kept_epoch == epoch {
                true => id.to_string(),
                false => String::new(),
            })
        }
        (None, Some((p, _))) => {
            return Ok(Some(format!(
                "the consumer's checkpoint {after} is behind update logs this site has pruned (up to {p}): the consumer was restored from an older backup"
            )))
        }
        (None, None) => None,
    };
    Ok(match here {
        Some(id) if id == given => None,
        Some(_) => Some(format!(
            "the update log at seq {after} here is not the one the consumer applied: this site was restored from an older backup, or its database was replaced"
        )),
        None => Some(format!(
            "this site has no update log at or before seq {after}: its database was replaced"
        )),
    })
}

/// The newest log at or before `seq` (what the identity at `seq` is of), as a list of 0 or 1.
async fn newest_at(conn: &mut Conn, seq: i64) -> Result<Vec<Doc>> {
    store::fetch_docs(
        conn,
        r#"SELECT name AS seq, creation, update_type, ref_doctype, docname FROM "tabEvent Update Log" WHERE name <= $1 ORDER BY name DESC LIMIT 1"#,
        &[Param::Int(Some(seq))],
    )
    .await
}

fn row_seq(row: &Doc) -> i64 {
    row.get("seq").and_then(Value::as_i64).unwrap_or(0)
}

/// Before logs up to `upto` are deleted: keeps the identity of the newest of them.
pub async fn keep_pruned(conn: &mut Conn, upto: i64) -> Result<()> {
    let rows = newest_at(conn, upto).await?;
    if let Some(row) = rows.first() {
        let epoch = Restored::read(conn).await?.id;
        let value = format!("{} {} {epoch}", row_seq(row), identity(row, &epoch))
            .trim_end()
            .to_string();
        store::set_setting(conn, PRUNED_KEY, &value).await?;
    }
    Ok(())
}

/// The answer to a pull after `after` whose checkpoint is not in this producer's history: an
/// empty page that carries `history_changed`.
pub fn changed_page(after: i64, reason: &str, newest_seq: i64) -> String {
    let page = super::page::encode(&[], after, false);
    let changed = serde_json::json!({"reason": reason, "newest_seq": newest_seq});
    format!(
        r#"{},"history_changed":{changed}}}"#,
        page.strip_suffix('}').unwrap_or(&page)
    )
}

/// A page body with the identity at its `last_seq` added (before any request echo).
pub fn with_history(body: &str, id: &str) -> String {
    format!(
        r#"{},"history":"{id}"}}"#,
        body.strip_suffix('}').unwrap_or(body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(seq: i64, creation: &str) -> Doc {
        json!({"seq": seq, "creation": creation, "update_type": "Create", "ref_doctype": "Note", "docname": "n"})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_log_minted_again_has_another_identity() {
        let first = row(2, "2026-12-07 08:00:00.000001");
        let again = row(2, "2026-12-07 08:00:00.000002");
        assert_ne!(identity(&first, ""), identity(&again, ""));
        assert_eq!(identity(&first, ""), identity(&first.clone(), ""));
        let rows = vec![row(1, "a"), first.clone()];
        assert_eq!(identity_in(&rows, 5, ""), Some(identity(&first, "")));
        assert_eq!(identity_in(&rows, 1, ""), Some(identity(&rows[0], "")));
        assert_eq!(identity_in(&rows, 0, ""), None);
    }

    #[test]
    fn a_restore_starts_another_history() {
        let log = row(2, "2026-12-07 08:00:00.000001");
        assert_ne!(identity(&log, ""), identity(&log, "r1"));
        assert_ne!(identity(&log, "r1"), identity(&log, "r2"));
    }
}
