//! The store: one relational database per site, SQLite or PostgreSQL, in Frappe's table layout.
//!
//! Everything here speaks SQL and plain JSON values; nothing here knows about HTTP, users or
//! permissions. Both backends go through `sqlx::Any`, with the few dialect differences in
//! [`Dialect`].

mod raw_sql;
mod rows;
mod schema;
mod select;

pub use raw_sql::translate_frappe_sql;
pub use rows::{
    delete_child_rows, delete_row, insert_row, insert_rows, load_children, load_row, row_exists,
    update_columns,
};
pub use schema::{
    add_column, create_internal_tables, create_streaming_indexes, create_table, sync_table,
};
pub use select::{Filter, ListQuery, Op};

use crate::error::Result;
use serde_json::{Map, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow, AnyTypeInfoKind};
use sqlx::{AnyConnection, AnyPool, Column, Row, ValueRef};
use std::str::FromStr;
use std::time::Duration;

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
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A site's database connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

/// A write transaction.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

impl Store {
    /// Opens (creating when `create`) the database at `url` (`sqlite://...` or `postgres://...`).
    pub async fn open(url: &str, create: bool) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let url = match dialect {
            Dialect::Sqlite if create => format!("{url}?mode=rwc"),
            Dialect::Sqlite => format!("{url}?mode=rw"),
            Dialect::Postgres => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| crate::Error::Validation(format!("bad database URL: {e}")))?;
        // One direct connection first, so a wrong URL fails at once instead of after the
        // pool's acquire timeout.
        {
            use sqlx::Connection;
            let conn = AnyConnection::connect_with(&opts).await.map_err(|e| {
                crate::Error::Validation(format!("cannot open database {}: {e}", redact(&url)))
            })?;
            conn.close().await.ok();
        }
        let max = if dialect == Dialect::Sqlite { 8 } else { 10 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                             PRAGMA busy_timeout=30000; PRAGMA foreign_keys=OFF;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| {
                crate::Error::Validation(format!("cannot open database {}: {e}", redact(&url)))
            })?;
        Ok(Store { pool, dialect })
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Begins a write transaction (on SQLite it takes the write lock at once, so concurrent
    /// writers wait instead of failing).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Runs one SELECT in a transaction that cannot write, rows read by position.
    pub async fn read_only_select(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>> {
        let mut tx = match self.dialect {
            Dialect::Sqlite => {
                let mut tx = self.pool.begin_with("BEGIN DEFERRED").await?;
                execute(&mut tx, "PRAGMA query_only = ON", &[]).await?;
                tx
            }
            Dialect::Postgres => self.pool.begin_with("BEGIN READ ONLY").await?,
        };
        let rows = bind_all(sqlx::query(sql), params).fetch_all(&mut *tx).await;
        if self.dialect == Dialect::Sqlite {
            // The pragma belongs to the connection, which goes back to the pool.
            execute(&mut tx, "PRAGMA query_only = OFF", &[]).await?;
        }
        tx.rollback().await?;
        rows?.iter().map(row_to_values).collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
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

/// Reads a row into JSON by the runtime type of each value.
pub fn row_to_doc(row: &AnyRow) -> Result<Doc> {
    let mut m = Map::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        m.insert(col.name().to_string(), cell(row, i)?);
    }
    Ok(m)
}

/// Reads a row into JSON values by position (columns may share a name).
pub fn row_to_values(row: &AnyRow) -> Result<Vec<Value>> {
    (0..row.columns().len()).map(|i| cell(row, i)).collect()
}

fn cell(row: &AnyRow, i: usize) -> Result<Value> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().kind() {
        AnyTypeInfoKind::Bool => Value::from(row.try_get::<bool, _>(i)? as i64),
        AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => {
            Value::from(row.try_get::<i64, _>(i)?)
        }
        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
            let f = row.try_get::<f64, _>(i)?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        AnyTypeInfoKind::Blob => {
            Value::String(String::from_utf8_lossy(&row.try_get::<Vec<u8>, _>(i)?).into())
        }
        _ => Value::String(row.try_get::<String, _>(i)?),
    })
}

/// A value bound to a statement, typed by its column's storage.
#[derive(Debug, Clone)]
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
}

impl Param {
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

/// Binds params in order to a query.
pub fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        query = match p {
            Param::Text(v) => query.bind(v.as_deref()),
            Param::Int(v) => query.bind(*v),
            Param::Float(v) => query.bind(*v),
        };
    }
    query
}

/// Runs a query and reads every row as JSON.
pub async fn fetch_docs(conn: &mut AnyConnection, sql: &str, params: &[Param]) -> Result<Vec<Doc>> {
    let rows = bind_all(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter().map(row_to_doc).collect()
}

/// Runs a statement.
pub async fn execute(conn: &mut AnyConnection, sql: &str, params: &[Param]) -> Result<u64> {
    Ok(bind_all(sqlx::query(sql), params)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Takes the next value of a named counter in `tabSeries`, inside the caller's transaction (the
/// row stays locked until commit, so values are gap-free in commit order).
pub async fn next_counter(conn: &mut AnyConnection, key: &str) -> Result<i64> {
    let row = sqlx::query(
        r#"INSERT INTO "tabSeries" (name, current) VALUES ($1, 1)
           ON CONFLICT (name) DO UPDATE SET current = "tabSeries".current + 1 RETURNING current"#,
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// The current value of a named counter in `tabSeries` (0 when it was never taken).
pub async fn counter_value(conn: &mut AnyConnection, key: &str) -> Result<i64> {
    let row = sqlx::query(r#"SELECT current FROM "tabSeries" WHERE name = $1"#)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64, _>(0))
        .transpose()?
        .unwrap_or(0))
}

/// Reads a key of the site's internal settings table.
pub async fn get_setting(conn: &mut AnyConnection, key: &str) -> Result<Option<String>> {
    let row = sqlx::query(r#"SELECT value FROM "__settings" WHERE key = $1"#)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
}

/// Writes a key of the site's internal settings table.
pub async fn set_setting(conn: &mut AnyConnection, key: &str, value: &str) -> Result<()> {
    sqlx::query(
        r#"INSERT INTO "__settings" (key, value) VALUES ($1, $2)
           ON CONFLICT (key) DO UPDATE SET value = excluded.value"#,
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}
