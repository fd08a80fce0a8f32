//! The store: one relational database per site, SQLite or PostgreSQL, in Frappe's table layout.
//!
//! Everything here speaks SQL and plain JSON values; nothing here knows about HTTP, users or
//! permissions. SQLite runs through rusqlite on the caller's thread (`sqlite.rs`), PostgreSQL
//! through tokio-postgres and a pool (`postgres.rs`); callers see one [`Conn`] and [`Tx`], and the few dialect
//! differences in [`Dialect`].

mod fields;
pub mod files;
mod postgres;
mod raw_sql;
mod rows;
mod schema;
mod select;
mod snapshot;
mod sqlite;

pub use postgres::admin_execute as postgres_admin_execute;
pub use raw_sql::translate_frappe_sql;
pub use rows::{
    delete_child_rows, delete_row, insert_row, insert_row_guarded, insert_rows, load_children,
    load_row, lock_row, row_exists, update_columns, Guard,
};
pub use schema::{
    add_column, create_internal_tables, create_streaming_indexes, create_table, sync_table,
    table_exists,
};
pub use select::{Filter, ListQuery, Op};
pub use snapshot::{restore_snapshot, ServingMark, Snapshot, RESTORED_SETTING, SQLITE_FILE};

use crate::error::Result;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A document or row as JSON fields.
pub type Doc = Map<String, Value>;

/// A JSON object as a document (anything else is an empty one): for documents written as
/// `json!` literals.
pub fn doc_from(v: Value) -> Doc {
    match v {
        Value::Object(m) => m,
        _ => Doc::new(),
    }
}

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Column type for a storage class.
    pub fn column_type(self, storage: crate::meta::Storage) -> &'static str {
        use crate::meta::Storage;
        match (self, storage) {
            (_, Storage::Int) => "BIGINT",
            (Dialect::Sqlite, Storage::Float) => "REAL",
            (Dialect::Postgres, Storage::Float) => "DOUBLE PRECISION",
            _ => "TEXT",
        }
    }

    /// Case-insensitive LIKE, as Frappe on MariaDB behaves.
    pub fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }
}

/// Quotes an identifier for both dialects.
pub fn q(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    push_quoted(&mut out, ident);
    out
}

/// Appends `ident` quoted, as [`q`] writes it.
pub fn push_quoted(out: &mut String, ident: &str) {
    out.push('"');
    if ident.contains('"') {
        out.push_str(&ident.replace('"', "\"\""));
    } else {
        out.push_str(ident);
    }
    out.push('"');
}

/// A site's database: SQLite (one writer, pooled readers) or a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(Arc<sqlite::Db>),
    Postgres(postgres::Pool),
}

/// A database connection: a reader from [`Store::conn`], or the inside of a [`Tx`].
#[derive(Debug)]
pub struct Conn(Inner);

#[derive(Debug)]
enum Inner {
    Sqlite(sqlite::Handle),
    Postgres(postgres::Handle),
    /// A transaction's connection after commit or rollback.
    Done,
}

