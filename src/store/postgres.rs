//! PostgreSQL through a sqlx pool.

use super::{Doc, Param};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow, AnyTypeInfoKind};
use sqlx::{Any, AnyConnection, AnyPool, Column, Row, ValueRef};
use std::str::FromStr;
use std::time::Duration;

/// A connection in use: pooled, or carrying a transaction.
#[derive(Debug)]
pub(super) enum Handle {
    Pool(sqlx::pool::PoolConnection<Any>),
    Tx(sqlx::Transaction<'static, Any>),
}

impl Handle {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        match self {
            Handle::Pool(c) => c,
            Handle::Tx(t) => t,
        }
    }
}

/// Opens a pool on `url`, failing at once when the database does not answer.
pub(super) async fn open(url: &str) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let opts = AnyConnectOptions::from_str(url)
        .map_err(|e| Error::Validation(format!("bad database URL: {e}")))?;
    let cannot_open = |e: sqlx::Error| {
        Error::Validation(format!("cannot open database {}: {e}", super::redact(url)))
    };
    // One direct connection first, so a wrong URL fails at once instead of after the pool's
    // acquire timeout.
    {
        use sqlx::Connection;
        let conn = AnyConnection::connect_with(&opts)
            .await
            .map_err(cannot_open)?;
        conn.close().await.ok();
    }
    AnyPoolOptions::new()
        // As many as the 16 concurrent writers the bench drives, and a few for pulls; three
        // processes on one server stay well under PostgreSQL's default of 100.
        .max_connections(20)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        // sqlx pings every connection it hands out: a round trip before each request's
        // first statement. Only one idle for a while may have been cut (a server restart, a
        // firewall's idle timeout); one in steady use fails loudly, and is dropped, if it was.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    use sqlx::Connection;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
        .map_err(cannot_open)
}

/// How long a pooled connection may sit unused before it is checked when handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    params: &'q [Param],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for p in params {
        query = match p {
            Param::Text(v) => query.bind(v.as_deref()),
            Param::Int(v) => query.bind(*v),
            Param::Float(v) => query.bind(*v),
        };
    }
    query
}

/// Runs a statement, returning the rows it changed.
pub(super) async fn execute(conn: &mut AnyConnection, sql: &str, params: &[Param]) -> Result<u64> {
    Ok(bind_all(sqlx::query(sql), params)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Runs a query; rows as JSON objects by column name.
pub(super) async fn fetch_docs(
    conn: &mut AnyConnection,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Doc>> {
    let rows = bind_all(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            let mut m = Map::with_capacity(row.columns().len());
            for (i, col) in row.columns().iter().enumerate() {
                m.insert(col.name().to_string(), cell(row, i)?);
            }
            Ok(m)
        })
        .collect()
}

/// Runs a query; rows as values by position.
pub(super) async fn fetch_values(
    conn: &mut AnyConnection,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Vec<Value>>> {
    let rows = bind_all(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter()
        .map(|row| (0..row.columns().len()).map(|i| cell(row, i)).collect())
        .collect()
}

/// Runs one or more statements without parameters.
pub(super) async fn execute_batch(conn: &mut AnyConnection, sql: &str) -> Result<()> {
    use sqlx::Executor;
    conn.execute(sql).await?;
    Ok(())
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
