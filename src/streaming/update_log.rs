//! The producer's Event Update Log, written in the same transaction as each change.
//!
//! A log is written only for types that have at least one Event Consumer row, and costs one
//! row whatever the number of consumers: who received it is computed from consumer progress.

use crate::error::Result;
use crate::meta::DocType;
use crate::service::diff::{create_payload_json, frappe_json};
use crate::service::documents::{name_text, WriteFlags};
use crate::service::hooks::{Change, ChangeLog, Write};
use crate::site::Site;
use crate::store::{self, Conn, Dialect, Param};
use crate::streaming::Streaming;
use async_trait::async_trait;
use serde_json::{Map, Value};

/// The counter behind update logs' gap-free `seq`: on PostgreSQL every log takes it; on
/// SQLite it is only the floor that deleting logs raises (see `SQLITE_INSERT`).
const SEQ_COUNTER: &str = "event_update_log_seq";

/// The highest `seq` given out so far (the newest log's, or the floor when higher) and the
/// newest log's `creation`.
pub async fn newest(conn: &mut Conn) -> Result<(i64, Option<String>)> {
    // One row, one statement: this runs in every streamed write.
    let rows = store::fetch_values(
        conn,
        r#"SELECT (SELECT current FROM "tabSeries" WHERE name = $1), l.name, l.creation FROM (SELECT 1 AS one) o
           LEFT JOIN (SELECT name, creation FROM "tabEvent Update Log" ORDER BY name DESC LIMIT 1) l ON 1 = 1"#,
        &[Param::text(SEQ_COUNTER)],
    )
    .await?;
    let row = rows.first().map(Vec::as_slice).unwrap_or_default();
    let int = |i: usize| row.get(i).and_then(Value::as_i64).unwrap_or(0);
    let creation = row.get(2).and_then(Value::as_str).map(str::to_string);
    Ok((int(1).max(int(0)), creation))
}

/// The highest `seq` given out so far (committed, or taken in this transaction).
pub async fn current_seq(conn: &mut Conn) -> Result<i64> {
    Ok(newest(conn).await?.0)
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

/// The seq of the first log created after `since`, by bisecting seqs with primary-key look-ups
/// (creation grows with seq: each insert takes the newest log's when the clock is behind it),
/// so the log needs no index on `creation`.
pub async fn first_seq_after(conn: &mut Conn, since: &str) -> Result<Option<i64>> {
    let bounds = store::fetch_docs(
        conn,
        r#"SELECT MIN(name) AS lo, MAX(name) AS hi FROM "tabEvent Update Log""#,
        &[],
    )
    .await?;
    let bound = |k: &str| {
        bounds
            .first()
            .and_then(|r| r.get(k))
            .and_then(Value::as_i64)
    };
    let (Some(mut lo), Some(mut hi)) = (bound("lo"), bound("hi")) else {
        return Ok(None);
    };
    let mut found = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        // The first log at or after `mid` (seqs of deleted logs leave gaps).
        let rows = store::fetch_docs(
            conn,
            r#"SELECT name, creation FROM "tabEvent Update Log" WHERE name >= $1 ORDER BY name LIMIT 1"#,
            &[Param::Int(Some(mid))],
        )
        .await?;
        let Some(r) = rows.first() else { break };
        let seq = r.get("name").and_then(Value::as_i64).unwrap_or(i64::MAX);
        if r.get("creation")
            .and_then(Value::as_str)
            .unwrap_or_default()
            > since
        {
            // No log lies between mid and seq: the answer is seq or below mid.
            found = Some(seq);
            hi = mid - 1;
        } else {
            lo = seq + 1;
        }
    }
    Ok(found)
}

/// Whether `dt` can never be streamed (child tables and the streaming types themselves),
/// known without asking the database.
pub fn never_streamed(dt: &DocType) -> bool {
    dt.istable || dt.module == "Event Streaming"
}

/// A query part, for a `UNION ALL` of `(t, name)` rows a write runs anyway, that answers one
/// row tagged `tag` when the type named by parameter `$param` is streamed: the write then
/// needs no statement of its own to learn it.
pub fn streamed_probe(tag: i64, param: usize) -> String {
    format!(
        r#"SELECT {tag} AS t, CAST(p.ref_doctype AS TEXT) AS name FROM (SELECT ref_doctype FROM "tabEvent Consumer Document Type" WHERE ref_doctype = ${param} LIMIT 1) p"#
    )
}

/// Whether `dt` is streamed: it has consumer rows. `known` is what the write already learned
/// in this transaction (from a [`streamed_probe`]), which an answer read later would only
/// repeat: no lock orders it against a consumer's approval either way.
async fn streamed(conn: &mut Conn, dt: &DocType, known: Option<bool>) -> Result<bool> {
    if never_streamed(dt) {
        return Ok(false);
    }
    if let Some(k) = known {
        return Ok(k);
    }
    // A plain indexed look-up: most writes on most sites are of types nobody streams.
    Ok(store::fetch_scalar(
        conn,
        r#"SELECT 1 FROM "tabEvent Consumer Document Type" WHERE ref_doctype = $1 LIMIT 1"#,
        &[Param::Text(Some(dt.name.clone()))],
    )
    .await?
    .is_some())
}

