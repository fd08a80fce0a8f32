//! Tables for document types, and the site's internal tables.

use super::{execute_batch, fetch_values, q, Conn, Dialect, Param};
use crate::error::Result;
use crate::meta::{DocField, DocType};

/// Creates the table of a document type with its indexes (no-op when it exists).
pub async fn create_table(conn: &mut Conn, dialect: Dialect, dt: &DocType) -> Result<()> {
    if dt.issingle {
        return Ok(());
    }
    let name_type = match (dialect, dt.column_storage("name")) {
        // SQLite keeps an INTEGER PRIMARY KEY as the row id itself, without a second B-tree.
        (Dialect::Sqlite, crate::meta::Storage::Int) => "INTEGER",
        (_, storage) => dialect.column_type(storage),
    };
    let mut cols = vec![
        format!("name {name_type} PRIMARY KEY"),
        "owner TEXT".into(),
        "creation TEXT".into(),
        "modified TEXT".into(),
        "modified_by TEXT".into(),
        "docstatus BIGINT NOT NULL DEFAULT 0".into(),
        "idx BIGINT NOT NULL DEFAULT 0".into(),
    ];
    if dt.istable {
        cols.extend([
            "parent TEXT".into(),
            "parentfield TEXT".into(),
            "parenttype TEXT".into(),
        ]);
    }
    for f in dt.data_fields() {
        cols.push(format!(
            "{} {}",
            q(&f.fieldname),
            dialect.column_type(f.fieldtype.storage())
        ));
    }
    let table = dt.table();
    execute_batch(
        conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            q(&table),
            cols.join(", ")
        ),
    )
    .await?;
    // Lists sort by `modified` unless the type names another field (which then has its own
    // index), and child rows are never listed; an index nobody reads only slows every write.
    if !dt.istable && (dt.sort_field.is_empty() || dt.sort_field == "modified") {
        create_index(conn, &table, "modified", false).await?;
    }
    if dt.istable {
        create_index(conn, &table, "parent", false).await?;
    }
    for f in dt.data_fields() {
        create_field_indexes(conn, &table, f).await?;
    }
    Ok(())
}

async fn create_field_indexes(conn: &mut Conn, table: &str, f: &DocField) -> Result<()> {
    if f.unique {
        create_index(conn, table, &f.fieldname, true).await?;
    }
    Ok(())
}

async fn create_index(conn: &mut Conn, table: &str, column: &str, unique: bool) -> Result<()> {
    let index = format!("{table}_{column}_{}", if unique { "uniq" } else { "idx" });
    execute_batch(
        conn,
        &format!(
            "CREATE {} INDEX IF NOT EXISTS {} ON {} ({})",
            if unique { "UNIQUE" } else { "" },
            q(&index),
            q(table),
            q(column)
        ),
    )
    .await?;
    Ok(())
}

/// The columns of a table (none when there is no such table).
async fn columns(conn: &mut Conn, dialect: Dialect, table: &str) -> Result<Vec<String>> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT name FROM pragma_table_info($1)",
        Dialect::Postgres => "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
    };
    Ok(fetch_values(conn, sql, &[Param::Text(Some(table.into()))])
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next()?.as_str().map(str::to_string))
        .collect())
}

/// Adds one field's column (and unique index) to an existing table. A column left by a field
/// of that name deleted earlier (columns are kept, as in Frappe) is taken again as it is.
pub async fn add_column(
    conn: &mut Conn,
    dialect: Dialect,
    dt: &DocType,
    f: &DocField,
) -> Result<()> {
    if !f.has_column() || dt.issingle {
        return Ok(());
    }
    let table = dt.table();
    if columns(conn, dialect, &table).await?.contains(&f.fieldname) {
        return create_field_indexes(conn, &table, f).await;
    }
    execute_batch(
        conn,
        &format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            q(&table),
            q(&f.fieldname),
            dialect.column_type(f.fieldtype.storage())
        ),
    )
    .await?;
    create_field_indexes(conn, &table, f).await
}

