//! Reads: whole documents (with their child rows), lists and counts. Nothing here writes,
//! except the row lock `load_doc_for_update` takes for the write that follows.
//! Must not check more than read permission: writes check their own.

use super::hooks;
use super::not_found;
use crate::error::{Error, Result};
use crate::meta::{DocField, DocType, PermType, Registry, Storage};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, ListQuery};
use serde_json::Value;

/// The JSON value of a document name for a type (integers for autoincrement types).
pub fn name_value(dt: &DocType, name: &str) -> Value {
    if dt.column_storage("name") == Storage::Int {
        name.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(name.into()))
    } else {
        Value::String(name.into())
    }
}

/// A name as text.
pub fn name_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads a whole document (child rows included) inside a connection or transaction.
pub async fn load_doc(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    name: &str,
) -> Result<Option<Doc>> {
    let Some(row) = store::load_row(conn, dt, &name_value(dt, name)).await? else {
        return Ok(None);
    };
    let mut doc = Doc::with_capacity(row.len() + 2);
    doc.insert("doctype".into(), Value::String(dt.name.clone()));
    let real_name = name_text(row.get("name").unwrap_or(&Value::Null));
    doc.extend(row);
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        let rows = store::load_children(conn, &child, &dt.name, &real_name, &tf.fieldname).await?;
        let rows = rows
            .into_iter()
            .map(|mut r| {
                let mut m = Doc::with_capacity(r.len() + 1);
                m.insert("doctype".into(), Value::String(child.name.clone()));
                m.append(&mut r);
                Value::Object(m)
            })
            .collect();
        doc.insert(tf.fieldname.clone(), Value::Array(rows));
    }
    Ok(Some(doc))
}

/// Reads a document to change it: its row stays locked until the transaction ends, so what
/// the write compares against (`modified`, the old values its diff is made from) cannot
/// change under it.
pub async fn load_doc_for_update(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    name: &str,
) -> Result<Option<Doc>> {
    store::lock_row(conn, dt, &name_value(dt, name)).await?;
    load_doc(conn, reg, dt, name).await
}

impl Site {
    /// Reads a document the caller may read.
    pub async fn get_doc(&self, caller: &Caller, doctype: &str, name: &str) -> Result<Doc> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        if dt.istable {
            // Frappe consumers read child rows alone when they sync dependencies.
            return self.get_child_row(caller, &reg, &dt, name).await;
        }
        caller.require(&dt, PermType::Read)?;
        if dt.issingle {
            return self.get_single(&dt).await;
        }
        let mut conn = self.store.conn().await?;
        let mut doc = load_doc(&mut conn, &reg, &dt, name)
            .await?
            .ok_or_else(|| not_found(&dt, name))?;
        for h in hooks::of(self)?.of(&dt.name) {
            h.on_read(self, &mut conn, &mut doc).await?;
        }
        Ok(doc)
    }

    async fn get_child_row(
        &self,
        caller: &Caller,
        reg: &Registry,
        dt: &DocType,
        name: &str,
    ) -> Result<Doc> {
        let mut conn = self.store.conn().await?;
        let row = store::load_row(&mut conn, dt, &Value::String(name.into()))
            .await?
            .ok_or_else(|| not_found(dt, name))?;
        let parenttype = row.get("parenttype").map(name_text).unwrap_or_default();
        caller.require(&*reg.get(&parenttype)?, PermType::Read)?;
        let mut doc = Doc::new();
        doc.insert("doctype".into(), Value::String(dt.name.clone()));
        doc.extend(row);
        Ok(doc)
    }

    /// Lists documents the caller may read.
    pub async fn list_docs(
        &self,
        caller: &Caller,
        doctype: &str,
        query: &ListQuery,
    ) -> Result<Vec<Doc>> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        caller.require(&dt, PermType::Read)?;
        if dt.issingle {
            return Err(Error::Validation(format!(
                "{doctype} is a single document: GET /api/resource/{doctype}/{doctype}"
            )));
        }
        let sql = query.to_sql(&reg, &dt, self.store.dialect())?;
        let mut conn = self.store.conn().await?;
        let mut rows = store::fetch_docs(&mut conn, &sql.text, &sql.params).await?;
        hide_write_only(&dt, &mut rows);
        Ok(rows)
    }

    /// Counts documents matching the query's filters.
    pub async fn count_docs(
        &self,
        caller: &Caller,
        doctype: &str,
        query: &ListQuery,
    ) -> Result<i64> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        caller.require(&dt, PermType::Read)?;
        let sql = query.to_count_sql(&reg, &dt, self.store.dialect())?;
        let mut conn = self.store.conn().await?;
        let rows = store::fetch_docs(&mut conn, &sql.text, &sql.params).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("count"))
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }
}

/// Removes write-only values (`new_password`) from listed rows.
fn hide_write_only(dt: &DocType, rows: &mut [Doc]) {
    let write_only: Vec<&DocField> = dt
        .fields
        .iter()
        .filter(|f| f.fieldname == "new_password")
        .collect();
    for r in rows {
        for f in &write_only {
            if r.contains_key(&f.fieldname) {
                r.insert(f.fieldname.clone(), Value::Null);
            }
        }
    }
}
