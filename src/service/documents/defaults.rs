//! Values a write fills in itself: field defaults (fixed, and those of the moment or the
//! caller), and `fetch_from` values copied from linked documents. Reads only.
//! Must not fill anything in for documents applied from another site (stored as sent).

use super::{is_empty, name_text, name_value};
use crate::error::Result;
use crate::meta::{DocType, FieldType, Registry, Storage};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc};
use serde_json::Value;

pub(super) fn apply_defaults(dt: &DocType, doc: &mut Doc) {
    for f in dt.data_fields() {
        if !is_empty(doc.get(&f.fieldname)) || f.fieldtype == FieldType::Password {
            continue;
        }
        let v = match &f.default {
            Some(d) if !d.is_empty() => f
                .fieldtype
                .coerce(&Value::String(d.clone()), f.label(), &f.options)
                .ok(),
            _ => None,
        };
        let v = v
            .filter(|v| !v.is_null())
            .or_else(|| match f.fieldtype.storage() {
                Storage::Int => Some(Value::from(0)),
                Storage::Float => Some(Value::from(0.0)),
                _ => None,
            });
        if let Some(v) = v {
            doc.insert(f.fieldname.clone(), v);
        }
    }
}

/// Resolves defaults that depend on the moment or the caller (`Today`, `Now`, `__user`).
pub(super) fn resolve_dynamic_defaults(
    site: &Site,
    caller: &Caller,
    dt: &DocType,
    input: &mut Doc,
) {
    for f in dt.data_fields() {
        if !is_empty(input.get(&f.fieldname)) {
            continue;
        }
        let value = match f.default.as_deref().map(str::to_lowercase).as_deref() {
            Some("today") => site.clock.today(),
            Some("now") => site.clock.now(),
            Some("__user") => caller.user.clone(),
            _ => continue,
        };
        input.insert(f.fieldname.clone(), Value::String(value));
    }
}

/// Linked documents read while one save fetches values (`fetch_from`), each once.
type Fetched = std::collections::HashMap<(String, String), Option<Doc>>;

/// Copies `fetch_from` values into `doc` (fields of type `dt`, not its child rows): when the
/// link changed, or the value is empty, or the field is read-only (the link decides it);
/// `fetch_if_empty` fields only when empty.
async fn fetch_into(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &mut Doc,
    old: Option<&Doc>,
    fetched: &mut Fetched,
) -> Result<()> {
    for f in dt.data_fields() {
        let Some((link, source)) = f.fetch_source() else {
            continue;
        };
        let target = doc.get(link).map(name_text).unwrap_or_default();
        if target.is_empty() {
            continue;
        }
        let empty = is_empty(doc.get(&f.fieldname));
        let link_changed = old.is_none_or(|o| o.get(link) != doc.get(link));
        if (f.fetch_if_empty && !empty) || !(empty || link_changed || f.read_only) {
            continue;
        }
        let Some(link_dt) = dt.field(link).map(|l| l.options.clone()) else {
            continue;
        };
        let key = (link_dt, target);
        if !fetched.contains_key(&key) {
            let ldt = reg.get(&key.0)?;
            let row = store::load_row(conn, &ldt, &name_value(&ldt, &key.1)).await?;
            fetched.insert(key.clone(), row);
        }
        if let Some(v) = fetched[&key].as_ref().and_then(|r| r.get(source)) {
            let v = f
                .fieldtype
                .coerce(v, f.label(), &f.options)
                .unwrap_or(Value::Null);
            doc.insert(f.fieldname.clone(), v);
        }
    }
    Ok(())
}

/// Runs [`fetch_into`] on a document and on each of its child rows.
pub(super) async fn fetch_linked(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &mut Doc,
    old: Option<&Doc>,
) -> Result<()> {
    let mut fetched = Fetched::new();
    fetch_into(conn, reg, dt, doc, old, &mut fetched).await?;
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        if !child.fields.iter().any(|f| !f.fetch_from.is_empty()) {
            continue;
        }
        let old_rows = old
            .and_then(|o| o.get(&tf.fieldname))
            .and_then(Value::as_array);
        let Some(Value::Array(rows)) = doc.get_mut(&tf.fieldname) else {
            continue;
        };
        for row in rows.iter_mut() {
            let Value::Object(row) = row else { continue };
            let before = old_rows.and_then(|o| {
                o.iter()
                    .filter_map(Value::as_object)
                    .find(|o| o.get("name") == row.get("name"))
            });
            fetch_into(conn, reg, &child, row, before, &mut fetched).await?;
        }
    }
    Ok(())
}
