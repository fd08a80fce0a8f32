//! Links: every Link and Dynamic Link of a document (child rows included) must name a
//! document that exists, checked in one statement (which also carries the change log's probe);
//! and a document others link to cannot be deleted. Reads only.
//! Must not write.

use super::name_text;
use super::name_value;
use crate::error::{Error, Result};
use crate::meta::{DocType, FieldType, Registry};
use crate::service::hooks::ChangeLog;
use crate::store::{self, Conn, Doc, Param};
use serde_json::Value;
use std::sync::Arc;

/// Every (field, target type, target name) a document links to, child rows included.
pub fn links_of(reg: &Registry, dt: &DocType, doc: &Doc) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for f in &dt.fields {
        match f.fieldtype {
            FieldType::Link | FieldType::DynamicLink => {
                let value = doc.get(&f.fieldname).map(name_text).unwrap_or_default();
                if value.is_empty() {
                    continue;
                }
                let target = if f.fieldtype == FieldType::Link {
                    f.options.clone()
                } else {
                    doc.get(&f.options).map(name_text).unwrap_or_default()
                };
                if target.is_empty() {
                    return Err(Error::LinkValidation(format!(
                        "{} is set to {value} but its document type ({}) is empty",
                        f.label(),
                        f.options
                    )));
                }
                out.push((f.label().to_string(), target, value));
            }
            FieldType::Table | FieldType::TableMultiSelect => {
                let child = reg.get(&f.options)?;
                for r in doc
                    .get(&f.fieldname)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(r) = r.as_object() {
                        out.extend(links_of(reg, &child, r)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The link look-ups of one document: what the registry answers by itself, and one statement
/// for the rest (each part tagged with its place in `by_target`) that also asks whether the
/// document's type is streamed, saving the write's log a round trip.
pub(super) struct LinkCheck {
    links: Vec<(String, String, String)>,
    by_target: Vec<(String, Vec<String>)>,
    /// Links found missing without the statement.
    missing: Vec<(String, String)>,
    /// The places in `by_target` the statement looks up.
    queried: Vec<usize>,
    /// The statement (empty when nothing needs the database) and its parameters.
    sql: String,
    params: Vec<Param>,
    /// Whether the type is streamed, when known without the statement.
    streamed: Option<bool>,
}

/// The tag of the streamed probe's row, apart from the parts' (places from 0).
const STREAMED_TAG: i64 = -1;

impl LinkCheck {
    pub(super) fn new(
        reg: &Registry,
        dt: &DocType,
        doc: &Doc,
        log: Option<&Arc<dyn ChangeLog>>,
    ) -> Result<LinkCheck> {
        // One query per target type, however many links point at it (an invoice's item rows).
        let links = links_of(reg, dt, doc)?;
        let mut by_target: Vec<(String, Vec<String>)> = Vec::new();
        for (_, target, value) in &links {
            match by_target.iter_mut().find(|(t, _)| t == target) {
                Some((_, v)) if !v.contains(value) => v.push(value.clone()),
                Some(_) => {}
                None => by_target.push((target.clone(), vec![value.clone()])),
            }
        }
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let mut queried: Vec<usize> = Vec::new();
        for (i, (target, values)) in by_target.iter().enumerate() {
            if target == "DocType" {
                missing.extend(
                    values
                        .iter()
                        .filter(|v| !reg.exists(v))
                        .map(|v| (target.clone(), v.clone())),
                );
                continue;
            }
            let Ok(tdt) = reg.get(target) else {
                missing.extend(values.iter().map(|v| (target.clone(), v.clone())));
                continue;
            };
            if tdt.issingle {
                missing.extend(
                    values
                        .iter()
                        .filter(|v| **v != tdt.name)
                        .map(|v| (target.clone(), v.clone())),
                );
                continue;
            }
            let mut placeholders = Vec::with_capacity(values.len());
            for v in values {
                params.push(Param::from_value(
                    &name_value(&tdt, v),
                    tdt.column_storage("name"),
                ));
                placeholders.push(format!("${}", params.len()));
            }
            parts.push(format!(
                "SELECT {i} AS t, CAST(name AS TEXT) AS name FROM {} WHERE name IN ({})",
                store::q(&tdt.table()),
                placeholders.join(", ")
            ));
            queried.push(i);
        }
        // Without a change log, nothing is logged.
        let streamed = log.map_or(Some(false), |l| l.known(dt));
        if let (Some(log), None, false) = (log, streamed, parts.is_empty()) {
            params.push(Param::text(&dt.name));
            parts.push(log.probe(STREAMED_TAG, params.len()));
        }
        Ok(LinkCheck {
            links,
            by_target,
            missing,
            queried,
            sql: parts.join(" UNION ALL "),
            params,
            streamed,
        })
    }

    /// The statement as the guard of an insert, when there is one and no link is known to be
    /// missing already.
    pub(super) fn take_guard(&mut self) -> Option<store::Guard> {
        if self.sql.is_empty() || !self.missing.is_empty() {
            return None;
        }
        let expect = self
            .queried
            .iter()
            .map(|i| self.by_target[*i].1.len())
            .sum();
        Some(store::Guard {
            sql: std::mem::take(&mut self.sql),
            params: std::mem::take(&mut self.params),
            expect,
        })
    }

    /// Runs the statement, when there is one, and judges.
    pub(super) async fn run(self, conn: &mut Conn) -> Result<Option<bool>> {
        let rows = match self.sql.is_empty() {
            true => Vec::new(),
            false => store::fetch_docs(conn, &self.sql, &self.params).await?,
        };
        self.verdict(&rows)
    }

    /// Fails on a link to a missing document, given the statement's rows; whether the type
    /// is streamed, when known.
    pub(super) fn verdict(mut self, rows: &[Doc]) -> Result<Option<bool>> {
        let found: Vec<(i64, String)> = rows
            .iter()
            .map(|r| {
                (
                    r.get("t").and_then(Value::as_i64).unwrap_or(i64::MIN),
                    name_text(r.get("name").unwrap_or(&Value::Null)),
                )
            })
            .collect();
        // The probe went with the look-ups whenever they ran and the answer was not known.
        if self.streamed.is_none() && !self.queried.is_empty() {
            self.streamed = Some(found.iter().any(|(t, _)| *t == STREAMED_TAG));
        }
        for i in &self.queried {
            let (target, values) = &self.by_target[*i];
            self.missing.extend(
                values
                    .iter()
                    .filter(|v| !found.iter().any(|(t, n)| *t == *i as i64 && n == *v))
                    .map(|v| (target.clone(), v.clone())),
            );
        }
        if let Some((label, target, value)) = self
            .links
            .iter()
            .find(|(_, t, v)| self.missing.iter().any(|(mt, mv)| mt == t && mv == v))
        {
            return Err(Error::LinkValidation(format!(
                "Could not find {label}: {target} {value}"
            )));
        }
        Ok(self.streamed)
    }
}

/// Fails on a link to a missing document; whether `dt` is streamed, when the look-up learned it.
pub(super) async fn check_links(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    log: Option<&Arc<dyn ChangeLog>>,
) -> Result<Option<bool>> {
    LinkCheck::new(reg, dt, doc, log)?.run(conn).await
}

pub(super) async fn check_not_linked(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    name: &str,
) -> Result<()> {
    for l in reg.links_to(&dt.name) {
        if matches!(l.doctype.as_str(), "Event Update Log" | "Event Sync Log") {
            continue;
        }
        let holder = reg.get(&l.doctype)?;
        if holder.issingle {
            continue;
        }
        let col = if holder.istable {
            "parent, parenttype"
        } else {
            "name"
        };
        let mut sql = format!(
            "SELECT {col} FROM {} WHERE {} = $1",
            store::q(&holder.table()),
            store::q(&l.fieldname)
        );
        let mut params = vec![store::Param::Text(Some(name.into()))];
        if let Some(tf) = &l.dynamic_type_field {
            sql.push_str(&format!(" AND {} = $2", store::q(tf)));
            params.push(store::Param::Text(Some(dt.name.clone())));
        }
        if holder.name == dt.name && !holder.istable {
            params.push(store::Param::Text(Some(name.into())));
            sql.push_str(&format!(" AND name != ${}", params.len()));
        }
        sql.push_str(" LIMIT 1");
        let hit = store::fetch_docs(conn, &sql, &params).await?;
        if let Some(h) = hit.first() {
            let (ht, hn) = if holder.istable {
                (
                    h.get("parenttype").map(name_text).unwrap_or_default(),
                    h.get("parent").map(name_text).unwrap_or_default(),
                )
            } else {
                (
                    holder.name.clone(),
                    h.get("name").map(name_text).unwrap_or_default(),
                )
            };
            return Err(Error::LinkExists(format!(
                "Cannot delete or cancel because {} {name} is linked with {ht} {hn}",
                dt.name
            )));
        }
    }
    Ok(())
}
