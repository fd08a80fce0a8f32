//! Links to types kept here under local names (`use_same_name` off) point at the producer's
//! names in what the producer sends; these helpers turn them into local names.
//! Must not write.

use super::*;

/// The part of an update that comes from the producer: changed fields and changed or added
/// child rows (a Dynamic Link's type taken from the current document when it did not change).
pub(super) fn incoming_part(reg: &Registry, dt: &DocType, current: &Doc, diff: &Value) -> Doc {
    let mut out = diff
        .get("changed")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for f in &dt.fields {
        if f.fieldtype == crate::meta::FieldType::DynamicLink
            && out.contains_key(&f.fieldname)
            && !out.contains_key(&f.options)
        {
            if let Some(t) = current.get(&f.options) {
                out.insert(f.options.clone(), t.clone());
            }
        }
    }
    for tf in dt.table_fields() {
        let rows: Vec<Value> = ["added", "row_changed"]
            .iter()
            .filter_map(|k| diff.get(k)?.get(&tf.fieldname)?.as_array())
            .flatten()
            .cloned()
            .collect();
        if !rows.is_empty() && reg.get(&tf.options).is_ok() {
            out.insert(tf.fieldname.clone(), Value::Array(rows));
        }
    }
    out
}

/// (type, name as one site calls it) -> the name the other site gives the same document.
pub type LocalNames = std::collections::HashMap<(String, String), String>;

/// For links to types this consumer keeps under local names (`use_same_name` off): the
/// producer's name of each linked document and its local name.
pub(super) async fn local_names(
    conn: &mut Conn,
    reg: &Registry,
    info: &ProducerInfo,
    dt: &DocType,
    doc: &Doc,
) -> Result<LocalNames> {
    let mut names = LocalNames::new();
    if info.types.iter().all(|t| t.use_same_name || t.unsubscribed) {
        return Ok(names);
    }
    for (_, target, value) in crate::service::documents::links_of(reg, dt, doc).unwrap_or_default()
    {
        let Some(sub) = info.renamed(&target) else {
            continue;
        };
        let key = (target.clone(), value.clone());
        if names.contains_key(&key) {
            continue;
        }
        let tdt = reg.get(&target)?;
        if let Some(local) = find_local(conn, &tdt, info, sub, &value).await? {
            names.insert(key, local);
        }
    }
    Ok(names)
}

/// For each type this site keeps under local names from `info`'s producer: (type, local name)
/// -> the producer's name; [`rename_links`] with it turns local links back into the producer's
/// (verification compares documents as the producer has them).
pub async fn producer_names(
    conn: &mut Conn,
    reg: &Registry,
    info: &ProducerInfo,
) -> Result<LocalNames> {
    let mut names = LocalNames::new();
    for sub in info
        .types
        .iter()
        .filter(|t| !t.use_same_name && !t.unsubscribed)
    {
        let dt = reg.get(&sub.local_type)?;
        if dt.field("remote_docname").is_none() {
            continue;
        }
        let rows = store::fetch_docs(
            conn,
            &format!(
                r#"SELECT name, remote_docname FROM {} WHERE remote_site_name = $1 AND remote_docname IS NOT NULL"#,
                store::q(&dt.table())
            ),
            &[Param::text(&info.url)],
        )
        .await?;
        for r in rows {
            names.insert(
                (
                    sub.local_type.clone(),
                    name_text(r.get("name").unwrap_or(&Value::Null)),
                ),
                text(r.get("remote_docname")),
            );
        }
    }
    Ok(names)
}

/// Replaces producer names by local names in a document's links, child rows included.
pub fn rename_links(reg: &Registry, dt: &DocType, doc: &mut Doc, names: &LocalNames) {
    if names.is_empty() {
        return;
    }
    for f in &dt.fields {
        match f.fieldtype {
            crate::meta::FieldType::Link | crate::meta::FieldType::DynamicLink => {
                let target = if f.fieldtype == crate::meta::FieldType::Link {
                    f.options.clone()
                } else {
                    text(doc.get(&f.options))
                };
                let value = text(doc.get(&f.fieldname));
                if let Some(local) = names.get(&(target, value)) {
                    doc.insert(f.fieldname.clone(), Value::String(local.clone()));
                }
            }
            crate::meta::FieldType::Table | crate::meta::FieldType::TableMultiSelect => {
                let Ok(child) = reg.get(&f.options) else {
                    continue;
                };
                if let Some(rows) = doc.get_mut(&f.fieldname).and_then(Value::as_array_mut) {
                    for r in rows.iter_mut() {
                        if let Some(r) = r.as_object_mut() {
                            rename_links(reg, &child, r, names);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// [`rename_links`] on the parts of a Frappe diff that carry producer values.
pub(super) fn rename_links_in_diff(
    reg: &Registry,
    dt: &DocType,
    diff: &mut Value,
    names: &LocalNames,
) {
    if names.is_empty() {
        return;
    }
    if let Some(changed) = diff.get_mut("changed").and_then(Value::as_object_mut) {
        rename_links(reg, dt, changed, names);
    }
    for part in ["added", "row_changed"] {
        let Some(tables) = diff.get_mut(part).and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, rows) in tables.iter_mut() {
            let Some(child) = dt.field(field).and_then(|f| reg.get(&f.options).ok()) else {
                continue;
            };
            for r in rows.as_array_mut().into_iter().flatten() {
                if let Some(r) = r.as_object_mut() {
                    rename_links(reg, &child, r, names);
                }
            }
        }
    }
}
