//! Digests of documents for verification (`verify.rs`): both sites compute them alike, over
//! the fields both types have (a `FieldSpec` the consumer proposes and the producer narrows),
//! so that mappings, refused and local-only fields never count as differences. A document's
//! digest is a SHA-256 over its values in a canonical form (numbers by value, empty as
//! empty, child rows by content in `idx` order); names fall into 256 buckets, whose digests
//! are exchanged first, so sites in step exchange a few kilobytes, not documents.
//! Must not talk HTTP.

use crate::error::Result;
use crate::meta::{DocType, Registry};
use crate::store::{self, Conn, Param};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The fields a digest covers: a data field maps to None, a table field to its child fields.
pub type FieldSpec = BTreeMap<String, Option<Vec<String>>>;

/// Fields that are bookkeeping, not content, on both sides.
pub const BOOKKEEPING: [&str; 12] = [
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "idx",
    "doctype",
    "parent",
    "parenttype",
    "parentfield",
    "remote_docname",
    "remote_site_name",
];

fn content_fields(dt: &DocType) -> impl Iterator<Item = &crate::meta::DocField> {
    dt.fields
        .iter()
        .filter(|f| f.has_column() || f.fieldtype.is_table())
        .filter(|f| !BOOKKEEPING.contains(&f.fieldname.as_str()))
}

/// Every content field of `dt` (its child tables' too).
pub fn spec_of(reg: &Registry, dt: &DocType) -> FieldSpec {
    let mut spec = FieldSpec::new();
    for f in content_fields(dt) {
        if f.fieldtype.is_table() {
            let Ok(child) = reg.get(&f.options) else {
                continue;
            };
            let cols = content_fields(&child)
                .map(|c| c.fieldname.clone())
                .collect();
            spec.insert(f.fieldname.clone(), Some(cols));
        } else {
            spec.insert(f.fieldname.clone(), None);
        }
    }
    spec
}

/// The part of `wanted` that `dt` has too.
pub fn narrow(reg: &Registry, dt: &DocType, wanted: &FieldSpec) -> FieldSpec {
    let ours = spec_of(reg, dt);
    let mut spec = FieldSpec::new();
    for (f, cols) in wanted {
        match (ours.get(f), cols) {
            (Some(None), None) => {
                spec.insert(f.clone(), None);
            }
            (Some(Some(our_cols)), Some(cols)) => {
                let both: Vec<String> = cols
                    .iter()
                    .filter(|c| our_cols.contains(c))
                    .cloned()
                    .collect();
                spec.insert(f.clone(), Some(both));
            }
            _ => {}
        }
    }
    spec
}

/// A value in the canonical form both sites write.
fn canonical(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "1" } else { "0" }.into(),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        Some(other) => other.to_string(),
    }
}

/// The canonical text of a document over `spec` (child rows as the store reads them, by idx).
pub fn canonical_text(doc: &serde_json::Map<String, Value>, spec: &FieldSpec) -> String {
    let mut out = String::new();
    for (f, cols) in spec {
        out.push_str(f);
        out.push('=');
        match cols {
            None => out.push_str(&canonical(doc.get(f))),
            Some(cols) => {
                let mut rows: Vec<&Value> = doc
                    .get(f)
                    .and_then(Value::as_array)
                    .map(|r| r.iter().collect())
                    .unwrap_or_default();
                rows.sort_by_key(|r| r.get("idx").and_then(Value::as_i64).unwrap_or(0));
                for r in rows {
                    out.push('[');
                    for c in cols {
                        out.push_str(&canonical(r.get(c)));
                        out.push('\u{1f}');
                    }
                    out.push(']');
                }
            }
        }
        out.push('\u{1e}');
    }
    out
}