/// True when the database has a table of that name.
pub async fn table_exists(conn: &mut Conn, dialect: Dialect, table: &str) -> Result<bool> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
        Dialect::Postgres => "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1",
    };
    Ok(!fetch_values(conn, sql, &[Param::Text(Some(table.into()))])
        .await?
        .is_empty())
}

/// Brings a built-in type's table up to its current definition: creates it, or adds the
/// columns a newer version of the type has.
pub async fn sync_table(conn: &mut Conn, dialect: Dialect, dt: &DocType) -> Result<()> {
    if dt.issingle {
        return Ok(());
    }
    let existing = columns(conn, dialect, &dt.table()).await?;
    if existing.is_empty() {
        return create_table(conn, dialect, dt).await;
    }
    for f in dt.data_fields() {
        if !existing.iter().any(|c| c == &f.fieldname) {
            add_column(conn, dialect, dt, f).await?;
        }
    }
    Ok(())
}

/// Indexes the streaming hot paths need beyond those every table gets. The update log has none
/// beyond its primary key: each index is one more page written by every streamed commit, and
/// the log is read by seq (`seq` equals `name`), by time through a bisection of seqs
/// (`first_seq_after`), and by document only when a snapshot is written (one grouped pass).
pub async fn create_streaming_indexes(conn: &mut Conn) -> Result<()> {
    let stmts = [
        r#"CREATE INDEX IF NOT EXISTS "tabEvent Sync Log_doc" ON "tabEvent Sync Log" (event_producer, ref_doctype, producer_doc)"#,
        // Only Failed entries are looked up by status (retries, a page's blocked documents,
        // the dashboard): a partial index, which the Synced entry of every applied update
        // does not touch (one page less in each consumer commit).
        r#"DROP INDEX IF EXISTS "tabEvent Sync Log_retry""#,
        r#"CREATE INDEX IF NOT EXISTS "tabEvent Sync Log_failed" ON "tabEvent Sync Log" (event_producer, next_retry) WHERE status = 'Failed'"#,
        r#"CREATE INDEX IF NOT EXISTS "tabEvent Consumer Document Type_ref" ON "tabEvent Consumer Document Type" (ref_doctype)"#,
    ];
    for s in stmts {
        execute_batch(conn, s).await?;
    }
    Ok(())
}