/// A new update log, as `insert` writes it.
pub struct NewLog<'a> {
    pub update_type: &'a str,
    pub ref_doctype: &'a str,
    pub docname: &'a str,
    pub data: Option<String>,
    pub origin: Option<String>,
    /// Set on snapshot logs, which only that consumer receives.
    pub for_consumer: Option<String>,
}

/// SQLite's insert of a log: the next seq is the newest log's plus one (or the floor's, when
/// higher), read by the insert itself. One writer at a time makes that safe; it is one statement
/// where a read and a write were two, and it writes no counter row, which would be one more
/// page every commit. VALUES, not INSERT ... SELECT: a SELECT from the table being written runs
/// through a temporary table. ($1 the counter's name, $2 the clock.)
const SQLITE_INSERT: &str = r#"INSERT INTO "tabEvent Update Log" (name, seq, creation, modified,
    owner, modified_by, docstatus, idx, update_type, ref_doctype, docname, data, origin, for_consumer)
    VALUES (
    (SELECT MAX(COALESCE((SELECT current FROM "tabSeries" WHERE name = $1), 0),
        COALESCE((SELECT MAX(name) FROM "tabEvent Update Log"), 0)) + 1),
    (SELECT MAX(COALESCE((SELECT current FROM "tabSeries" WHERE name = $1), 0),
        COALESCE((SELECT MAX(name) FROM "tabEvent Update Log"), 0)) + 1),
    MAX($2, COALESCE((SELECT creation FROM "tabEvent Update Log" ORDER BY name DESC LIMIT 1), '')),
    MAX($2, COALESCE((SELECT creation FROM "tabEvent Update Log" ORDER BY name DESC LIMIT 1), '')),
    'Administrator', 'Administrator', 0, 0, $3, $4, $5, $6, $7, $8)"#;

/// The `tabSeries` row holding, on PostgreSQL, the newest log's `creation` in microseconds.
const CLOCK_COUNTER: &str = "event_update_log_clock";

/// PostgreSQL's insert of a log in one statement: under the advisory lock ($11, see
/// [`seq_lock_key`]) it takes the next seq from the counter, whose row lock orders writers
/// until commit too, and raises the clock row to its own time ($1 the counter, $2 the clock
/// as text, $9 the clock row, $10 the clock in microseconds). Its
/// creation is the clock row's value, never before the newest log's: the statement's snapshot
/// is taken before the lock is granted and so may not show the log committed just before,
/// but an update of a locked row always sees that row's newest version. The newest log this
/// snapshot does show is a floor too, for logs written before the clock row existed.
const POSTGRES_INSERT: &str = r#"WITH l AS (SELECT pg_advisory_xact_lock($11) AS held),
    s AS (
      INSERT INTO "tabSeries" (name, current) SELECT $1, 1 FROM l
      ON CONFLICT (name) DO UPDATE SET current = "tabSeries".current + 1 RETURNING current),
    k AS (
      INSERT INTO "tabSeries" (name, current) SELECT $9, $10 FROM s
      ON CONFLICT (name) DO UPDATE SET current = GREATEST("tabSeries".current, excluded.current)
      RETURNING current)
    INSERT INTO "tabEvent Update Log" (name, seq, creation, modified,
    owner, modified_by, docstatus, idx, update_type, ref_doctype, docname, data, origin, for_consumer)
    SELECT s.current, s.current, t.at, t.at, 'Administrator', 'Administrator', 0, 0, $3, $4, $5, $6, $7, $8
    FROM s, k, LATERAL (SELECT GREATEST(
        CASE WHEN k.current = $10 THEN $2
          ELSE to_char(TIMESTAMP '1970-01-01' + k.current * INTERVAL '1 microsecond', 'YYYY-MM-DD HH24:MI:SS.US') END,
        COALESCE((SELECT creation FROM "tabEvent Update Log" ORDER BY name DESC LIMIT 1), '')) AS at) t"#;

/// The transaction-scoped advisory lock every PostgreSQL log insert takes before the counter.
/// It orders writers as the counter row's lock does, but its queue grants one waiter at a
/// time: waiting on the row woke every waiter at each commit (they all wait on the holder's
/// transaction id), and 16 clients wrote fewer logs than 4.
fn seq_lock_key() -> i64 {
    static KEY: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| crate::crypto::lock_key("update_log", SEQ_COUNTER))
}