fn short_hex(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A document's digest over `spec`.
pub fn digest_of(doc: &serde_json::Map<String, Value>, spec: &FieldSpec) -> String {
    short_hex(&Sha256::digest(canonical_text(doc, spec).as_bytes()))
}

/// The bucket of a name (two hex digits).
pub fn bucket_of(name: &str) -> String {
    format!("{:02x}", Sha256::digest(name.as_bytes())[0])
}

/// The digest of each bucket of `digests` (name -> digest).
pub fn buckets(digests: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut hashers: BTreeMap<String, Sha256> = BTreeMap::new();
    for (name, d) in digests {
        let h = hashers.entry(bucket_of(name)).or_default();
        h.update(name.as_bytes());
        h.update(b":");
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    hashers
        .into_iter()
        .map(|(b, h)| (b, short_hex(&h.finalize())))
        .collect()
}

/// The digests of the documents `names` of `dt` that exist, read in bulk (500 names and one
/// statement per child table at a time).
pub async fn digests(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    spec: &FieldSpec,
    names: &[String],
) -> Result<BTreeMap<String, String>> {
    digests_as(conn, reg, dt, spec, names, &|_| {}).await
}

/// [`digests`] of the documents as `shape` makes them first (a consumer's links turned back
/// into the producer's names).
pub async fn digests_as(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    spec: &FieldSpec,
    names: &[String],
    shape: &(dyn Fn(&mut serde_json::Map<String, Value>) + Sync),
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let scalar: Vec<&String> = spec
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(f, _)| f)
        .collect();
    for chunk in names.chunks(500) {
        let ph: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let params: Vec<Param> = chunk.iter().map(|n| Param::text(n)).collect();
        let mut cols = vec![store::q("name")];
        cols.extend(scalar.iter().map(|f| store::q(f)));
        let rows = store::fetch_docs(
            conn,
            &format!(
                "SELECT {} FROM {} WHERE name IN ({})",
                cols.join(", "),
                store::q(&dt.table()),
                ph.join(", ")
            ),
            &params,
        )
        .await?;
        let mut docs: BTreeMap<String, serde_json::Map<String, Value>> = rows
            .into_iter()
            .map(|r| (crate::service::documents::name_text(&r["name"]), r))
            .collect();
        for (f, c) in spec {
            let Some(child_cols) = c else { continue };
            let Some(tf) = dt.field(f) else { continue };
            let child = reg.get(&tf.options)?;
            let mut sel = vec![store::q("parent"), store::q("idx")];
            sel.extend(child_cols.iter().map(|c| store::q(c)));
            let mut p = params.clone();
            p.push(Param::text(&dt.name));
            p.push(Param::text(f));
            let n = chunk.len();
            let rows = store::fetch_docs(
                conn,
                &format!(
                    "SELECT {} FROM {} WHERE parent IN ({}) AND parenttype = ${} AND parentfield = ${}",
                    sel.join(", "),
                    store::q(&child.table()),
                    ph.join(", "),
                    n + 1,
                    n + 2
                ),
                &p,
            )
            .await?;
            for r in rows {
                let parent = crate::service::documents::name_text(&r["parent"]);
                if let Some(d) = docs.get_mut(&parent) {
                    let list = d.entry(f.clone()).or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(a) = list {
                        a.push(Value::Object(r));
                    }
                }
            }
        }
        for (name, mut d) in docs {
            shape(&mut d);
            out.insert(name, digest_of(&d, spec));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_content_equal_digest() {
        let mut spec = FieldSpec::new();
        spec.insert("qty".into(), None);
        spec.insert("note".into(), None);
        spec.insert(
            "items".into(),
            Some(vec!["item_code".into(), "rate".into()]),
        );
        let a = json!({"qty": 2, "note": null, "items": [
            {"idx": 2, "item_code": "B", "rate": 1.5}, {"idx": 1, "item_code": "A", "rate": 3}]});
        let b = json!({"qty": 2.0, "note": "", "extra": "x", "items": [
            {"idx": 1, "item_code": "A", "rate": 3.0, "name": "r9"}, {"idx": 2, "item_code": "B", "rate": 1.5}]});
        let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
        assert_eq!(digest_of(a, &spec), digest_of(b, &spec));
        let c = json!({"qty": 3, "items": []});
        assert_ne!(
            digest_of(a, &spec),
            digest_of(c.as_object().unwrap(), &spec)
        );
        let mut d = BTreeMap::new();
        d.insert("x".to_string(), digest_of(a, &spec));
        let mut e = d.clone();
        e.insert("x".to_string(), "0".repeat(16));
        assert_ne!(buckets(&d), buckets(&e));
    }
}
