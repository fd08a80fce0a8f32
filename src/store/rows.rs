//! Reading and writing single rows of document tables.

use super::{execute, fetch_docs, fetch_values, push_quoted, q, Doc, Param};
use super::{Conn, Dialect};
use crate::error::Result;
use crate::meta::DocType;
use serde_json::Value;
use std::fmt::Write;

/// The fixed statements of one type's table, written once per version of the type (kept in
/// [`DocType::derived`]): formatting them on every read and write cost a tenth of a consumer's
/// CPU in the fan-out bench.
struct TableSql {
    /// The table's name, quoted.
    table: String,
    /// Every column, quoted, in [`DocType::columns`] order.
    columns: Vec<String>,
    /// Reads every column by name, never `*`: a statement made before a column was added
    /// (SQLite's and PostgreSQL's caches keep them) would read the old set of columns, and its
    /// text changes with the metadata, so a new field is read at once.
    load_row: String,
    row_exists: String,
    lock_row: String,
    delete_row: String,
    load_children: String,
    delete_children: String,
}

impl TableSql {
    fn of(dt: &DocType) -> TableSql {
        let table = q(&dt.table());
        let columns: Vec<String> = dt.columns().map(q).collect();
        let select_list = columns.join(", ");
        let children = "parent = $1 AND parenttype = $2 AND parentfield = $3";
        TableSql {
            load_row: format!("SELECT {select_list} FROM {table} WHERE name = $1"),
            row_exists: format!("SELECT 1 FROM {table} WHERE name = $1"),
            lock_row: format!("SELECT 1 FROM {table} WHERE name = $1 FOR UPDATE"),
            delete_row: format!("DELETE FROM {table} WHERE name = $1"),
            load_children: format!(
                "SELECT {select_list} FROM {table} WHERE {children} ORDER BY idx"
            ),
            delete_children: format!("DELETE FROM {table} WHERE {children}"),
            table,
            columns,
        }
    }
}

fn sql(dt: &DocType) -> &TableSql {
    dt.derived.get_or_init(|| TableSql::of(dt))
}

/// Inserts one row; `row` holds standard columns and field values (extra keys are ignored).
pub async fn insert_row(conn: &mut Conn, dt: &DocType, row: &Doc) -> Result<()> {
    let (mut text, params) = insert_text(dt, row, "VALUES (", 0);
    text.push(')');
    execute(conn, &text, &params).await?;
    Ok(())
}

/// `INSERT INTO table (columns) {values}` and the placeholders from `$offset+1`; the
/// parameters.
fn insert_text(dt: &DocType, row: &Doc, values: &str, offset: usize) -> (String, Vec<Param>) {
    let mut text = format!("INSERT INTO {} (", sql(dt).table);
    let mut params = Vec::new();
    for (k, v) in row {
        if dt.has_column(k) {
            if !params.is_empty() {
                text.push_str(", ");
            }
            push_quoted(&mut text, k);
            params.push(Param::from_value(v, dt.column_storage(k)));
        }
    }
    text.push_str(") ");
    text.push_str(values);
    for i in 1..=params.len() {
        let sep = if i > 1 { ", " } else { "" };
        let _ = write!(text, "{sep}${}", i + offset);
    }
    (text, params)
}

/// A read that decides whether [`insert_row_guarded`] inserts: it answers `(t, name)` rows,
/// and the row goes in only when exactly `expect` of them have `t >= 0`.
#[derive(Debug)]
pub struct Guard {
    pub sql: String,
    pub params: Vec<Param>,
    pub expect: usize,
}

/// Runs `guard` and inserts `row` when it holds; the guard's rows. One statement on
/// PostgreSQL, a round trip fewer per write; SQLite, which cannot insert inside `WITH`, runs
/// the two in turn.
pub async fn insert_row_guarded(
    conn: &mut Conn,
    dt: &DocType,
    row: &Doc,
    guard: Guard,
) -> Result<Vec<Doc>> {
    match conn.dialect() {
        Dialect::Sqlite => {
            let rows = fetch_docs(conn, &guard.sql, &guard.params).await?;
            let held = rows
                .iter()
                .filter(|r| r.get("t").and_then(Value::as_i64).is_some_and(|t| t >= 0))
                .count();
            if held == guard.expect {
                insert_row(conn, dt, row).await?;
            }
            Ok(rows)
        }
        Dialect::Postgres => {
            let Guard {
                sql: g,
                mut params,
                expect,
            } = guard;
            // VALUES cannot carry a condition: the same row as a one-row SELECT.
            let (insert, values) = insert_text(dt, row, "SELECT ", params.len());
            params.extend(values);
            let text = format!(
                "WITH g AS ({g}), i AS ({insert} WHERE (SELECT COUNT(*) FROM g WHERE t >= 0) = {expect}) SELECT t, name FROM g"
            );
            fetch_docs(conn, &text, &params).await
        }
    }
}