/// Writes one log with the next seq (gap-free in commit order).
pub async fn insert(site: &Site, conn: &mut Conn, log: NewLog<'_>) -> Result<()> {
    let at = site.clock.now_naive();
    let mut params = vec![
        Param::text(SEQ_COUNTER),
        Param::Text(Some(crate::time::format_datetime(at))),
        Param::text(log.update_type),
        Param::text(log.ref_doctype),
        Param::text(log.docname),
        Param::Text(log.data),
        Param::Text(log.origin),
        Param::Text(log.for_consumer),
    ];
    match conn.dialect() {
        Dialect::Sqlite => store::execute(conn, SQLITE_INSERT, &params)
            .await
            .map(|_| ()),
        // Deferred: it travels with the transaction's COMMIT (or its next statement), so the
        // counter's lock is held while the server runs the two, never across a round trip.
        Dialect::Postgres => {
            params.push(Param::text(CLOCK_COUNTER));
            params.push(Param::Int(Some(at.and_utc().timestamp_micros())));
            params.push(Param::Int(Some(seq_lock_key())));
            store::execute_deferred(conn, POSTGRES_INSERT, params).await
        }
    }
}

/// Writes one log when the written type is streamed; `data` is computed only then.
async fn log(
    w: &Write<'_>,
    conn: &mut Conn,
    update_type: &str,
    docname: &str,
    data: impl FnOnce() -> Option<String>,
    flags: &WriteFlags,
    known: Option<bool>,
) -> Result<bool> {
    if !streamed(conn, w.dt, known).await? {
        return Ok(false);
    }
    let log = NewLog {
        update_type,
        ref_doctype: &w.dt.name,
        docname,
        data: data(),
        origin: flags.origin.clone(),
        for_consumer: None,
    };
    insert(w.site, conn, log).await?;
    Ok(true)
}

/// The update log as the write path's change log: every write of a streamed type logs a
/// Create (the document), an Update (Frappe's diff; a rename carries `old_name` and the
/// document as renamed, which a Frappe consumer is sent as a Delete and a Create) or a Delete,
/// inside the write's transaction.
pub struct UpdateLog;

#[async_trait]
impl ChangeLog for UpdateLog {
    fn known(&self, dt: &DocType) -> Option<bool> {
        never_streamed(dt).then_some(false)
    }

    fn probe(&self, tag: i64, param: usize) -> String {
        streamed_probe(tag, param)
    }

    async fn record(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        change: Change<'_>,
        flags: &WriteFlags,
        probed: Option<bool>,
    ) -> Result<bool> {
        match change {
            Change::Insert(doc) => {
                let name = name_text(&doc["name"]);
                let data = || Some(create_payload_json(doc));
                log(w, conn, "Create", &name, data, flags, probed).await
            }
            Change::Update(docname, d) => {
                // An empty diff must not take a seq (seqs are gap-free).
                if d.is_empty() {
                    return Ok(false);
                }
                if flags.origin.is_none() && !never_streamed(w.dt) {
                    let now = w.site.clock.now();
                    let fields = super::local_edits::touched(d);
                    super::local_edits::record(conn, w.dt, docname, &fields, &now).await?;
                }
                let data = || Some(frappe_json(&d.to_value()));
                log(w, conn, "Update", docname, data, flags, probed).await
            }
            Change::Delete(doc) => {
                let name = name_text(&doc["name"]);
                if !never_streamed(w.dt) {
                    super::local_edits::clear(conn, &w.dt.name, &name, None).await?;
                }
                log(w, conn, "Delete", &name, || None, flags, probed).await
            }
            Change::Rename(before, after) => {
                let old = name_text(&before["name"]);
                let new = name_text(&after["name"]);
                let data = || {
                    let mut changed = Map::new();
                    changed.insert("name".into(), Value::String(new.clone()));
                    let doc: Value = serde_json::from_str(&create_payload_json(after))
                        .expect("a serialized document parses");
                    let data = serde_json::json!({"changed": changed, "added": {}, "removed": {}, "row_changed": {}, "old_name": old, "doc": doc});
                    Some(frappe_json(&data))
                };
                log(w, conn, "Update", &new, data, flags, probed).await
            }
        }
    }

    fn committed(&self, site: &Site) {
        if let Some(me) = site.arc() {
            super::notifier::notify_consumers(me);
        }
    }
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
    site.streaming().acks.flush(site).await?;
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
    // Logs before the first one created after the cutoff (a range of the primary key).
    let before = first_seq_after(&mut tx, &cutoff).await?.unwrap_or(i64::MAX);
    super::history::keep_pruned(&mut tx, (before - 1).min(upto)).await?;
    let deleted = store::execute(
        &mut tx,
        r#"DELETE FROM "tabEvent Update Log" WHERE name < $1 AND name <= $2 AND creation < $3"#,
        &[
            Param::Int(Some(before)),
            Param::Int(Some(upto)),
            Param::Text(Some(cutoff)),
        ],
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
