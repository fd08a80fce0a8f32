//! The whitelisted methods the web desk calls besides Frappe's `frappe.client.*`: type metadata
//! for forms, Link search, and the streaming dashboard. Thin: they call services.

use crate::error::{Error, Result};
use crate::meta::{DocType, PermType};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{Filter, ListQuery, Op};
use serde_json::{json, Value};
use std::sync::Arc;

/// Resolves a type by name or by URL slug (`event-producer`).
fn resolve(site: &Site, doctype: &str) -> Result<Arc<DocType>> {
    let reg = site.meta();
    if let Ok(dt) = reg.get(doctype) {
        return Ok(dt);
    }
    reg.all()
        .into_iter()
        .find(|t| crate::meta::slug(&t.name) == doctype)
        .ok_or_else(|| Error::DoesNotExist(format!("DocType {doctype} not found")))
}

fn perms(caller: &Caller, dt: &DocType) -> Value {
    let p = |t| caller.can(dt, t);
    json!({
        "read": p(PermType::Read), "write": p(PermType::Write), "create": p(PermType::Create),
        "delete": p(PermType::Delete), "submit": p(PermType::Submit), "cancel": p(PermType::Cancel),
    })
}

/// `frappe.desk.form.load.getdoctype`: the type (by name or slug) and its child types, with the
/// caller's permissions, as `{"docs": [type, child...], "perms": {...}}`.
pub fn getdoctype(site: &Site, caller: &Caller, doctype: &str) -> Result<Value> {
    let dt = resolve(site, doctype)?;
    caller.require(&dt, PermType::Read)?;
    let reg = site.meta();
    let mut docs = vec![serde_json::to_value(&*dt)?];
    let mut seen = vec![dt.name.clone()];
    for f in dt.table_fields() {
        if !seen.contains(&f.options) {
            seen.push(f.options.clone());
            docs.push(serde_json::to_value(&*reg.get(&f.options)?)?);
        }
    }
    Ok(json!({"docs": docs, "perms": perms(caller, &dt), "user_settings": {}}))
}

/// `frappe.desk.search.search_link`: up to `page_length` documents of `doctype` whose name or
/// title contains `txt`, as `[{"value", "description"}]`.
pub async fn search_link(
    site: &Site,
    caller: &Caller,
    doctype: &str,
    txt: &str,
    page_length: u64,
) -> Result<Value> {
    let limit = page_length.clamp(1, 50) as usize;
    let reg = site.meta();
    let dt = reg.get(doctype)?;
    let needle = txt.trim().to_lowercase();
    if dt.name == "DocType" {
        // Built-in types live in the registry, not in tabDocType: search the registry.
        caller.require(&dt, PermType::Read)?;
        let hits: Vec<Value> = reg
            .all()
            .into_iter()
            .filter(|t| t.name.to_lowercase().contains(&needle))
            .take(limit)
            .map(|t| json!({"value": t.name, "description": t.module}))
            .collect();
        return Ok(Value::Array(hits));
    }
    let title = Some(dt.title_field.clone())
        .filter(|t| !t.is_empty() && t != "name" && dt.field(t).is_some_and(|f| f.has_column()));
    let mut fields = vec!["name".to_string()];
    fields.extend(title.clone());
    let like = |field: &str| Filter {
        doctype: None,
        field: field.into(),
        op: Op::Like,
        value: Value::String(format!("%{}%", txt.trim())),
    };
    let mut or_filters = Vec::new();
    if !needle.is_empty() {
        or_filters.push(like("name"));
        or_filters.extend(title.as_deref().map(like));
    }
    let q = ListQuery {
        fields,
        or_filters,
        order_by: "modified desc".into(),
        page_length: limit as u64,
        ..Default::default()
    };
    let rows = site.list_docs(caller, doctype, &q).await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|r| {
                let value = r.get("name").cloned().unwrap_or(Value::Null);
                let description = title
                    .as_deref()
                    .and_then(|t| r.get(t))
                    .filter(|d| !d.is_null() && **d != value)
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({"value": value, "description": description})
            })
            .collect(),
    ))
}

/// `docstream.desk.streaming_dashboard`: per producer and consumer, status, lag, last sync and
/// failures, and how the scheduled backups go. System Managers only: it reads every streaming document.
pub async fn streaming_dashboard(site: &Site, caller: &Caller) -> Result<Value> {
    if !caller.is_system_manager() {
        return Err(Error::Permission(
            "Only a System Manager may see the streaming dashboard".into(),
        ));
    }
    let mut dash = crate::streaming::dashboard::build(site).await?;
    dash["backups"] = crate::service::backup_schedule::view(site)
        .await?
        .unwrap_or(Value::Null);
    Ok(dash)
}
