//! DocType: checks a custom type's definition and creates or alters its table.

use crate::error::{Error, Result};
use crate::meta::{
    check_identifier, DocType, FieldType, Registry, CHILD_COLUMNS, STANDARD_COLUMNS,
};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashSet;

fn parse(doc: &Doc) -> Result<DocType> {
    serde_json::from_value::<DocType>(Value::Object(doc.clone()))
        .map_err(|e| Error::Validation(format!("Invalid DocType definition: {e}")))
}

pub fn validate(reg: &Registry, doc: &mut Doc, old: Option<&Doc>) -> Result<()> {
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if old.is_none() {
        check_identifier("DocType name", &name, true)?;
        if reg.exists(&name) {
            return Err(Error::DuplicateEntry(format!(
                "DocType {name} already exists"
            )));
        }
        doc.insert("custom".into(), Value::from(1));
    } else if old.and_then(|o| o.get("custom")).and_then(Value::as_i64) != Some(1) {
        return Err(Error::Validation(format!(
            "{name} is a built-in DocType and cannot be changed; add a Custom Field instead"
        )));
    }
    if doc.get("module").map(|m| m.is_null()).unwrap_or(true) {
        doc.insert("module".into(), Value::String("Custom".into()));
    }
    let dt = parse(doc)?;
    if dt.istable && dt.issingle {
        return Err(Error::Validation(
            "A DocType cannot be both a child table and a single".into(),
        ));
    }
    let mut seen = HashSet::new();
    for f in &dt.fields {
        check_identifier("Fieldname", &f.fieldname, false)?;
        if STANDARD_COLUMNS.contains(&f.fieldname.as_str())
            || CHILD_COLUMNS.contains(&f.fieldname.as_str())
            || f.fieldname == "doctype"
        {
            return Err(Error::Validation(format!(
                "Fieldname {} is reserved for a standard column",
                f.fieldname
            )));
        }
        if !seen.insert(f.fieldname.clone()) {
            return Err(Error::Validation(format!(
                "Fieldname {} appears more than once",
                f.fieldname
            )));
        }
        check_options(
            reg,
            &dt.name,
            f.fieldtype,
            &f.options,
            &f.fieldname,
            &dt.fields
                .iter()
                .map(|f| f.fieldname.clone())
                .collect::<Vec<_>>(),
        )?;
        f.check_behaviour(reg, &dt.fields)?;
    }
    if let Some(old) = old {
        let before = parse(old)?;
        for f in &before.fields {
            if let Some(n) = dt.field(&f.fieldname) {
                if n.fieldtype.storage() != f.fieldtype.storage() {
                    return Err(Error::Validation(format!(
                        "The type of field {} cannot change from {} to {}",
                        f.fieldname,
                        f.fieldtype.name(),
                        n.fieldtype.name()
                    )));
                }
            }
        }
        if before.istable != dt.istable || before.issingle != dt.issingle {
            return Err(Error::Validation(
                "istable and issingle cannot change after creation".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a field's `options` for its type: link targets and child types must exist.
pub fn check_options(
    reg: &Registry,
    self_name: &str,
    ft: FieldType,
    options: &str,
    fieldname: &str,
    siblings: &[String],
) -> Result<()> {
    match ft {
        FieldType::Link if options != self_name && !reg.exists(options) => {
            Err(Error::Validation(format!("Field {fieldname}: Link options must name an existing DocType, not {options:?}")))
        }
        FieldType::Table | FieldType::TableMultiSelect => match reg.get(options) {
            Ok(c) if c.istable => Ok(()),
            _ => Err(Error::Validation(format!("Field {fieldname}: Table options must name an existing child table DocType, not {options:?}"))),
        },
        FieldType::DynamicLink if !siblings.iter().any(|s| s == options) => {
            Err(Error::Validation(format!("Field {fieldname}: Dynamic Link options must name a field of this type holding the target DocType, not {options:?}")))
        }
        _ => Ok(()),
    }
}

pub async fn after_write(
    site: &Site,
    conn: &mut Conn,
    doc: &Doc,
    old: Option<&Doc>,
    pending: &mut Pending,
) -> Result<()> {
    let dt = parse(doc)?;
    match old {
        None => store::create_table(conn, site.store.dialect(), &dt).await?,
        Some(_) => store::sync_table(conn, site.store.dialect(), &dt).await?,
    }
    pending.meta_changed = true;
    Ok(())
}

pub async fn before_delete(conn: &mut Conn, doc: &Doc, pending: &mut Pending) -> Result<()> {
    let dt = parse(doc)?;
    if !dt.custom {
        return Err(Error::Validation(format!(
            "{} is a built-in DocType and cannot be deleted",
            dt.name
        )));
    }
    if !dt.issingle {
        store::execute_batch(
            conn,
            &format!("DROP TABLE IF EXISTS {}", store::q(&dt.table())),
        )
        .await?;
    }
    pending.meta_changed = true;
    Ok(())
}

/// DocType's behaviour at the write path's hook points.
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
        old: Option<&Doc>,
        pending: &mut Pending,
    ) -> Result<()> {
        after_write(w.site, conn, doc, old, pending).await
    }

    async fn before_delete(
        &self,
        _w: &Write<'_>,
        conn: &mut Conn,
        doc: &Doc,
        pending: &mut Pending,
    ) -> Result<()> {
        before_delete(conn, doc, pending).await
    }
}
