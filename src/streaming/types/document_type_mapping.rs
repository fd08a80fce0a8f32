//! Document Type Mapping: what can be checked on this site is checked when it is saved (the
//! local type and fields, inner mappings, filters and `eval:` expressions); remote field
//! names are checked when documents arrive.

use crate::error::{Error, Result};
use crate::meta::{FieldType, Registry};
use crate::service::documents::Pending;
use crate::service::hooks::{DocEvents, Write};
use crate::store::{self, Conn, Doc, Param};
use async_trait::async_trait;
use serde_json::Value;

fn text(v: Option<&Value>) -> String {
    crate::streaming::producer::value_text(v)
}

pub async fn validate(conn: &mut Conn, reg: &Registry, doc: &Doc) -> Result<()> {
    let local = text(doc.get("local_doctype"));
    let dt = reg.get(&local).map_err(|_| {
        Error::Validation(format!(
            "Local Document Type {local:?} does not exist on this site"
        ))
    })?;
    let rows = doc
        .get("field_mapping")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, row) in rows.iter().enumerate() {
        let at = format!("Field Mapping row {}", i + 1);
        let field = text(row.get("local_fieldname"));
        let Some(df) = dt.field(&field) else {
            return Err(Error::Validation(format!(
                "{at}: {local} has no field {field:?}"
            )));
        };
        let kind = text(row.get("mapping_type"));
        if kind.is_empty() {
            continue;
        }
        let inner = text(row.get("mapping"));
        if inner.is_empty() {
            return Err(Error::Validation(format!(
                "{at}: a {kind} mapping needs the Mapping it uses"
            )));
        }
        let inner_local = store::fetch_docs(
            conn,
            r#"SELECT local_doctype FROM "tabDocument Type Mapping" WHERE name = $1"#,
            &[Param::Text(Some(inner.clone()))],
        )
        .await?
        .first()
        .map(|r| text(r.get("local_doctype")))
        .ok_or_else(|| {
            Error::Validation(format!(
                "{at}: Document Type Mapping {inner:?} does not exist"
            ))
        })?;
        match kind.as_str() {
            "Child Table" => {
                if df.fieldtype != FieldType::Table || df.options != inner_local {
                    return Err(Error::Validation(format!(
                        "{at}: {field} must be a Table of {inner_local} to use mapping {inner}"
                    )));
                }
            }
            "Document" => {
                let fits = match df.fieldtype {
                    FieldType::Link => df.options == inner_local,
                    FieldType::DynamicLink => true,
                    _ => false,
                };
                if !fits {
                    return Err(Error::Validation(format!(
                        "{at}: {field} must be a Link to {inner_local} (or a Dynamic Link) to use mapping {inner}"
                    )));
                }
                check_filters(&at, row.get("remote_value_filters"))?;
            }
            other => {
                return Err(Error::Validation(format!(
                    "{at}: unknown Mapping Type {other:?} (empty, Child Table or Document)"
                )))
            }
        }
    }
    Ok(())
}

/// `remote_value_filters` must be a JSON object whose `eval:` values parse.
fn check_filters(at: &str, v: Option<&Value>) -> Result<()> {
    let raw = text(v);
    if raw.trim().is_empty() {
        return Err(Error::Validation(format!(
            "{at}: a Document mapping needs Remote Value Filters to find its source document"
        )));
    }
    let filters: Value = serde_json::from_str(&raw).map_err(|e| {
        Error::Validation(format!("{at}: Remote Value Filters is not valid JSON: {e}"))
    })?;
    let Some(map) = filters.as_object() else {
        return Err(Error::Validation(format!(
            "{at}: Remote Value Filters must be a JSON object of remote fieldname to value"
        )));
    };
    for (k, v) in map {
        if let Some(expr) = v.as_str().and_then(|s| s.strip_prefix("eval:")) {
            crate::sandbox::check_expression(expr)
                .map_err(|e| Error::Validation(format!("{at}: filter {k}: {e}")))?;
        }
    }
    Ok(())
}

/// Document Type Mapping's behaviour at the write path's hook points.
pub struct Events;

#[async_trait]
impl DocEvents for Events {
    async fn validate(
        &self,
        w: &Write<'_>,
        conn: &mut Conn,
        doc: &mut Doc,
        _old: Option<&Doc>,
        _pending: &mut Pending,
    ) -> Result<()> {
        validate(conn, w.reg, doc).await
    }
}
