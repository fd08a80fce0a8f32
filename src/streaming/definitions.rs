//! Types that follow the data: a consumer's local types made or extended from the producer's
//! own definitions (`getdoctype`), so that a document arrives whole whatever the consumer had.
//!
//! A subscribed type the consumer lacks is created from the producer's definition, child
//! tables first; one it has gains the producer's fields it lacks as Custom Fields (a field both
//! have keeps the local definition). Types the definition links to and the consumer lacks are
//! created `follow_link_depth` levels deep (1 by default); a Link to a type that is not made
//! here becomes a Data field holding the name as sent. A type made from a definition takes its
//! permission rows for roles that exist here, else System Manager's only; nothing executable in
//! a definition (`__js`, `__css`, client scripts) is kept: only the DocType's own fields are
//! read. The definition is read again when a document brings a field its type lacks.
//!
//! Must not apply documents (`apply` does) nor change a field a type already has.

use super::remote::RemoteSite;
use crate::error::{Error, Result};
use crate::meta::{DocType, FieldType, Registry, CHILD_COLUMNS, STANDARD_COLUMNS};
use crate::service::documents::WriteFlags;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Doc};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// What following a type did, for the terminal and the sync log.
#[derive(Debug, Default)]
pub struct Followed {
    /// Types made from the producer's definitions.
    pub created: Vec<String>,
    /// Fields added, as `Type.field`.
    pub added: Vec<String>,
}

impl Followed {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.added.is_empty()
    }
}

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// Keys of a document that are not fields: standard columns, dunder keys and Frappe's own
/// underscore columns (`_user_tags`, `_assign`, ...).
pub fn is_field_key(key: &str) -> bool {
    !(key.starts_with('_')
        || key == "doctype"
        || STANDARD_COLUMNS.contains(&key)
        || CHILD_COLUMNS.contains(&key))
}

