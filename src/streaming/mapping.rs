//! Document Type Mapping on the consumer: turning documents and diffs of the producer's
//! (remote) type into the local type. Plain rows rename fields, fields named by no row keep
//! their name when both types have them, Child Table rows map rows with an inner mapping.
//! Document rows need the producer and the local store, so [`super::apply`] resolves them;
//! this module only says which they are.

use crate::error::{Error, Result};
use crate::meta::{DocType, Registry, STANDARD_COLUMNS};
use crate::store::{self, Conn, Doc, Param};
use serde_json::{Map, Value};
use std::collections::HashSet;

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// A Document Type Mapping with its rows; inner mappings loaded.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub name: String,
    pub local_doctype: String,
    pub remote_doctype: String,
    pub rows: Vec<FieldRow>,
}

/// One row of `field_mapping`.
#[derive(Debug, Clone)]
pub struct FieldRow {
    /// 1-based, as the user sees it.
    pub idx: usize,
    pub local: String,
    pub remote: String,
    pub default: String,
    pub kind: RowKind,
}

/// What a row does.
#[derive(Debug, Clone)]
pub enum RowKind {
    Plain,
    ChildTable(Box<Mapping>),
    /// The local Link is filled by a document fetched with `filters` and made by the mapping.
    Document {
        mapping: Box<Mapping>,
        filters: Map<String, Value>,
    },
}

impl FieldRow {
    /// Names the row in errors.
    pub fn label(&self, m: &Mapping) -> String {
        format!(
            "Document Type Mapping {}, row {} ({})",
            m.name, self.idx, self.local
        )
    }
}

const MAX_DEPTH: usize = 5;

/// Reads a mapping and its inner mappings.
pub async fn load(conn: &mut Conn, name: &str) -> Result<Mapping> {
    load_at(conn, name.to_string(), 0).await
}

fn load_at(
    conn: &mut Conn,
    name: String,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Mapping>> + Send + '_>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(Error::Validation(format!(
                "Document Type Mapping {name} nests more than {MAX_DEPTH} mappings deep (a cycle?)"
            )));
        }
        let head = store::fetch_docs(
            conn,
            r#"SELECT local_doctype, remote_doctype FROM "tabDocument Type Mapping" WHERE name = $1"#,
            &[Param::Text(Some(name.clone()))],
        )
        .await?;
        let head = head.first().ok_or_else(|| {
            Error::Validation(format!("Document Type Mapping {name} does not exist"))
        })?;
        let local_doctype = text(head.get("local_doctype"));
        let remote_doctype = text(head.get("remote_doctype"));
        let raw = store::fetch_docs(
            conn,
            r#"SELECT local_fieldname, remote_fieldname, default_value, mapping_type, mapping, remote_value_filters
               FROM "tabDocument Type Field Mapping" WHERE parent = $1 AND parenttype = 'Document Type Mapping' ORDER BY idx"#,
            &[Param::Text(Some(name.clone()))],
        )
        .await?;
        let mut rows = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let local = text(r.get("local_fieldname"));
            let at = || format!("Document Type Mapping {name}, row {} ({local})", i + 1);
            let kind = match text(r.get("mapping_type")).as_str() {
                "" => RowKind::Plain,
                "Child Table" => RowKind::ChildTable(Box::new(
                    load_at(conn, text(r.get("mapping")), depth + 1).await?,
                )),
                "Document" => {
                    let filters =
                        match serde_json::from_str::<Value>(&text(r.get("remote_value_filters"))) {
                            Ok(Value::Object(m)) => m,
                            _ => {
                                return Err(Error::Validation(format!(
                                    "{}: Remote Value Filters must be a JSON object",
                                    at()
                                )))
                            }
                        };
                    RowKind::Document {
                        mapping: Box::new(load_at(conn, text(r.get("mapping")), depth + 1).await?),
                        filters,
                    }
                }
                other => {
                    return Err(Error::Validation(format!(
                        "{}: unknown Mapping Type {other:?}",
                        at()
                    )))
                }
            };
            rows.push(FieldRow {
                idx: i + 1,
                remote: text(r.get("remote_fieldname")),
                default: text(r.get("default_value")),
                local,
                kind,
            });
        }
        Ok(Mapping {
            name,
            local_doctype,
            remote_doctype,
            rows,
        })
    })
}

fn is_empty(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || matches!(v, Some(Value::String(s)) if s.is_empty())
}

impl Mapping {
    fn named_locally(&self, field: &str) -> bool {
        self.rows.iter().any(|r| r.local == field)
    }