/// A write transaction; rolled back when dropped without [`Tx::commit`].
#[derive(Debug)]
pub struct Tx {
    conn: Conn,
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Tx {
    /// Commits.
    pub async fn commit(mut self) -> Result<()> {
        match std::mem::replace(&mut self.conn.0, Inner::Done) {
            Inner::Sqlite(h) => match sqlite::execute_batch(h.conn(), "COMMIT") {
                Ok(()) => {
                    h.committed();
                    Ok(())
                }
                Err(e) => {
                    h.roll_back_if_open();
                    Err(e)
                }
            },
            Inner::Postgres(postgres::Handle::Tx(t)) => t.commit().await,
            _ => Ok(()),
        }
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<()> {
        match std::mem::replace(&mut self.conn.0, Inner::Done) {
            Inner::Sqlite(h) => sqlite::execute_batch(h.conn(), "ROLLBACK"),
            Inner::Postgres(postgres::Handle::Tx(t)) => t.rollback().await,
            _ => Ok(()),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // PostgreSQL's transaction rolls itself back when dropped (`postgres::Txn`); SQLite's
        // is ended here, before the writer goes back to the next task.
        if let Inner::Sqlite(h) = &self.conn.0 {
            h.roll_back_if_open();
        }
    }
}

impl Store {
    /// Opens (creating when `create`) the database at `url` (`sqlite://...` or `postgres://...`).
    pub async fn open(url: &str, create: bool) -> Result<Store> {
        let backend = if url.starts_with("postgres") {
            Backend::Postgres(postgres::open(url).await?)
        } else {
            Backend::Sqlite(sqlite::Db::open(url, create)?)
        };
        Ok(Store { backend })
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Begins a write transaction (on SQLite it takes the write lock at once, so concurrent
    /// writers wait instead of failing).
    pub async fn begin(&self) -> Result<Tx> {
        let inner = match &self.backend {
            Backend::Sqlite(db) => {
                let h = db.writer().await;
                sqlite::execute_batch(h.conn(), "BEGIN IMMEDIATE")?;
                Inner::Sqlite(h)
            }
            Backend::Postgres(pool) => Inner::Postgres(postgres::Handle::Tx(postgres::Txn::new(
                postgres::get(pool).await?,
                "BEGIN",
            ))),
        };
        Ok(Tx { conn: Conn(inner) })
    }

    /// A connection for reads (on SQLite it cannot write).
    pub async fn conn(&self) -> Result<Conn> {
        Ok(Conn(match &self.backend {
            Backend::Sqlite(db) => Inner::Sqlite(db.reader().await?),
            Backend::Postgres(pool) => {
                Inner::Postgres(postgres::Handle::Pool(postgres::get(pool).await?))
            }
        }))
    }

    /// Runs one SELECT in a transaction that cannot write, rows read by position.
    pub async fn read_only_select(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
        match &self.backend {
            // Readers are opened query-only.
            Backend::Sqlite(_) => fetch_values(&mut self.conn().await?, sql, params).await,
            Backend::Postgres(pool) => {
                let tx = postgres::Txn::new(postgres::get(pool).await?, "BEGIN READ ONLY");
                let mut h = postgres::Handle::Tx(tx);
                let rows = postgres::fetch_values(&mut h, sql, params).await;
                if let postgres::Handle::Tx(tx) = h {
                    tx.rollback().await?;
                }
                rows
            }
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close(),
            Backend::Postgres(pool) => pool.close(),
        }
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        match self.conn().await {
            Ok(mut c) => fetch_values(&mut c, "SELECT 1", &[]).await.is_ok(),
            Err(_) => false,
        }
    }
}

impl Conn {
    /// The SQL dialect of the database behind this connection.
    pub fn dialect(&self) -> Dialect {
        match self.0 {
            Inner::Postgres(_) => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    /// Keeps a PostgreSQL connection out of the pool (it may hold a session lock).
    pub fn detach(self) {
        if let Inner::Postgres(h) = self.0 {
            h.detach();
        }
    }
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:****{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A value bound to a statement, typed by its column's storage.
#[derive(Debug, Clone)]
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
}

impl Param {
    /// A text value.
    pub fn text(s: &str) -> Param {
        Param::Text(Some(s.to_string()))
    }

    /// Converts a JSON value for a column of the given storage.
    pub fn from_value(v: &Value, storage: crate::meta::Storage) -> Param {
        use crate::meta::Storage;
        match storage {
            Storage::Int => Param::Int(match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                Value::Bool(b) => Some(*b as i64),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }),
            Storage::Float => Param::Float(match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.parse().ok(),
                Value::Bool(b) => Some(*b as i64 as f64),
                _ => None,
            }),
            _ => Param::Text(match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }),
        }
    }
}

/// Runs a query and reads every row as JSON.
pub async fn fetch_docs(conn: &mut Conn, sql: &str, params: &[Param]) -> Result<Vec<Doc>> {
    match &mut conn.0 {
        Inner::Sqlite(h) => sqlite::fetch_docs(h.conn(), sql, params),
        Inner::Postgres(h) => postgres::fetch_docs(h, sql, params).await,
        Inner::Done => Err(done()),
    }
}

/// Runs a query and reads every row as values by position (columns may share a name).
pub async fn fetch_values(conn: &mut Conn, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
    match &mut conn.0 {
        Inner::Sqlite(h) => sqlite::fetch_values(h.conn(), sql, params),
        Inner::Postgres(h) => postgres::fetch_values(h, sql, params).await,
        Inner::Done => Err(done()),
    }
}

/// The first column of the first row, if any.
pub async fn fetch_scalar(conn: &mut Conn, sql: &str, params: &[Param]) -> Result<Option<Value>> {
    Ok(fetch_values(conn, sql, params)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next()))
}

/// Runs a statement; returns the rows it changed.
pub async fn execute(conn: &mut Conn, sql: &str, params: &[Param]) -> Result<u64> {
    match &mut conn.0 {
        Inner::Sqlite(h) => sqlite::execute(h.conn(), sql, params),
        Inner::Postgres(h) => postgres::execute(h, sql, params).await,
        Inner::Done => Err(done()),
    }
}

/// Runs a statement whose outcome nobody waits for: in a PostgreSQL transaction it travels
/// with the transaction's next statement or its COMMIT (a round trip fewer, and a lock it takes
/// is held for no round trip of its own), and a failure of it fails that statement or the
/// commit; elsewhere it runs at once.
pub async fn execute_deferred(conn: &mut Conn, sql: &str, params: Vec<Param>) -> Result<()> {
    match &mut conn.0 {
        Inner::Sqlite(h) => sqlite::execute(h.conn(), sql, &params).map(|_| ()),
        Inner::Postgres(h) => postgres::execute_deferred(h, sql, params).await,
        Inner::Done => Err(done()),
    }
}

/// Inserts rows into `table` (a quoted name), each a value per column of `columns` (quoted
/// names). SQLite runs one prepared single-row statement per row: no SQL text to build, parse
/// or look up per row, and faster than a multi-row VALUES. PostgreSQL gets multi-row
/// statements, one round trip per chunk.
pub async fn insert_many(
    conn: &mut Conn,
    table: &str,
    columns: &[String],
    rows: &[Vec<Param>],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cols = columns.join(", ");
    match &mut conn.0 {
        Inner::Sqlite(h) => {
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({cols}) VALUES ({})",
                placeholders.join(", ")
            );
            sqlite::execute_each(h.conn(), &sql, rows)
        }
        Inner::Postgres(h) => {
            let per_stmt = (30_000 / columns.len().max(1)).max(1);
            for chunk in rows.chunks(per_stmt) {
                let mut params = Vec::with_capacity(chunk.len() * columns.len());
                let mut tuples = Vec::with_capacity(chunk.len());
                for row in chunk {
                    let ph: Vec<String> = (1..=row.len())
                        .map(|i| format!("${}", params.len() + i))
                        .collect();
                    tuples.push(format!("({})", ph.join(", ")));
                    params.extend(row.iter().cloned());
                }
                let sql = format!("INSERT INTO {table} ({cols}) VALUES {}", tuples.join(", "));
                postgres::execute(h, &sql, &params).await?;
            }
            Ok(())
        }
        Inner::Done => Err(done()),
    }
}

/// Runs one or more statements that take no parameters (schema changes).
pub async fn execute_batch(conn: &mut Conn, sql: &str) -> Result<()> {
    match &mut conn.0 {
        Inner::Sqlite(h) => sqlite::execute_batch(h.conn(), sql),
        Inner::Postgres(h) => postgres::execute_batch(h, sql).await,
        Inner::Done => Err(done()),
    }
}

fn done() -> crate::Error {
    crate::Error::Internal("the transaction has ended".into())
}

/// Runs `work` inside a savepoint of the caller's transaction: kept when it succeeds, undone
/// when it fails (the transaction goes on either way).
pub async fn in_savepoint<T>(
    conn: &mut Conn,
    work: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<Result<T>> {
    execute_batch(conn, "SAVEPOINT sp").await?;
    let out = work(conn).await;
    if out.is_err() {
        execute_batch(conn, "ROLLBACK TO SAVEPOINT sp").await?;
    }
    execute_batch(conn, "RELEASE SAVEPOINT sp").await?;
    Ok(out)
}

/// Takes the next value of a named counter in `tabSeries`, inside the caller's transaction (the
/// row stays locked until commit, so values are gap-free in commit order).
pub async fn next_counter(conn: &mut Conn, key: &str) -> Result<i64> {
    const STEP: &str = r#"INSERT INTO "tabSeries" (name, current) VALUES ($1, 1)
           ON CONFLICT (name) DO UPDATE SET current = "tabSeries".current + 1"#;
    let v = match conn.dialect() {
        // One round trip on PostgreSQL, where the row lock is held from here to commit.
        Dialect::Postgres => fetch_scalar(
            conn,
            &format!("{STEP} RETURNING current"),
            &[Param::text(key)],
        )
        .await?
        .and_then(|v| v.as_i64())
        .unwrap_or(0),
        // Two statements, not one with RETURNING: SQLite runs RETURNING through a temporary
        // table that it opens and closes each time, which cost a streamed write 5% of its CPU.
        Dialect::Sqlite => {
            execute(conn, STEP, &[Param::text(key)]).await?;
            counter_value(conn, key).await?
        }
    };
    if v == 0 {
        return Err(crate::Error::Internal(format!(
            "counter {key} returned no value"
        )));
    }
    Ok(v)
}

/// The current value of a named counter in `tabSeries` (0 when it was never taken).
pub async fn counter_value(conn: &mut Conn, key: &str) -> Result<i64> {
    let v = fetch_scalar(
        conn,
        r#"SELECT current FROM "tabSeries" WHERE name = $1"#,
        &[Param::text(key)],
    )
    .await?;
    Ok(v.and_then(|v| v.as_i64()).unwrap_or(0))
}

/// Reads a key of the site's internal settings table.
pub async fn get_setting(conn: &mut Conn, key: &str) -> Result<Option<String>> {
    let v = fetch_scalar(
        conn,
        r#"SELECT value FROM "__settings" WHERE key = $1"#,
        &[Param::text(key)],
    )
    .await?;
    Ok(v.and_then(|v| v.as_str().map(str::to_string)))
}

/// Writes a key of the site's internal settings table.
pub async fn set_setting(conn: &mut Conn, key: &str, value: &str) -> Result<()> {
    execute(
        conn,
        r#"INSERT INTO "__settings" (key, value) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET value = excluded.value"#,
        &[Param::text(key), Param::text(value)],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("t.sqlite3").display());
        let store = Store::open(&url, true).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        execute_batch(&mut tx, "CREATE TABLE t (a TEXT, b BIGINT)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store
    }

    fn count(rows: Vec<Vec<Value>>) -> i64 {
        rows[0][0].as_i64().unwrap()
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_frees_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        {
            let mut tx = store.begin().await.unwrap();
            execute(
                &mut tx,
                "INSERT INTO t (a) VALUES ($1)",
                &[Param::text("lost")],
            )
            .await
            .unwrap();
        }
        // The writer is free again (no deadlock) and nothing was kept.
        let mut tx = store.begin().await.unwrap();
        execute(
            &mut tx,
            "INSERT INTO t (a) VALUES ($1)",
            &[Param::text("kept")],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let rows = fetch_values(&mut store.conn().await.unwrap(), "SELECT a FROM t", &[])
            .await
            .unwrap();
        assert_eq!(rows, vec![vec![Value::from("kept")]]);
    }

    #[tokio::test]
    async fn reads_cannot_write_and_placeholders_bind_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let mut conn = store.conn().await.unwrap();
        let refused = execute(&mut conn, "INSERT INTO t (a) VALUES ('x')", &[]).await;
        assert!(refused.is_err(), "a read connection wrote");
        let mut tx = store.begin().await.unwrap();
        // `$2` before `$1`, `$1` twice, and a `$1` inside a string literal that is not one.
        execute(
            &mut tx,
            "INSERT INTO t (b, a) VALUES ($2, $1 || '$1'), ($2 + 1, $1)",
            &[Param::text("v"), Param::Int(Some(7))],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let rows = fetch_values(&mut conn, "SELECT a, b FROM t ORDER BY b", &[])
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Value::from("v$1"), Value::from(7)],
                vec![Value::from("v"), Value::from(8)]
            ]
        );
        let n = fetch_values(&mut conn, "SELECT COUNT(*) FROM t", &[])
            .await
            .unwrap();
        assert_eq!(count(n), 2);
    }
}
