//! The producer's Event Update Log, written in the same transaction as each change.
//!
//! A log is written only for types that have at least one Event Consumer row, and costs one
//! row whatever the number of consumers: who received it is computed from consumer progress.

use super::diff::{create_payload_json, frappe_json, Diff};
use crate::error::Result;
use crate::meta::{DocType, Registry};
use crate::service::documents::{name_text, WriteFlags};
use crate::site::Site;
use crate::store::{self, Conn, Dialect, Doc, Param};
use serde_json::{Map, Value};

/// The counter behind update logs' gap-free `seq`: on PostgreSQL every log takes it; on
/// SQLite it is only the floor that deleting logs raises (see `next_seq`).
const SEQ_COUNTER: &str = "event_update_log_seq";

/// The highest `seq` given out so far (committed, or taken in this transaction).
pub async fn current_seq(conn: &mut Conn) -> Result<i64> {
    let newest = store::fetch_scalar(conn, r#"SELECT MAX(name) FROM "tabEvent Update Log""#, &[])
        .await?
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    Ok(newest.max(store::counter_value(conn, SEQ_COUNTER).await?))
}

/// Takes the next `seq`, gap-free in commit order.
pub async fn next_seq(conn: &mut Conn) -> Result<i64> {
    match conn.dialect() {
        // One writer at a time: the newest log's seq plus one. It costs no page of its own (the
        // insert writes that leaf anyway), where a counter row is one more page every commit.
        Dialect::Sqlite => Ok(current_seq(conn).await? + 1),
        // Concurrent writers: the counter's row lock orders them until commit.
        Dialect::Postgres => store::next_counter(conn, SEQ_COUNTER).await,
    }
}

/// Raises the counter to the highest `seq` before logs are deleted, so that no seq a consumer
/// may have seen is ever given out again.
pub async fn keep_seq_floor(conn: &mut Conn) -> Result<()> {
    let high = current_seq(conn).await?;
    store::execute(
        conn,
        r#"INSERT INTO "tabSeries" (name, current) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET current = CASE WHEN excluded.current > "tabSeries".current
             THEN excluded.current ELSE "tabSeries".current END"#,
        &[Param::text(SEQ_COUNTER), Param::Int(Some(high))],
    )
    .await?;
    Ok(())
}

/// Takes the next `seq` when `dt` has consumer rows (the row lock on the counter keeps seqs
/// gap-free in commit order); `None` when the type is not streamed.
async fn claim_seq(conn: &mut Conn, dt: &DocType) -> Result<Option<i64>> {
    if dt.istable || dt.module == "Event Streaming" {
        return Ok(None);
    }
    // A plain indexed look-up first: most writes on most sites are of types nobody streams.
    let streamed = store::fetch_scalar(
        conn,
        r#"SELECT 1 FROM "tabEvent Consumer Document Type" WHERE ref_doctype = $1 LIMIT 1"#,
        &[Param::Text(Some(dt.name.clone()))],
    )
    .await?
    .is_some();
    if !streamed {
        return Ok(None);
    }
    next_seq(conn).await.map(Some)
}

/// Takes a seq (when `dt` is streamed) and writes one log; `data` is computed only then.
async fn log(
    site: &Site,
    conn: &mut Conn,
    update_type: &str,
    dt: &DocType,
    docname: &str,
    data: impl FnOnce() -> Option<String>,
    flags: &WriteFlags,
) -> Result<bool> {
    let Some(seq) = claim_seq(conn, dt).await? else {
        return Ok(false);
    };
    let now = site.clock.now();
    let sql = r#"INSERT INTO "tabEvent Update Log" (name, owner, creation, modified, modified_by, docstatus, idx,
        update_type, ref_doctype, docname, data, seq, origin, for_consumer)
        VALUES ($1, 'Administrator', $2, $2, 'Administrator', 0, 0, $3, $4, $5, $6, $1, $7, NULL)"#;
    store::execute(
        conn,
        sql,
        &[
            Param::Int(Some(seq)),
            Param::Text(Some(now)),
            Param::Text(Some(update_type.into())),
            Param::Text(Some(dt.name.clone())),
            Param::Text(Some(docname.into())),
            Param::Text(data()),
            Param::Text(flags.origin.clone()),
        ],
    )
    .await?;
    Ok(true)
}

