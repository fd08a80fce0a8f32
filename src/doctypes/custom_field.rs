//! Custom Field: adds a column to an existing type in the same transaction.

use crate::error::{Error, Result};
use crate::meta::{
    check_identifier, DocField, FieldType, Registry, CHILD_COLUMNS, STANDARD_COLUMNS,
};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use async_trait::async_trait;
use serde_json::Value;

fn text(doc: &Doc, f: &str) -> String {
    doc.get(f)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub fn validate(reg: &Registry, doc: &mut Doc, old: Option<&Doc>) -> Result<()> {
    let dt_name = text(doc, "dt");
    let fieldname = text(doc, "fieldname");
    let target = reg.get(&dt_name)?;
    if let Some(o) = old {
        for k in ["dt", "fieldname", "fieldtype"] {
            if text(o, k) != text(doc, k) {
                return Err(Error::Validation(format!(
                    "The {k} of a Custom Field cannot change; delete it and add a new one"
                )));
            }
        }
        return Ok(());
    }
    check_identifier("Fieldname", &fieldname, false)?;
    if STANDARD_COLUMNS.contains(&fieldname.as_str())
        || CHILD_COLUMNS.contains(&fieldname.as_str())
        || target.field(&fieldname).is_some()
    {
        return Err(Error::DuplicateEntry(format!(
            "{dt_name} already has a field {fieldname}"
        )));
    }
    let ft = FieldType::parse(&text(doc, "fieldtype")).unwrap_or(FieldType::Data);
    let siblings: Vec<String> = target.fields.iter().map(|f| f.fieldname.clone()).collect();
    super::doctype::check_options(
        reg,
        &dt_name,
        ft,
        &text(doc, "options"),
        &fieldname,
        &siblings,
    )?;
    let field: DocField = serde_json::from_value(Value::Object(doc.clone()))
        .map_err(|e| Error::Validation(format!("Invalid Custom Field: {e}")))?;
    field.check_behaviour(reg, &target.fields)?;
    if text(doc, "label").is_empty() {
        doc.insert("label".into(), Value::String(fieldname.replace('_', " ")));
    }
    doc.insert(
        "name".into(),
        Value::String(format!("{dt_name}-{fieldname}")),
    );
    Ok(())
}

pub async fn after_write(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    doc: &Doc,
    pending: &mut Pending,
) -> Result<()> {
    pending.meta_changed = true;
    let target = reg.get(&text(doc, "dt"))?;
    let field: DocField = serde_json::from_value(Value::Object(doc.clone()))
        .map_err(|e| Error::Validation(format!("Invalid Custom Field: {e}")))?;
    if target.field(&field.fieldname).is_none() {
        store::add_column(conn, site.store.dialect(), &target, &field).await?;
    }
    Ok(())
}

/// Custom Field's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        _conn: &mut Conn,
        doc: &mut Doc,
        old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        validate(w.reg, doc, old)
    }

    async fn after_write(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        _old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        after_write(w.site, conn, w.reg, doc, pending).await
    }

    async fn before_delete(
        &self,
        _w: &Write<'_>,
        _conn: &mut Conn,
        _doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()> {
        pending.meta_changed = true;
        Ok(())
    }
}