/// Inserts several rows of one type in one statement per chunk; every row gets every column
/// (absent values are NULL).
pub async fn insert_rows(conn: &mut Conn, dt: &DocType, rows: &[Doc]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // The same order as the quoted names made from it.
    let cols: Vec<&str> = dt.columns().collect();
    let quoted = &sql(dt).columns;
    let storage: Vec<_> = cols.iter().map(|c| dt.column_storage(c)).collect();
    let params: Vec<Vec<Param>> = rows
        .iter()
        .map(|row| {
            cols.iter()
                .zip(&storage)
                .map(|(c, st)| Param::from_value(row.get(*c).unwrap_or(&Value::Null), *st))
                .collect()
        })
        .collect();
    super::insert_many(conn, &sql(dt).table, quoted, &params).await
}

/// Sets the given columns of the row `name`.
pub async fn update_columns(
    conn: &mut Conn,
    dt: &DocType,
    name: &Value,
    values: &Doc,
) -> Result<u64> {
    let mut text = format!("UPDATE {} SET ", sql(dt).table);
    let mut params = Vec::new();
    for (k, v) in values {
        if dt.has_column(k) {
            if !params.is_empty() {
                text.push_str(", ");
            }
            params.push(Param::from_value(v, dt.column_storage(k)));
            push_quoted(&mut text, k);
            let _ = write!(text, " = ${}", params.len());
        }
    }
    if params.is_empty() {
        return Ok(0);
    }
    params.push(Param::from_value(name, dt.column_storage("name")));
    let _ = write!(text, " WHERE name = ${}", params.len());
    execute(conn, &text, &params).await
}

/// Deletes the row `name`.
pub async fn delete_row(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<u64> {
    execute(
        conn,
        &sql(dt).delete_row,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await
}

/// Reads the row `name`, every column.
pub async fn load_row(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<Option<Doc>> {
    let mut rows = fetch_docs(
        conn,
        &sql(dt).load_row,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await?;
    Ok(rows.pop())
}

/// Locks the row `name` until the transaction ends, so a read-compare-write on it cannot
/// interleave with another one. PostgreSQL only: SQLite's single writer already orders them.
pub async fn lock_row(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<()> {
    if conn.dialect() != super::Dialect::Postgres {
        return Ok(());
    }
    fetch_values(
        conn,
        &sql(dt).lock_row,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await?;
    Ok(())
}

/// True when a row named `name` exists.
pub async fn row_exists(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<bool> {
    Ok(!fetch_docs(
        conn,
        &sql(dt).row_exists,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await?
    .is_empty())
}

/// The params of [`TableSql`]'s child-row statements.
fn child_rows_of(parenttype: &str, parent: &str, parentfield: &str) -> [Param; 3] {
    [
        Param::text(parent),
        Param::text(parenttype),
        Param::text(parentfield),
    ]
}

/// Reads the child rows of a parent's table field, in `idx` order.
pub async fn load_children(
    conn: &mut Conn,
    child: &DocType,
    parenttype: &str,
    parent: &str,
    parentfield: &str,
) -> Result<Vec<Doc>> {
    let params = child_rows_of(parenttype, parent, parentfield);
    fetch_docs(conn, &sql(child).load_children, &params).await
}

/// Deletes the child rows of one table field of a parent.
pub async fn delete_child_rows(
    conn: &mut Conn,
    child: &DocType,
    parenttype: &str,
    parent: &str,
    parentfield: &str,
) -> Result<u64> {
    let params = child_rows_of(parenttype, parent, parentfield);
    execute(conn, &sql(child).delete_children, &params).await
}