/// Logs a Create.
pub async fn record_insert(
    site: &Site,
    conn: &mut Conn,
    _reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    flags: &WriteFlags,
) -> Result<bool> {
    let name = name_text(&doc["name"]);
    let data = || Some(create_payload_json(doc));
    log(site, conn, "Create", dt, &name, data, flags).await
}

/// Logs an Update with the diff the writer computed (nothing when nothing changed).
pub async fn record_update(
    site: &Site,
    conn: &mut Conn,
    dt: &DocType,
    docname: &str,
    d: &Diff,
    flags: &WriteFlags,
) -> Result<bool> {
    // An empty diff must not take a seq (seqs are gap-free).
    if d.is_empty() {
        return Ok(false);
    }
    let data = || Some(frappe_json(&d.to_value()));
    log(site, conn, "Update", dt, docname, data, flags).await
}

/// Logs a Delete (no data).
pub async fn record_delete(
    site: &Site,
    conn: &mut Conn,
    _reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    flags: &WriteFlags,
) -> Result<bool> {
    let name = name_text(&doc["name"]);
    log(site, conn, "Delete", dt, &name, || None, flags).await
}

/// Logs a rename as an Update of `name` carrying `old_name`.
pub async fn record_rename(
    site: &Site,
    conn: &mut Conn,
    _reg: &Registry,
    dt: &DocType,
    before: &Doc,
    after: &Doc,
    flags: &WriteFlags,
) -> Result<bool> {
    let old = name_text(&before["name"]);
    let new = name_text(&after["name"]);
    let data = || {
        let mut changed = Map::new();
        changed.insert("name".into(), Value::String(new.clone()));
        let data = serde_json::json!({"changed": changed, "added": {}, "removed": {}, "row_changed": {}, "old_name": old});
        Some(frappe_json(&data))
    };
    log(site, conn, "Update", dt, &new, data, flags).await
}

/// Deletes update logs older than the retention period that every consumer with approved rows
/// has acknowledged (so no consumer is ever left behind the oldest kept log; one approved later
/// gets the snapshot). Returns how many were deleted.
pub async fn prune(site: &Site) -> Result<u64> {
    let days = site.config.update_log_retention_days;
    if days <= 0.0 {
        return Ok(0);
    }
    let cutoff = (site.clock.now_naive()
        - chrono::Duration::milliseconds((days * 86_400_000.0) as i64))
    .format(crate::time::DATETIME_FORMAT)
    .to_string();
    let mut tx = site.store.begin().await?;
    let acked = store::fetch_docs(
        &mut tx,
        r#"SELECT MIN(COALESCE(p.acked_seq, 0)) AS acked FROM
             (SELECT DISTINCT parent FROM "tabEvent Consumer Document Type" WHERE status = 'Approved' AND COALESCE(unsubscribed, 0) = 0) c
             LEFT JOIN "__consumer_progress" p ON p.consumer = c.parent"#,
        &[],
    )
    .await?;
    let upto = match acked.first().and_then(|r| r.get("acked")) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        // No approved consumer: nobody waits for any log.
        _ => current_seq(&mut tx).await?,
    };
    keep_seq_floor(&mut tx).await?;
    let deleted = store::execute(
        &mut tx,
        r#"DELETE FROM "tabEvent Update Log" WHERE creation < $1 AND name <= $2"#,
        &[Param::Text(Some(cutoff)), Param::Int(Some(upto))],
    )
    .await?;
    if deleted > 0 {
        store::execute(
            &mut tx,
            r#"DELETE FROM "__condition_deliveries" WHERE seq < COALESCE((SELECT MIN(name) FROM "tabEvent Update Log"), $1)"#,
            &[Param::Int(Some(i64::MAX))],
        )
        .await?;
    }
    tx.commit().await?;
    if deleted > 0 {
        tracing::info!(deleted, "pruned update logs past retention");
    }
    Ok(deleted)
}