/// The producer's fields (of `doc`, an incoming document or the `changed` part of a diff, and
/// of its child rows) that the local type `dt` does not hold: `(type, field)`.
pub fn unheld(reg: &Registry, dt: &DocType, doc: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in doc {
        if !is_field_key(k) {
            continue;
        }
        let Some(f) = dt.field(k) else {
            out.push((dt.name.clone(), k.clone()));
            continue;
        };
        if !f.fieldtype.is_table() {
            continue;
        }
        let Ok(child) = reg.get(&f.options) else {
            continue;
        };
        for row in v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
        {
            for (ck, _) in row {
                if is_field_key(ck) && child.field(ck).is_none() {
                    out.push((child.name.clone(), ck.clone()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Makes the local type `doctype` hold everything the producer's definition of it has
/// (creating it, its child tables and the types it links to when missing).
pub async fn follow(site: &Site, remote: &RemoteSite, doctype: &str) -> Result<Followed> {
    let mut f = Follower {
        site,
        remote,
        done: Followed::default(),
        seen: HashSet::new(),
        roles: roles(site).await?,
    };
    let depth = site.config.follow_link_depth;
    f.ensure(doctype, depth).await?;
    if !f.done.is_empty() {
        tracing::info!(
            producer = %remote.url,
            created = %f.done.created.join(", "),
            fields = f.done.added.len(),
            "types follow the producer's definitions"
        );
    }
    Ok(f.done)
}

async fn roles(site: &Site) -> Result<HashSet<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(&mut conn, r#"SELECT name FROM "tabRole""#, &[]).await?;
    Ok(rows.iter().map(|r| text(r.get("name"))).collect())
}

struct Follower<'a> {
    site: &'a Site,
    remote: &'a RemoteSite,
    done: Followed,
    /// Types already ensured in this run (a type linking back to one being made).
    seen: HashSet<String>,
    /// Roles that exist here.
    roles: HashSet<String>,
}

impl Follower<'_> {
    /// Ensures `doctype` with its child tables, and with the types it links to while `depth`
    /// allows.
    async fn ensure(&mut self, doctype: &str, depth: u32) -> Result<()> {
        if !self.seen.insert(doctype.to_string()) {
            return Ok(());
        }
        let docs = self.remote.definition(doctype).await?;
        let by_name: HashMap<String, Value> = docs
            .iter()
            .map(|d| (text(d.get("name")), d.clone()))
            .collect();
        let main = docs[0].clone();
        // Child tables first: a type's Table field names them.
        for f in fields_of(&main) {
            if is_table(&f) {
                let child = text(f.get("options"));
                if let Some(def) = by_name.get(&child) {
                    Box::pin(self.ensure_one(def, depth)).await?;
                }
            }
        }
        self.ensure_one(&main, depth).await
    }

    /// Makes or extends one type from its definition (its child types exist by now).
    async fn ensure_one(&mut self, def: &Value, depth: u32) -> Result<()> {
        let name = text(def.get("name"));
        self.seen.insert(name.clone());
        // The types it links to, first, while the depth allows.
        if depth > 0 {
            for f in fields_of(def) {
                let target = text(f.get("options"));
                if text(f.get("fieldtype")) == "Link"
                    && target != name
                    && !self.site.meta().exists(&target)
                    && !self.seen.contains(&target)
                {
                    if let Err(e) = Box::pin(self.ensure(&target, depth - 1)).await {
                        tracing::warn!(producer = %self.remote.url, doctype = %target, "the linked type could not be made from the producer's definition: {e}");
                    }
                }
            }
        }
        let reg = self.site.meta();
        match reg.get(&name) {
            Ok(local) => self.extend(&reg, &local, def).await,
            Err(_) => self.create(&reg, def).await,
        }
    }

    /// Adds the definition's fields that `local` lacks, as Custom Fields, in one transaction.
    async fn extend(&mut self, reg: &Registry, local: &DocType, def: &Value) -> Result<()> {
        let mut inputs = Vec::new();
        let mut after = String::new();
        for f in fields_of(def) {
            let fieldname = text(f.get("fieldname"));
            let Some(field) = held_field(reg, &local.name, &f) else {
                continue;
            };
            if local.field(&fieldname).is_some() || !is_field_key(&fieldname) {
                after = fieldname;
                continue;
            }
            if FieldType::parse(&text(field.get("fieldtype"))).is_some_and(|t| {
                matches!(
                    t,
                    FieldType::SectionBreak | FieldType::ColumnBreak | FieldType::TabBreak
                )
            }) {
                continue;
            }
            let mut cf = field;
            cf.insert("doctype".into(), json!("Custom Field"));
            cf.insert("dt".into(), json!(local.name));
            cf.insert("insert_after".into(), json!(after));
            self.done.added.push(format!("{}.{fieldname}", local.name));
            after = fieldname;
            inputs.push(("Custom Field".to_string(), cf));
        }
        if inputs.is_empty() {
            return Ok(());
        }
        self.site
            .insert_docs(&Caller::administrator(), inputs, &flags())
            .await
            .map(|_| ())
            .or_else(already_made)
    }

    /// Makes a type from its definition.
    async fn create(&mut self, reg: &Registry, def: &Value) -> Result<()> {
        let name = text(def.get("name"));
        let mut doc = Doc::new();
        doc.insert("name".into(), json!(name));
        for k in [
            "module",
            "istable",
            "issingle",
            "is_submittable",
            "autoname",
            "title_field",
            "sort_field",
        ] {
            if let Some(v) = def.get(k).filter(|v| !v.is_null()) {
                doc.insert(k.into(), v.clone());
            }
        }
        let fields: Vec<Value> = fields_of(def)
            .iter()
            .filter(|f| is_field_key(&text(f.get("fieldname"))))
            .filter_map(|f| held_field(reg, &name, f))
            .map(Value::Object)
            .collect();
        if !fields
            .iter()
            .any(|f| text(f.get("fieldname")) == text(def.get("title_field")))
        {
            doc.remove("title_field");
        }
        doc.insert("fields".into(), Value::Array(fields));
        doc.insert("permissions".into(), json!(self.permissions(def)));
        let made = self
            .site
            .insert_doc(&Caller::administrator(), "DocType", doc, &flags())
            .await;
        match made {
            Ok(_) => {
                self.done.created.push(name);
                Ok(())
            }
            Err(e) => already_made(e),
        }
    }

    /// The definition's permission rows for roles that exist here, else System Manager's.
    fn permissions(&self, def: &Value) -> Vec<Value> {
        let keys = ["read", "write", "create", "delete", "submit", "cancel"];
        let kept: Vec<Value> = def
            .get("permissions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| self.roles.contains(&text(p.get("role"))))
            .filter(|p| text(p.get("permlevel")).trim_start_matches('0').is_empty())
            .map(|p| {
                let mut row = Map::new();
                row.insert("role".into(), json!(text(p.get("role"))));
                for k in keys {
                    row.insert(k.into(), p.get(k).cloned().unwrap_or(json!(0)));
                }
                Value::Object(row)
            })
            .collect();
        if !kept.is_empty() {
            return kept;
        }
        let submittable = checked(def.get("is_submittable"));
        vec![
            json!({"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1,
                    "submit": submittable as i64, "cancel": submittable as i64}),
        ]
    }
}

/// The fields `local` holds as Data that `def` (the producer's definition of that type) makes
/// Links to a type this site has, as `(field, linked type)`: a field both have keeps the local
/// definition, and the apply path follows these as links all the same.
pub fn links_held_as_text(reg: &Registry, local: &DocType, def: &Value) -> Vec<(String, String)> {
    fields_of(def)
        .iter()
        .filter(|f| text(f.get("fieldtype")) == "Link")
        .filter_map(|f| {
            let field = local.field(&text(f.get("fieldname")))?;
            let target = text(f.get("options"));
            (field.fieldtype == FieldType::Data && reg.exists(&target))
                .then(|| (field.fieldname.clone(), target))
        })
        .collect()
}

/// Writes made by following are the site's own work.
fn flags() -> WriteFlags {
    WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: true,
        ..Default::default()
    }
}

/// Another process (or an earlier pull) made it first: as good as made here.
fn already_made(e: Error) -> Result<()> {
    match e {
        Error::DuplicateEntry(_) => Ok(()),
        other => Err(other),
    }
}

/// A Check as a Frappe site sends it: set when 1 or true.
pub fn checked(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.as_i64() == Some(1) || v.as_bool() == Some(true))
}

/// The fields a type's definition (`getdoctype`'s first doc) makes mandatory.
pub fn required_fields(def: &Value) -> std::collections::HashSet<String> {
    fields_of(def)
        .iter()
        .filter(|f| checked(f.get("reqd")))
        .map(|f| text(f.get("fieldname")))
        .collect()
}

fn fields_of(def: &Value) -> Vec<Map<String, Value>> {
    def.get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_object().cloned())
        .collect()
}

fn is_table(f: &Map<String, Value>) -> bool {
    matches!(
        text(f.get("fieldtype")).as_str(),
        "Table" | "Table MultiSelect"
    )
}

/// A field of a producer's definition as this site can hold it, or None when it cannot (a
/// child table whose type is not here): its own keys only; a field type this site does not
/// know, or a Link to a type that is not here, becomes Data holding the value as sent; a
/// `fetch_from` is left out, and so is a default this site cannot honour.
fn held_field(reg: &Registry, owner: &str, f: &Map<String, Value>) -> Option<Map<String, Value>> {
    const KEYS: [&str; 17] = [
        "fieldname",
        "label",
        "fieldtype",
        "options",
        "reqd",
        "unique",
        "default",
        "read_only",
        "hidden",
        "in_list_view",
        "allow_on_submit",
        "description",
        "fetch_from",
        "fetch_if_empty",
        "set_only_once",
        "depends_on",
        "mandatory_depends_on",
    ];
    let mut out: Map<String, Value> = KEYS
        .iter()
        .filter_map(|k| {
            f.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    let fieldtype = text(f.get("fieldtype"));
    let options = text(f.get("options"));
    let as_data = |out: &mut Map<String, Value>, why: String| {
        out.insert("fieldtype".into(), json!("Data"));
        out.insert("options".into(), json!(""));
        let d = text(out.get("description"));
        out.insert(
            "description".into(),
            json!(if d.is_empty() {
                why
            } else {
                format!("{d} ({why})")
            }),
        );
    };
    match FieldType::parse(&fieldtype) {
        // What an HTML field shows is the producer's markup (scripts included): not kept.
        Some(FieldType::Html) => {
            out.remove("options");
        }
        None => as_data(
            &mut out,
            format!("{fieldtype} on the producer, held here as text"),
        ),
        Some(t) if t.is_table() && !reg.get(&options).is_ok_and(|c| c.istable) => return None,
        Some(FieldType::Link) if options != owner && !reg.exists(&options) => as_data(
            &mut out,
            format!("a Link to {options} on the producer; {options} is not on this site"),
        ),
        _ => {}
    }
    // `fetch_from` is the producer's behaviour: values arrive as it computed them. A default
    // this site cannot honour (a choice it lacks) is left out.
    out.remove("fetch_from");
    out.remove("fetch_if_empty");
    let field: Option<crate::meta::DocField> =
        serde_json::from_value(Value::Object(out.clone())).ok();
    if field.is_some_and(|f| f.check_behaviour(reg, &[]).is_err()) {
        out.remove("default");
    }
    Some(out)
}
