//! A document's fields as a write takes them: input coerced by field type over the stored
//! values (child rows, secrets set apart), then the checks on the result (mandatory fields,
//! set-only-once fields). No I/O.
//! Must not read or write the database.

use super::defaults::apply_defaults;
use super::{is_empty, name_text, Pending, WriteFlags};
use crate::error::{Error, Result};
use crate::meta::{DocField, DocType, FieldType, Registry, Storage};
use crate::store::Doc;
use serde_json::Value;

fn is_masked(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '*')
}

/// Copies the input's fields over `base`, coerced by type; table fields become child rows.
pub(super) fn merge_fields(
    reg: &Registry,
    dt: &DocType,
    base: &mut Doc,
    input: &Doc,
    flags: &WriteFlags,
    pending: &mut Pending,
) -> Result<()> {
    for f in &dt.fields {
        let Some(v) = input.get(&f.fieldname) else {
            continue;
        };
        // Read-only fields are the server's; clients' values for them are ignored.
        if f.read_only && !flags.set_read_only {
            continue;
        }
        match f.fieldtype {
            FieldType::Table | FieldType::TableMultiSelect => {
                let rows = match v {
                    Value::Array(a) => a,
                    Value::Null => {
                        base.insert(f.fieldname.clone(), Value::Array(vec![]));
                        continue;
                    }
                    _ => {
                        return Err(Error::Validation(format!(
                            "{} must be a list of rows",
                            f.label()
                        )))
                    }
                };
                let child = reg.get(&f.options)?;
                let old_rows: Vec<Value> = base
                    .get(&f.fieldname)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let Value::Object(r) = r else {
                        return Err(Error::Validation(format!(
                            "rows of {} must be objects",
                            f.label()
                        )));
                    };
                    let given = r.get("name").map(name_text).filter(|n| !n.is_empty());
                    let mut row = given
                        .as_ref()
                        .and_then(|n| {
                            old_rows.iter().find(|o| {
                                o.get("name").map(name_text).as_deref() == Some(n.as_str())
                            })
                        })
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let new_row = row.is_empty();
                    merge_fields(reg, &child, &mut row, r, flags, pending)?;
                    if new_row && (flags.origin.is_none() || flags.mapped) {
                        apply_defaults(&child, &mut row);
                    }
                    row.insert(
                        "name".into(),
                        Value::String(given.unwrap_or_else(crate::service::naming::hash_name)),
                    );
                    out.push(Value::Object(row));
                }
                base.insert(f.fieldname.clone(), Value::Array(out));
            }
            FieldType::Password => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                if s.is_empty() || is_masked(&s) {
                    continue;
                }
                if f.fieldname == "new_password" {
                    pending.login_password = Some(s);
                } else {
                    pending.secrets.push((f.fieldname.clone(), s));
                    base.insert(f.fieldname.clone(), Value::String("*****".into()));
                }
            }
            t if t.storage() == Storage::None => {}
            t => {
                // A value kept as the producer sent it is not held to this site's choices.
                let options = match flags.unenforced.contains(&f.fieldname) {
                    true if t == FieldType::Select => "",
                    _ => f.options.as_str(),
                };
                let c = t.coerce(v, f.label(), options)?;
                base.insert(f.fieldname.clone(), c);
            }
        }
    }
    Ok(())
}

/// Refuses a change to a `set_only_once` field that already had a value.
pub(super) fn check_set_only_once(dt: &DocType, old: &Doc, doc: &Doc) -> Result<()> {
    for f in dt.data_fields().filter(|f| f.set_only_once) {
        let before = old.get(&f.fieldname);
        if !is_empty(before) && before.map(name_text) != doc.get(&f.fieldname).map(name_text) {
            return Err(Error::Validation(format!(
                "{} ({}) cannot be changed once it is set",
                f.label(),
                f.fieldname
            )));
        }
    }
    Ok(())
}

/// The mandatory fields of `dt` (top level) that `empty` says are empty.
pub fn missing_mandatory(dt: &DocType, empty: impl Fn(&str) -> bool) -> Vec<&DocField> {
    dt.fields
        .iter()
        .filter(|f| {
            f.reqd
                && !matches!(
                    f.fieldtype,
                    FieldType::SectionBreak
                        | FieldType::ColumnBreak
                        | FieldType::TabBreak
                        | FieldType::Password
                )
                && empty(&f.fieldname)
        })
        .collect()
}

/// Refuses a document that leaves a mandatory field empty, in it or in its child rows; the
/// top-level fields in `unenforced` may stay empty.
pub(super) fn check_mandatory(
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    unenforced: &[String],
) -> Result<()> {
    let missing: Vec<String> = missing_mandatory(dt, |f| is_empty(doc.get(f)))
        .into_iter()
        .filter(|f| !unenforced.contains(&f.fieldname))
        .map(|f| format!("{} ({})", f.label(), f.fieldname))
        .collect();
    if !missing.is_empty() {
        let name = doc.get("name").map(name_text).unwrap_or_default();
        return Err(Error::Mandatory(format!(
            "[{}{}]: Value missing for {}",
            dt.name,
            if name.is_empty() {
                String::new()
            } else {
                format!(", {name}")
            },
            missing.join(", ")
        )));
    }
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        for (i, r) in doc
            .get(&tf.fieldname)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(r) = r.as_object() {
                check_mandatory(reg, &child, r, &[]).map_err(|e| match e {
                    Error::Mandatory(m) => {
                        Error::Mandatory(format!("{} row {}: {m}", tf.label(), i + 1))
                    }
                    other => other,
                })?;
            }
        }
    }
    Ok(())
}
