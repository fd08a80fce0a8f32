//! Child rows as a write stores them (each with its parent, position and standard columns),
//! the document assembled from what was written, and unique-index violations named.
//! Must not run hooks or decide what changed: its callers do.

use super::name_text;
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry};
use crate::store::{self, Conn, Doc};
use serde_json::Value;

/// Writes the document's child rows (after removing the old ones when `replace`); returns
/// them as stored, by table field.
pub(super) async fn write_children(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    now: &str,
    user: &str,
    replace: Option<&[String]>,
) -> Result<Vec<(String, Vec<Doc>)>> {
    let parent = name_text(doc.get("name").unwrap_or(&Value::Null));
    let docstatus = doc.get("docstatus").cloned().unwrap_or(Value::from(0));
    let mut written = Vec::new();
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        if let Some(tables) = replace {
            if !tables.contains(&tf.fieldname) {
                continue;
            }
            store::delete_child_rows(conn, &child, &dt.name, &parent, &tf.fieldname).await?;
        }
        let mut rows = Vec::new();
        for (i, r) in doc
            .get(&tf.fieldname)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(r) = r.as_object() else { continue };
            let mut row = Doc::with_capacity(child.fields.len() + 12);
            row.insert("doctype".into(), Value::String(child.name.clone()));
            row.insert("name".into(), r.get("name").cloned().unwrap_or(Value::Null));
            row.insert(
                "owner".into(),
                r.get("owner")
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::String(user.into())),
            );
            row.insert(
                "creation".into(),
                r.get("creation")
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::String(now.into())),
            );
            row.insert("modified".into(), Value::String(now.into()));
            row.insert("modified_by".into(), Value::String(user.into()));
            row.insert("docstatus".into(), docstatus.clone());
            row.insert("idx".into(), Value::from(i + 1));
            row.insert("parent".into(), Value::String(parent.clone()));
            row.insert("parentfield".into(), Value::String(tf.fieldname.clone()));
            row.insert("parenttype".into(), Value::String(dt.name.clone()));
            for f in child.data_fields() {
                row.insert(
                    f.fieldname.clone(),
                    r.get(&f.fieldname).cloned().unwrap_or(Value::Null),
                );
            }
            rows.push(row);
        }
        store::insert_rows(conn, &child, &rows).await?;
        written.push((tf.fieldname.clone(), rows));
    }
    Ok(written)
}

/// The document as stored, built from what was just written (no read back).
pub(super) fn assemble(dt: &DocType, doc: &Doc, children: Vec<(String, Vec<Doc>)>) -> Doc {
    let mut out = Doc::with_capacity(dt.fields.len() + 8);
    out.insert("doctype".into(), Value::String(dt.name.clone()));
    for c in crate::meta::STANDARD_COLUMNS {
        out.insert(c.into(), doc.get(c).cloned().unwrap_or(Value::Null));
    }
    for f in dt.data_fields() {
        out.insert(
            f.fieldname.clone(),
            doc.get(&f.fieldname).cloned().unwrap_or(Value::Null),
        );
    }
    for (field, rows) in children {
        out.insert(
            field,
            Value::Array(rows.into_iter().map(Value::Object).collect()),
        );
    }
    out
}

/// Turns a unique-index violation into a message that names the document or the field.
pub(super) fn duplicate(dt: &DocType, doc: &Doc, e: Error) -> Error {
    let Error::DuplicateEntry(msg) = &e else {
        return e;
    };
    for f in dt.data_fields().filter(|f| f.unique) {
        if msg.contains(&format!("{}_{}", dt.table(), f.fieldname))
            || msg.contains(&format!(".{}", f.fieldname))
        {
            let v = doc.get(&f.fieldname).map(name_text).unwrap_or_default();
            return Error::DuplicateEntry(format!(
                "{} with {} {v} already exists",
                dt.name,
                f.label()
            ));
        }
    }
    Error::DuplicateEntry(format!(
        "{} {} already exists",
        dt.name,
        doc.get("name").map(name_text).unwrap_or_default()
    ))
}
