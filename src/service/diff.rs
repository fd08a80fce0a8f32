//! The difference between two states of a document, in Frappe's update-log form: what an
//! update changed (nothing changed, nothing written) and what the update log sends.
//! Must not do I/O: it compares two documents as given.

use crate::error::Result;
use crate::meta::{DocType, Registry};
use crate::store::Doc;
use serde_json::{Map, Value};

/// `{"changed", "added", "removed", "row_changed"}` between `old` and `new`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub changed: Map<String, Value>,
    pub added: Map<String, Value>,
    pub removed: Map<String, Value>,
    pub row_changed: Map<String, Value>,
}

impl Diff {
    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.row_changed.is_empty()
    }

    /// Frappe's JSON shape.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("added".into(), Value::Object(self.added.clone()));
        m.insert("changed".into(), Value::Object(self.changed.clone()));
        m.insert("removed".into(), Value::Object(self.removed.clone()));
        m.insert(
            "row_changed".into(),
            Value::Object(self.row_changed.clone()),
        );
        Value::Object(m)
    }
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let empty = |v: Option<&Value>| {
        matches!(v, None | Some(Value::Null)) || v == Some(&Value::String(String::new()))
    };
    if empty(a) && empty(b) {
        return true;
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// An added child row as Frappe sends it: its fields plus `doctype`, `parent`, `parentfield`,
/// `parenttype`, `idx` and `docstatus`.
fn whole_row(
    dt: &DocType,
    child: &str,
    fieldname: &str,
    parent: &Doc,
    row: &Value,
    i: usize,
) -> Value {
    let mut r = row.as_object().cloned().unwrap_or_default();
    let parent_name = parent.get("name").cloned().unwrap_or(Value::Null);
    r.insert("doctype".into(), Value::String(child.to_string()));
    r.insert("parent".into(), parent_name);
    r.insert("parentfield".into(), Value::String(fieldname.to_string()));
    r.insert("parenttype".into(), Value::String(dt.name.clone()));
    r.insert("idx".into(), Value::from(i + 1));
    r.insert(
        "docstatus".into(),
        parent.get("docstatus").cloned().unwrap_or(Value::from(0)),
    );
    Value::Object(r)
}

/// Compares two states of a document of type `dt`.
pub fn diff(reg: &Registry, dt: &DocType, old: &Doc, new: &Doc) -> Result<Diff> {
    let mut d = Diff::default();
    for f in dt.data_fields() {
        if !same(old.get(&f.fieldname), new.get(&f.fieldname)) {
            d.changed.insert(
                f.fieldname.clone(),
                new.get(&f.fieldname).cloned().unwrap_or(Value::Null),
            );
        }
    }
    if !same(old.get("docstatus"), new.get("docstatus")) {
        d.changed.insert(
            "docstatus".into(),
            new.get("docstatus").cloned().unwrap_or(Value::Null),
        );
    }
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        let rows = |doc: &Doc| {
            doc.get(&tf.fieldname)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (old_rows, new_rows) = (rows(old), rows(new));
        let name_of = |r: &Value| r.get("name").cloned().unwrap_or(Value::Null);
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for (i, r) in new_rows.iter().enumerate() {
            match old_rows.iter().find(|o| name_of(o) == name_of(r)) {
                // A Frappe consumer inserts an added row as a document of its own: it needs
                // the whole row, with its parent fields.
                None => added.push(whole_row(dt, &child.name, &tf.fieldname, new, r, i)),
                Some(o) => {
                    let mut c = Map::new();
                    for f in child.data_fields() {
                        if !same(o.get(&f.fieldname), r.get(&f.fieldname)) {
                            c.insert(
                                f.fieldname.clone(),
                                r.get(&f.fieldname).cloned().unwrap_or(Value::Null),
                            );
                        }
                    }
                    if o.get("idx") != r.get("idx") && !c.is_empty() {
                        c.insert("idx".into(), r.get("idx").cloned().unwrap_or(Value::Null));
                    }
                    if !c.is_empty() {
                        c.insert("name".into(), name_of(r));
                        changed.push(Value::Object(c));
                    }
                }
            }
        }
        let removed: Vec<Value> = old_rows
            .iter()
            .filter(|o| !new_rows.iter().any(|r| name_of(r) == name_of(o)))
            .map(name_of)
            .collect();
        if !added.is_empty() {
            d.added.insert(tf.fieldname.clone(), Value::Array(added));
        }
        if !removed.is_empty() {
            d.removed
                .insert(tf.fieldname.clone(), Value::Array(removed));
        }
        if !changed.is_empty() {
            d.row_changed
                .insert(tf.fieldname.clone(), Value::Array(changed));
        }
    }
    Ok(d)
}

/// Serializes with sorted keys, as Frappe's `as_json` does, but compact: Frappe's one-space
/// indent made an invoice's Create log 21% larger, and every byte of a log is written to the
/// WAL in the producer's commit (readers parse either; the desk indents it for display).
pub fn frappe_json(v: &Value) -> String {
    to_sorted_json(&Sorted {
        v,
        skip_nulls: false,
    })
}

/// A document as a Create's payload: [`frappe_json`] without null values, as Frappe writes it.
pub fn create_payload_json(doc: &Map<String, Value>) -> String {
    to_sorted_json(&SortedMap {
        m: doc,
        skip_nulls: true,
    })
}

fn to_sorted_json(v: &impl serde::Serialize) -> String {
    let mut buf = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::new(&mut buf);
    v.serialize(&mut ser)
        .expect("serializing JSON to memory cannot fail");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// A value serialized with its object keys sorted, without copying it.
struct Sorted<'a> {
    v: &'a Value,
    skip_nulls: bool,
}

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.v {
            Value::Object(m) => SortedMap {
                m,
                skip_nulls: self.skip_nulls,
            }
            .serialize(s),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Sorted {
                        v,
                        skip_nulls: self.skip_nulls,
                    })?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// An object serialized with its keys sorted.
struct SortedMap<'a> {
    m: &'a Map<String, Value>,
    skip_nulls: bool,
}

impl serde::Serialize for SortedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut entries: Vec<(&String, &Value)> = self
            .m
            .iter()
            .filter(|(_, v)| !(self.skip_nulls && v.is_null()))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(
                k,
                &Sorted {
                    v,
                    skip_nulls: self.skip_nulls,
                },
            )?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::{create_payload_json, frappe_json};
    use serde_json::json;

    #[test]
    fn payloads_sort_keys_at_every_level_and_a_create_drops_nulls() {
        let doc = json!({"b": 1, "a": null, "items": [{"z": null, "y": "x"}, null]});
        assert_eq!(
            frappe_json(&doc),
            r#"{"a":null,"b":1,"items":[{"y":"x","z":null},null]}"#
        );
        assert_eq!(
            create_payload_json(doc.as_object().unwrap()),
            r#"{"b":1,"items":[{"y":"x"},null]}"#
        );
    }
}