    /// The Document rows, which [`super::apply`] resolves.
    pub fn document_rows(&self) -> impl Iterator<Item = &FieldRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.kind, RowKind::Document { .. }))
    }

    /// Maps a whole remote document (or child row). `remote_fields`, when known, are the
    /// remote type's fields: a row naming another field fails. Child row names are kept so
    /// later diffs find their rows.
    pub fn map_doc(
        &self,
        reg: &Registry,
        remote_doc: &Doc,
        remote_fields: Option<&HashSet<String>>,
    ) -> Result<Doc> {
        let dt = reg.get(&self.local_doctype)?;
        let mut out = Doc::new();
        for (k, v) in remote_doc {
            let carried = STANDARD_COLUMNS.contains(&k.as_str())
                || matches!(k.as_str(), "parent" | "parentfield" | "parenttype");
            if (carried || dt.field(k).is_some()) && !self.named_locally(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        for row in &self.rows {
            if !row.remote.is_empty() {
                if let Some(fields) = remote_fields {
                    if !fields.contains(&row.remote)
                        && !STANDARD_COLUMNS.contains(&row.remote.as_str())
                    {
                        return Err(Error::Validation(format!(
                            "{}: the producer's {} has no field {:?}",
                            row.label(self),
                            self.remote_doctype,
                            row.remote
                        )));
                    }
                }
            }
            match &row.kind {
                RowKind::Plain => {
                    let v = remote_doc.get(&row.remote);
                    if !row.remote.is_empty() && !is_empty(v) {
                        out.insert(row.local.clone(), v.cloned().unwrap_or(Value::Null));
                    } else if !row.default.is_empty() {
                        out.insert(row.local.clone(), Value::String(row.default.clone()));
                    }
                }
                RowKind::ChildTable(inner) => {
                    let rows = remote_doc
                        .get(&row.remote)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let mut mapped = Vec::with_capacity(rows.len());
                    for r in rows {
                        let r = store::doc_from(r);
                        let mut m = inner.map_doc(reg, &r, None)?;
                        for k in ["name", "idx"] {
                            if let Some(v) = r.get(k) {
                                m.insert(k.into(), v.clone());
                            }
                        }
                        mapped.push(Value::Object(m));
                    }
                    out.insert(row.local.clone(), Value::Array(mapped));
                }
                RowKind::Document { .. } => {}
            }
        }
        Ok(out)
    }

    /// Maps a Frappe diff (`changed`, `added`, `removed`, `row_changed`) field by field.
    pub fn map_diff(&self, reg: &Registry, diff: &Value) -> Result<Value> {
        let dt = reg.get(&self.local_doctype)?;
        let mut out = Map::new();
        if let Some(changed) = diff.get("changed").and_then(Value::as_object) {
            let mut local = Map::new();
            for (k, v) in changed {
                let rows: Vec<&FieldRow> = self
                    .rows
                    .iter()
                    .filter(|r| r.remote == *k && matches!(r.kind, RowKind::Plain))
                    .collect();
                for r in &rows {
                    let v = if is_empty(Some(v)) && !r.default.is_empty() {
                        Value::String(r.default.clone())
                    } else {
                        v.clone()
                    };
                    local.insert(r.local.clone(), v);
                }
                if rows.is_empty() && !self.named_locally(k) && keeps_name(&dt, k) {
                    local.insert(k.clone(), v.clone());
                }
            }
            out.insert("changed".into(), Value::Object(local));
        }
        for part in ["added", "row_changed", "removed"] {
            let Some(tables) = diff.get(part).and_then(Value::as_object) else {
                continue;
            };
            let mut local = Map::new();
            for (table, rows) in tables {
                let child = self.rows.iter().find_map(|r| match &r.kind {
                    RowKind::ChildTable(inner) if r.remote == *table => Some((r, inner)),
                    _ => None,
                });
                match child {
                    Some((row, inner)) if part != "removed" => {
                        let mut mapped = Vec::new();
                        for r in rows.as_array().into_iter().flatten() {
                            let r = store::doc_from(r.clone());
                            let mut m = inner.map_doc(reg, &r, None)?;
                            for k in ["name", "idx"] {
                                if let Some(v) = r.get(k) {
                                    m.insert(k.into(), v.clone());
                                }
                            }
                            mapped.push(Value::Object(m));
                        }
                        local.insert(row.local.clone(), Value::Array(mapped));
                    }
                    Some((row, _)) => {
                        local.insert(row.local.clone(), rows.clone());
                    }
                    None if !self.named_locally(table) && keeps_name(&dt, table) => {
                        local.insert(table.clone(), rows.clone());
                    }
                    None => {}
                }
            }
            out.insert(part.into(), Value::Object(local));
        }
        Ok(Value::Object(out))
    }

    /// True when a diff touches what a Document row is made from (its source field or a
    /// field its filters read), so the row must be resolved again.
    pub fn diff_touches(&self, row: &FieldRow, diff: &Value) -> bool {
        let Some(changed) = diff.get("changed").and_then(Value::as_object) else {
            return false;
        };
        if changed.contains_key(&row.remote) {
            return true;
        }
        match &row.kind {
            RowKind::Document { filters, .. } => filters
                .values()
                .filter_map(Value::as_str)
                .any(|f| changed.contains_key(f)),
            _ => false,
        }
    }
}

fn keeps_name(dt: &DocType, field: &str) -> bool {
    field == "docstatus" || dt.field(field).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg() -> Registry {
        Registry::builtin()
    }

    fn lead_from_opportunity() -> Mapping {
        Mapping {
            name: "Lead from Opportunity".into(),
            local_doctype: "Lead".into(),
            remote_doctype: "ERPNext Opportunity".into(),
            rows: vec![
                FieldRow {
                    idx: 1,
                    local: "lead_name".into(),
                    remote: "full_name".into(),
                    default: String::new(),
                    kind: RowKind::Plain,
                },
                FieldRow {
                    idx: 2,
                    local: "email_id".into(),
                    remote: "email".into(),
                    default: String::new(),
                    kind: RowKind::Plain,
                },
                FieldRow {
                    idx: 3,
                    local: "status".into(),
                    remote: String::new(),
                    default: "Open".into(),
                    kind: RowKind::Plain,
                },
            ],
        }
    }

    #[test]
    fn documents_map_by_rows_then_by_same_name() {
        let m = lead_from_opportunity();
        let remote = store::doc_from(json!({
            "name": "EO-1", "full_name": "Ana", "email": "ana@x", "phone": "123", "country": "Brazil", "unknown": 1
        }));
        let local = m.map_doc(&reg(), &remote, None).unwrap();
        assert_eq!(local["lead_name"], json!("Ana"));
        assert_eq!(local["email_id"], json!("ana@x"));
        assert_eq!(local["phone"], json!("123"), "same-named field kept");
        assert_eq!(local["status"], json!("Open"), "default used");
        assert!(!local.contains_key("unknown") && !local.contains_key("full_name"));
    }

    #[test]
    fn a_row_naming_a_missing_remote_field_fails_with_the_row() {
        let m = lead_from_opportunity();
        let fields: HashSet<String> = ["full_name", "phone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = m
            .map_doc(
                &reg(),
                &store::doc_from(json!({"full_name": "A"})),
                Some(&fields),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 2 (email_id)") && e.contains("\"email\""),
            "{e}"
        );
    }

    #[test]
    fn child_tables_map_row_by_row_keeping_row_names() {
        let rows = Mapping {
            name: "rows".into(),
            local_doctype: "Sales Invoice Item".into(),
            remote_doctype: "Remote Line".into(),
            rows: vec![FieldRow {
                idx: 1,
                local: "qty".into(),
                remote: "quantity".into(),
                default: String::new(),
                kind: RowKind::Plain,
            }],
        };
        let m = Mapping {
            name: "invoice".into(),
            local_doctype: "Sales Invoice".into(),
            remote_doctype: "Remote Invoice".into(),
            rows: vec![FieldRow {
                idx: 1,
                local: "items".into(),
                remote: "lines".into(),
                default: String::new(),
                kind: RowKind::ChildTable(Box::new(rows)),
            }],
        };
        let remote = store::doc_from(json!({
            "customer": "C", "lines": [{"name": "r1", "idx": 1, "item_code": "I", "quantity": 4}]
        }));
        let local = m.map_doc(&reg(), &remote, None).unwrap();
        assert_eq!(
            local["items"],
            json!([{"item_code": "I", "qty": 4, "name": "r1", "idx": 1}])
        );
        let d = m
            .map_diff(
                &reg(),
                &json!({"row_changed": {"lines": [{"name": "r1", "quantity": 5}]}, "removed": {"lines": ["r0"]}}),
            )
            .unwrap();
        assert_eq!(d["row_changed"]["items"], json!([{"qty": 5, "name": "r1"}]));
        assert_eq!(d["removed"]["items"], json!(["r0"]));
    }

    #[test]
    fn diffs_map_field_by_field() {
        let m = lead_from_opportunity();
        let d = m
            .map_diff(
                &reg(),
                &json!({"changed": {"full_name": "Bia", "phone": "9", "email": "", "nope": 1}}),
            )
            .unwrap();
        assert_eq!(
            d["changed"],
            json!({"lead_name": "Bia", "phone": "9", "email_id": ""})
        );
    }
}