/// Creates the tables that are not document types: counters, singles, secrets, sessions.
pub async fn create_internal_tables(conn: &mut Conn) -> Result<()> {
    let stmts = [
        r#"CREATE TABLE IF NOT EXISTS "tabSeries" (name TEXT PRIMARY KEY, current BIGINT NOT NULL DEFAULT 0)"#,
        r#"CREATE TABLE IF NOT EXISTS "tabSingles" (doctype TEXT NOT NULL, field TEXT NOT NULL, value TEXT, PRIMARY KEY (doctype, field))"#,
        r#"CREATE TABLE IF NOT EXISTS "__Auth" (doctype TEXT NOT NULL, name TEXT NOT NULL, fieldname TEXT NOT NULL, password TEXT NOT NULL, encrypted BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (doctype, name, fieldname))"#,
        r#"CREATE TABLE IF NOT EXISTS "__sessions" (sid_hash TEXT PRIMARY KEY, "user" TEXT NOT NULL, csrf_token TEXT, expires_at TEXT NOT NULL, created TEXT NOT NULL)"#,
        r#"CREATE TABLE IF NOT EXISTS "__login_failures" (key TEXT NOT NULL, at BIGINT NOT NULL)"#,
        r#"CREATE INDEX IF NOT EXISTS "__login_failures_key" ON "__login_failures" (key, at)"#,
        r#"CREATE TABLE IF NOT EXISTS "__settings" (key TEXT PRIMARY KEY, value TEXT NOT NULL)"#,
        r#"CREATE TABLE IF NOT EXISTS "__consumer_progress" (consumer TEXT PRIMARY KEY, acked_seq BIGINT NOT NULL)"#,
        r#"CREATE TABLE IF NOT EXISTS "__consumer_type_state" (consumer TEXT NOT NULL, ref_doctype TEXT NOT NULL, approved_after_seq BIGINT NOT NULL, PRIMARY KEY (consumer, ref_doctype))"#,
        r#"CREATE TABLE IF NOT EXISTS "__consumer_sent" (consumer TEXT NOT NULL, ref_doctype TEXT NOT NULL, docname TEXT NOT NULL, sent_seq BIGINT NOT NULL, unsent_seq BIGINT, PRIMARY KEY (consumer, ref_doctype, docname))"#,
        // Sites made before sends were recorded with their seq: what they sent counts as
        // sent before every log.
        r#"CREATE TABLE IF NOT EXISTS "__consumer_sent_docs" (consumer TEXT NOT NULL, ref_doctype TEXT NOT NULL, docname TEXT NOT NULL, PRIMARY KEY (consumer, ref_doctype, docname))"#,
        r#"INSERT INTO "__consumer_sent" (consumer, ref_doctype, docname, sent_seq) SELECT consumer, ref_doctype, docname, 0 FROM "__consumer_sent_docs" WHERE 1 = 1 ON CONFLICT DO NOTHING"#,
        r#"DROP TABLE "__consumer_sent_docs""#,
        r#"CREATE TABLE IF NOT EXISTS "__condition_deliveries" (consumer TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (consumer, seq))"#,
        // Fields of documents changed on this site (not by a producer) since the producer's
        // version was last received: what an incoming change must not overwrite silently.
        r#"CREATE TABLE IF NOT EXISTS "__local_edits" (ref_doctype TEXT NOT NULL, docname TEXT NOT NULL, fieldname TEXT NOT NULL, since TEXT NOT NULL, PRIMARY KEY (ref_doctype, docname, fieldname))"#,
        // Linked documents held here that did not come from a producer, compared once with
        // that producer's copy (`differs` is null when they agree).
        r#"CREATE TABLE IF NOT EXISTS "__dependency_checks" (producer TEXT NOT NULL, ref_doctype TEXT NOT NULL, docname TEXT NOT NULL, differs TEXT, noted BIGINT NOT NULL DEFAULT 0, checked_at TEXT NOT NULL, PRIMARY KEY (producer, ref_doctype, docname))"#,
        // Documents a consumer's condition raised on (at its last judging), held back until
        // the condition passes them or is corrected.
        r#"CREATE TABLE IF NOT EXISTS "__condition_failures" (consumer TEXT NOT NULL, ref_doctype TEXT NOT NULL, docname TEXT NOT NULL, error TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (consumer, ref_doctype, docname))"#,
        // Conflicts resolved by keeping both: the producer's document lives here under another
        // name, which its later updates follow.
        r#"CREATE TABLE IF NOT EXISTS "__kept_both" (producer TEXT NOT NULL, ref_doctype TEXT NOT NULL, remote_name TEXT NOT NULL, local_name TEXT NOT NULL, PRIMARY KEY (producer, ref_doctype, remote_name))"#,
        // What this site found when it last checked what a consumer holds (one that pulls by
        // time, Frappe, verifies nothing itself); `by_time` marks such consumers.
        r#"CREATE TABLE IF NOT EXISTS "__consumer_verification" (consumer TEXT PRIMARY KEY, by_time BIGINT NOT NULL DEFAULT 0, verified_at TEXT, documents BIGINT, differences BIGINT, report TEXT, in_step_at TEXT)"#,
        r#"CREATE TABLE IF NOT EXISTS "__file_chunks" (content_hash TEXT NOT NULL, n BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (content_hash, n))"#,
    ];
    for s in stmts {
        execute_batch(conn, s).await?;
    }
    Ok(())
}
