//! Reading and writing single rows of document tables.

use super::Conn;
use super::{execute, fetch_docs, fetch_values, q, Doc, Param};
use crate::error::Result;
use crate::meta::DocType;
use serde_json::Value;

/// Inserts one row; `row` holds standard columns and field values (extra keys are ignored).
pub async fn insert_row(conn: &mut Conn, dt: &DocType, row: &Doc) -> Result<()> {
    let mut cols = Vec::new();
    let mut params = Vec::new();
    for (k, v) in row {
        if dt.has_column(k) {
            cols.push(q(k));
            params.push(Param::from_value(v, dt.column_storage(k)));
        }
    }
    let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        q(&dt.table()),
        cols.join(", "),
        placeholders.join(", ")
    );
    execute(conn, &sql, &params).await?;
    Ok(())
}

/// Inserts several rows of one type in one statement per chunk; every row gets every column
/// (absent values are NULL).
pub async fn insert_rows(conn: &mut Conn, dt: &DocType, rows: &[Doc]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut cols: Vec<&str> = crate::meta::STANDARD_COLUMNS.to_vec();
    if dt.istable {
        cols.extend(crate::meta::CHILD_COLUMNS);
    }
    cols.extend(dt.data_fields().map(|f| f.fieldname.as_str()));
    let quoted: Vec<String> = cols.iter().map(|c| q(c)).collect();
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
    super::insert_many(conn, &q(&dt.table()), &quoted, &params).await
}

/// Sets the given columns of the row `name`.
pub async fn update_columns(
    conn: &mut Conn,
    dt: &DocType,
    name: &Value,
    values: &Doc,
) -> Result<u64> {
    let mut sets = Vec::new();
    let mut params = Vec::new();
    for (k, v) in values {
        if dt.has_column(k) {
            params.push(Param::from_value(v, dt.column_storage(k)));
            sets.push(format!("{} = ${}", q(k), params.len()));
        }
    }
    if sets.is_empty() {
        return Ok(0);
    }
    params.push(Param::from_value(name, dt.column_storage("name")));
    let sql = format!(
        "UPDATE {} SET {} WHERE name = ${}",
        q(&dt.table()),
        sets.join(", "),
        params.len()
    );
    execute(conn, &sql, &params).await
}

/// Deletes the row `name`.
pub async fn delete_row(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<u64> {
    let sql = format!("DELETE FROM {} WHERE name = $1", q(&dt.table()));
    execute(
        conn,
        &sql,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await
}

/// Every column of `dt`'s table by name, never `*`: a statement made before a column was added
/// (SQLite's and PostgreSQL's caches keep them) would read the old set of columns, and its text
/// changes with the metadata, so a new field is read at once.
pub fn select_list(dt: &DocType) -> String {
    dt.columns().map(q).collect::<Vec<_>>().join(", ")
}

/// Reads the row `name`, every column.
pub async fn load_row(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<Option<Doc>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE name = $1",
        select_list(dt),
        q(&dt.table())
    );
    let mut rows = fetch_docs(
        conn,
        &sql,
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
    let sql = format!(
        "SELECT 1 FROM {} WHERE name = $1 FOR UPDATE",
        q(&dt.table())
    );
    fetch_values(
        conn,
        &sql,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await?;
    Ok(())
}

/// True when a row named `name` exists.
pub async fn row_exists(conn: &mut Conn, dt: &DocType, name: &Value) -> Result<bool> {
    let sql = format!("SELECT 1 FROM {} WHERE name = $1", q(&dt.table()));
    Ok(!fetch_docs(
        conn,
        &sql,
        &[Param::from_value(name, dt.column_storage("name"))],
    )
    .await?
    .is_empty())
}

/// The rows of one table field of a parent: `WHERE` clause and its params.
fn child_rows_of(parenttype: &str, parent: &str, parentfield: &str) -> (&'static str, [Param; 3]) {
    (
        "parent = $1 AND parenttype = $2 AND parentfield = $3",
        [
            Param::text(parent),
            Param::text(parenttype),
            Param::text(parentfield),
        ],
    )
}

/// Reads the child rows of a parent's table field, in `idx` order.
pub async fn load_children(
    conn: &mut Conn,
    child: &DocType,
    parenttype: &str,
    parent: &str,
    parentfield: &str,
) -> Result<Vec<Doc>> {
    let (filter, params) = child_rows_of(parenttype, parent, parentfield);
    let sql = format!(
        "SELECT {} FROM {} WHERE {filter} ORDER BY idx",
        select_list(child),
        q(&child.table())
    );
    fetch_docs(conn, &sql, &params).await
}

/// Deletes the child rows of one table field of a parent.
pub async fn delete_child_rows(
    conn: &mut Conn,
    child: &DocType,
    parenttype: &str,
    parent: &str,
    parentfield: &str,
) -> Result<u64> {
    let (filter, params) = child_rows_of(parenttype, parent, parentfield);
    let sql = format!("DELETE FROM {} WHERE {filter}", q(&child.table()));
    execute(conn, &sql, &params).await
}
