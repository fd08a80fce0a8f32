//! The one write path for documents: insert, update, submit, cancel, delete, rename, and reads.
//!
//! Every write runs in one transaction that also carries the type's hooks and the update log,
//! so a change and its side effects commit together or not at all.

use super::permissions::Caller;
use crate::doctypes;
use crate::error::{Error, Result};
use crate::meta::{DocField, DocType, FieldType, PermType, Registry, Storage};
use crate::site::Site;
use crate::store::{self, Conn, Doc, ListQuery, Param};
use crate::streaming::update_log;
use serde_json::Value;

/// Options of a write that server code (not API clients) may set.
#[derive(Debug, Clone, Default)]
pub struct WriteFlags {
    /// Skip DocPerm checks (server work).
    pub ignore_permissions: bool,
    /// Allow setting read-only fields.
    pub set_read_only: bool,
    /// Keep the name given in the document whatever the naming rule.
    pub keep_name: bool,
    /// Keep `owner`, `creation` and `modified` as given (documents copied from another site).
    pub keep_timestamps: bool,
    /// Skip Link validation.
    pub ignore_links: bool,
    /// The site where the change was first made, when it came from another site.
    pub origin: Option<String>,
    /// Made from another site's document of another type (a Document Type Mapping): a local
    /// document, so local defaults and fetched values apply. Other applied documents are
    /// stored as sent.
    pub mapped: bool,
}

/// Side effects collected while a document is prepared, applied after its row is written.
#[derive(Debug, Default)]
pub struct Pending {
    /// True when the write added update logs (consumers are notified after commit).
    pub logs_written: bool,
    /// True when the save came from the other site of a stream (`incoming_change`).
    pub incoming: bool,
    /// Work to do once the transaction has committed.
    pub after_commit: Vec<AfterCommit>,
    /// Password fields to encrypt: (fieldname, clear value).
    pub secrets: Vec<(String, String)>,
    /// A new login password (User only).
    pub login_password: Option<String>,
    /// True when the write changes document types (reload meta after commit).
    pub meta_changed: bool,
    /// True when the document comes from another site's update log: it is stored as sent
    /// (validation only: no defaults, fetched values or recomputation).
    pub applied: bool,
}

/// Work that must wait for the commit (calls to other sites, notifications).
#[derive(Debug, Clone)]
pub enum AfterCommit {
    /// Producer: tell a consumer the statuses of its rows.
    TellConsumer(String),
    /// Consumer: send an edited Event Producer to its producer.
    SendToProducer(String),
    /// Consumer: remove the registration on a producer (Event Producer deleted).
    Unregister {
        producer_url: String,
        api_key: String,
        api_secret: String,
    },
    /// Consumer: pull now (a subscription was made or approved).
    WakePuller,
    /// Consumer: an Event Producer changed; pull now, and its long poll asks anew.
    ProducerChanged(String),
}

/// The JSON value of a document name for a type (integers for autoincrement types).
pub fn name_value(dt: &DocType, name: &str) -> Value {
    if dt.column_storage("name") == Storage::Int {
        name.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(name.into()))
    } else {
        Value::String(name.into())
    }
}

/// A name as text.
pub fn name_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn not_found(dt: &DocType, name: &str) -> Error {
    Error::DoesNotExist(format!("{} {} not found", dt.name, name))
}

/// The name of an amendment of `from`, as Frappe names it: `from-1`, and `root-(n+1)` when
/// `from` is itself the amendment `root-n`. Only a cancelled document may be amended.
async fn amended_name(conn: &mut Conn, reg: &Registry, dt: &DocType, from: &str) -> Result<String> {
    if !dt.is_submittable || dt.field("amended_from").is_none() {
        return Err(Error::Validation(format!(
            "{} cannot be amended: only a submittable type with an amended_from field can",
            dt.name
        )));
    }
    let source = load_doc(conn, reg, dt, from).await?.ok_or_else(|| {
        Error::Validation(format!(
            "Cannot amend {} {from}: it does not exist",
            dt.name
        ))
    })?;
    if source.get("docstatus").and_then(Value::as_i64) != Some(2) {
        return Err(Error::Validation(format!(
            "Cannot amend {} {from}: only a cancelled document can be amended",
            dt.name
        )));
    }
    let amended = source
        .get("amended_from")
        .map(name_text)
        .is_some_and(|a| !a.is_empty());
    Ok(match from.rsplit_once('-') {
        Some((root, n)) if amended => match n.parse::<u64>() {
            Ok(n) => format!("{root}-{}", n + 1),
            Err(_) => format!("{from}-1"),
        },
        _ => format!("{from}-1"),
    })
}

/// Reads a whole document (child rows included) inside a connection or transaction.
pub async fn load_doc(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    name: &str,
) -> Result<Option<Doc>> {
    let Some(row) = store::load_row(conn, dt, &name_value(dt, name)).await? else {
        return Ok(None);
    };
    let mut doc = Doc::with_capacity(row.len() + 2);
    doc.insert("doctype".into(), Value::String(dt.name.clone()));
    let real_name = name_text(row.get("name").unwrap_or(&Value::Null));
    doc.extend(row);
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        let rows = store::load_children(conn, &child, &dt.name, &real_name, &tf.fieldname).await?;
        let rows = rows
            .into_iter()
            .map(|mut r| {
                let mut m = Doc::with_capacity(r.len() + 1);
                m.insert("doctype".into(), Value::String(child.name.clone()));
                m.append(&mut r);
                Value::Object(m)
            })
            .collect();
        doc.insert(tf.fieldname.clone(), Value::Array(rows));
    }
    Ok(Some(doc))
}

/// Reads a document to change it: its row stays locked until the transaction ends, so what
/// the write compares against (`modified`, the old values its diff is made from) cannot
/// change under it.
pub async fn load_doc_for_update(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    name: &str,
) -> Result<Option<Doc>> {
    store::lock_row(conn, dt, &name_value(dt, name)).await?;
    load_doc(conn, reg, dt, name).await
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn is_masked(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '*')
}

/// Copies the input's fields over `base`, coerced by type; table fields become child rows.
fn merge_fields(
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
                let c = t.coerce(v, f.label(), &f.options)?;
                base.insert(f.fieldname.clone(), c);
            }
        }
    }
    Ok(())
}

fn apply_defaults(dt: &DocType, doc: &mut Doc) {
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
fn resolve_dynamic_defaults(site: &Site, caller: &Caller, dt: &DocType, input: &mut Doc) {
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
async fn fetch_linked(
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

/// Refuses a change to a `set_only_once` field that already had a value.
fn check_set_only_once(dt: &DocType, old: &Doc, doc: &Doc) -> Result<()> {
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

fn check_mandatory(reg: &Registry, dt: &DocType, doc: &Doc) -> Result<()> {
    let mut missing = Vec::new();
    for f in &dt.fields {
        if f.reqd
            && !matches!(
                f.fieldtype,
                FieldType::SectionBreak
                    | FieldType::ColumnBreak
                    | FieldType::TabBreak
                    | FieldType::Password
            )
            && is_empty(doc.get(&f.fieldname))
        {
            missing.push(format!("{} ({})", f.label(), f.fieldname));
        }
    }
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
                check_mandatory(reg, &child, r).map_err(|e| match e {
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
struct LinkCheck {
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
    fn new(reg: &Registry, dt: &DocType, doc: &Doc) -> Result<LinkCheck> {
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
        let streamed = update_log::never_streamed(dt).then_some(false);
        if !parts.is_empty() && streamed.is_none() {
            params.push(Param::text(&dt.name));
            parts.push(update_log::streamed_probe(STREAMED_TAG, params.len()));
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
    fn take_guard(&mut self) -> Option<store::Guard> {
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
    async fn run(self, conn: &mut Conn) -> Result<Option<bool>> {
        let rows = match self.sql.is_empty() {
            true => Vec::new(),
            false => store::fetch_docs(conn, &self.sql, &self.params).await?,
        };
        self.verdict(&rows)
    }

    /// Fails on a link to a missing document, given the statement's rows; whether the type
    /// is streamed, when known.
    fn verdict(mut self, rows: &[Doc]) -> Result<Option<bool>> {
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
async fn check_links(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
) -> Result<Option<bool>> {
    LinkCheck::new(reg, dt, doc)?.run(conn).await
}

/// Writes the document's child rows (after removing the old ones when `replace`); returns
/// them as stored, by table field.
async fn write_children(
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    doc: &Doc,
    now: &str,
    user: &str,
    replace: Option<&[String]>,
) -> Result<Vec<(String, Vec<Doc>)>> {
    let parent = name_text(doc.get("name").unwrap_or(&Value::Null));
    let docstatus = doc.get("docstatus").cloned().unwrap_or(Value::from(0));
    let mut written = Vec::new();
    for tf in dt.table_fields() {
        let child = reg.get(&tf.options)?;
        if let Some(tables) = replace {
            if !tables.contains(&tf.fieldname) {
                continue;
            }
            store::delete_child_rows(conn, &child, &dt.name, &parent, &tf.fieldname).await?;
        }
        let mut rows = Vec::new();
        for (i, r) in doc
            .get(&tf.fieldname)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(r) = r.as_object() else { continue };
            let mut row = Doc::with_capacity(child.fields.len() + 12);
            row.insert("doctype".into(), Value::String(child.name.clone()));
            row.insert("name".into(), r.get("name").cloned().unwrap_or(Value::Null));
            row.insert(
                "owner".into(),
                r.get("owner")
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::String(user.into())),
            );
            row.insert(
                "creation".into(),
                r.get("creation")
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or_else(|| Value::String(now.into())),
            );
            row.insert("modified".into(), Value::String(now.into()));
            row.insert("modified_by".into(), Value::String(user.into()));
            row.insert("docstatus".into(), docstatus.clone());
            row.insert("idx".into(), Value::from(i + 1));
            row.insert("parent".into(), Value::String(parent.clone()));
            row.insert("parentfield".into(), Value::String(tf.fieldname.clone()));
            row.insert("parenttype".into(), Value::String(dt.name.clone()));
            for f in child.data_fields() {
                row.insert(
                    f.fieldname.clone(),
                    r.get(&f.fieldname).cloned().unwrap_or(Value::Null),
                );
            }
            rows.push(row);
        }
        store::insert_rows(conn, &child, &rows).await?;
        written.push((tf.fieldname.clone(), rows));
    }
    Ok(written)
}

/// The document as stored, built from what was just written (no read back).
fn assemble(dt: &DocType, doc: &Doc, children: Vec<(String, Vec<Doc>)>) -> Doc {
    let mut out = Doc::with_capacity(dt.fields.len() + 8);
    out.insert("doctype".into(), Value::String(dt.name.clone()));
    for c in crate::meta::STANDARD_COLUMNS {
        out.insert(c.into(), doc.get(c).cloned().unwrap_or(Value::Null));
    }
    for f in dt.data_fields() {
        out.insert(
            f.fieldname.clone(),
            doc.get(&f.fieldname).cloned().unwrap_or(Value::Null),
        );
    }
    for (field, rows) in children {
        out.insert(
            field,
            Value::Array(rows.into_iter().map(Value::Object).collect()),
        );
    }
    out
}

/// Turns a unique-index violation into a message that names the document or the field.
fn duplicate(dt: &DocType, doc: &Doc, e: Error) -> Error {
    let Error::DuplicateEntry(msg) = &e else {
        return e;
    };
    for f in dt.data_fields().filter(|f| f.unique) {
        if msg.contains(&format!("{}_{}", dt.table(), f.fieldname))
            || msg.contains(&format!(".{}", f.fieldname))
        {
            let v = doc.get(&f.fieldname).map(name_text).unwrap_or_default();
            return Error::DuplicateEntry(format!(
                "{} with {} {v} already exists",
                dt.name,
                f.label()
            ));
        }
    }
    Error::DuplicateEntry(format!(
        "{} {} already exists",
        dt.name,
        doc.get("name").map(name_text).unwrap_or_default()
    ))
}

async fn store_secrets(
    site: &Site,
    conn: &mut Conn,
    caller: &Caller,
    dt: &DocType,
    name: &str,
    pending: &Pending,
) -> Result<()> {
    for (field, plain) in &pending.secrets {
        set_auth(
            conn,
            &dt.name,
            name,
            field,
            &site.cipher.encrypt(plain),
            true,
        )
        .await?;
    }
    if let Some(pw) = &pending.login_password {
        set_auth(
            conn,
            &dt.name,
            name,
            "password",
            &crate::crypto::hash_password(pw)?,
            false,
        )
        .await?;
        // As in Frappe, a new password ends the user's other sessions.
        let keep = (caller.user == name)
            .then_some(caller.session.as_deref())
            .flatten();
        crate::service::auth::end_sessions(conn, name, keep).await?;
    }
    Ok(())
}

/// Stores a secret in `__Auth` (encrypted value or password hash).
pub async fn set_auth(
    conn: &mut Conn,
    doctype: &str,
    name: &str,
    field: &str,
    value: &str,
    encrypted: bool,
) -> Result<()> {
    store::execute(
        conn,
        r#"INSERT INTO "__Auth" (doctype, name, fieldname, password, encrypted) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (doctype, name, fieldname) DO UPDATE SET password = excluded.password, encrypted = excluded.encrypted"#,
        &[Param::text(doctype), Param::text(name), Param::text(field), Param::text(value), Param::Int(Some(encrypted as i64))],
    )
    .await?;
    Ok(())
}

/// Reads a secret from `__Auth` as stored.
pub async fn get_auth(
    conn: &mut Conn,
    doctype: &str,
    name: &str,
    field: &str,
) -> Result<Option<String>> {
    let v = store::fetch_scalar(
        conn,
        r#"SELECT password FROM "__Auth" WHERE doctype = $1 AND name = $2 AND fieldname = $3"#,
        &[Param::text(doctype), Param::text(name), Param::text(field)],
    )
    .await?;
    Ok(v.and_then(|v| v.as_str().map(str::to_string)))
}

/// The docstatus a client asks for: 0, 1 or 2 as a number or numeric text; anything else
/// is refused rather than read as 0.
fn requested_docstatus(input: &Doc) -> Result<Option<i64>> {
    match input.get("docstatus") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (0..=2).contains(n))
            .map(Some)
            .ok_or_else(|| Error::Validation(format!("docstatus must be 0, 1 or 2, not {v}"))),
    }
}

fn docstatus_of(doc: &Doc) -> i64 {
    doc.get("docstatus")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

impl Site {
    /// Reads a document the caller may read.
    pub async fn get_doc(&self, caller: &Caller, doctype: &str, name: &str) -> Result<Doc> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        if dt.istable {
            // Frappe consumers read child rows alone when they sync dependencies.
            return self.get_child_row(caller, &reg, &dt, name).await;
        }
        caller.require(&dt, PermType::Read)?;
        if dt.issingle {
            return self.get_single(&dt).await;
        }
        let mut conn = self.store.conn().await?;
        let mut doc = load_doc(&mut conn, &reg, &dt, name)
            .await?
            .ok_or_else(|| not_found(&dt, name))?;
        if dt.name == "Event Update Log" {
            self.acks.flush(self).await?;
            let consumers = crate::streaming::producer::consumers_of(&mut conn, &doc).await?;
            doc.insert("consumers".into(), Value::Array(consumers));
        }
        Ok(doc)
    }

    async fn get_child_row(
        &self,
        caller: &Caller,
        reg: &Registry,
        dt: &DocType,
        name: &str,
    ) -> Result<Doc> {
        let mut conn = self.store.conn().await?;
        let row = store::load_row(&mut conn, dt, &Value::String(name.into()))
            .await?
            .ok_or_else(|| not_found(dt, name))?;
        let parenttype = row.get("parenttype").map(name_text).unwrap_or_default();
        caller.require(&*reg.get(&parenttype)?, PermType::Read)?;
        let mut doc = Doc::new();
        doc.insert("doctype".into(), Value::String(dt.name.clone()));
        doc.extend(row);
        Ok(doc)
    }

    /// Inserts a document and returns it as stored.
    pub async fn insert_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        input: Doc,
        flags: &WriteFlags,
    ) -> Result<Doc> {
        let dt = self.meta().get(doctype)?;
        if dt.issingle {
            return self.update_single(caller, &dt, input).await;
        }
        let mut saved = self
            .insert_docs(caller, vec![(doctype.to_string(), input)], flags)
            .await?;
        saved
            .pop()
            .ok_or_else(|| Error::Internal("insert returned no document".into()))
    }

    /// Inserts documents `(doctype, document)` in one transaction: all of them or none.
    pub async fn insert_docs(
        &self,
        caller: &Caller,
        inputs: Vec<(String, Doc)>,
        flags: &WriteFlags,
    ) -> Result<Vec<Doc>> {
        let reg = self.meta();
        // Types that must talk to another site first (Event Producer) do it before the
        // transaction, and undo it if the transaction fails.
        let mut work = Vec::with_capacity(inputs.len());
        let mut prepared_all = Vec::new();
        let mut failed = None;
        for (doctype, mut input) in inputs {
            let dt = match reg.get(&doctype) {
                Ok(dt) if dt.issingle => Err(Error::Validation(format!(
                    "{doctype} is a single: save it with frappe.client.save, not insert"
                ))),
                other => other,
            };
            let dt = match dt {
                Ok(dt) => dt,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let mut flags = flags.clone();
            match doctypes::prepare_insert(self, caller, &dt, &mut input, &mut flags).await {
                Ok(p) => {
                    work.push((dt, input, flags, prepared_all.len()));
                    prepared_all.push(p);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => {
                async {
                    let mut tx = self.store.begin().await?;
                    let mut done = Vec::with_capacity(work.len());
                    for (dt, input, flags, i) in work {
                        let (doc, mut pending) = self
                            .insert_in(&mut tx, &reg, caller, &dt, input, &flags)
                            .await?;
                        doctypes::finish_insert(
                            self,
                            &mut tx,
                            &doc,
                            prepared_all[i].as_ref(),
                            &mut pending,
                        )
                        .await?;
                        done.push((doc, pending));
                    }
                    tx.commit().await?;
                    Ok::<_, Error>(done)
                }
                .await
            }
        };
        match result {
            Ok(done) => {
                let mut saved = Vec::with_capacity(done.len());
                for (doc, pending) in done {
                    self.after_commit(pending).await?;
                    saved.push(doc);
                }
                Ok(saved)
            }
            Err(e) => {
                for p in prepared_all.into_iter().flatten() {
                    doctypes::undo_prepare(self, p).await;
                }
                Err(e)
            }
        }
    }

    /// Runs what a committed write left to do: meta reload, notifications, calls to other sites.
    pub async fn after_commit(&self, pending: Pending) -> Result<()> {
        if pending.meta_changed {
            self.reload_meta().await?;
        }
        if pending.logs_written {
            if let Some(me) = self.arc() {
                crate::streaming::notifier::notify_consumers(me);
            }
        }
        for action in pending.after_commit {
            doctypes::run_after_commit(self, action).await;
        }
        Ok(())
    }

    /// Inserts inside the caller's transaction.
    pub async fn insert_in(
        &self,
        conn: &mut Conn,
        reg: &Registry,
        caller: &Caller,
        dt: &DocType,
        mut input: Doc,
        flags: &WriteFlags,
    ) -> Result<(Doc, Pending)> {
        // Permission first: a caller who may not write a child type is told so (403), not
        // how to write it.
        if !flags.ignore_permissions {
            caller.require(dt, PermType::Create)?;
        }
        if dt.istable {
            return Err(Error::Validation(format!(
                "{} is a child table type: insert its rows through their parent document",
                dt.name
            )));
        }
        let mut pending = Pending {
            applied: flags.origin.is_some() && !flags.mapped,
            ..Default::default()
        };
        if !pending.applied {
            resolve_dynamic_defaults(self, caller, dt, &mut input);
        }
        let mut doc = Doc::new();
        merge_fields(reg, dt, &mut doc, &input, flags, &mut pending)?;
        if !flags.ignore_permissions {
            super::files::check_attachments(conn, reg, caller, dt, &doc, None).await?;
        }
        if !pending.applied {
            apply_defaults(dt, &mut doc);
            fetch_linked(conn, reg, dt, &mut doc, None).await?;
        }
        let docstatus = requested_docstatus(&input)?.unwrap_or(0);
        match docstatus {
            0 => {}
            1 if dt.is_submittable => {
                if !flags.ignore_permissions {
                    caller.require(dt, PermType::Submit)?;
                }
            }
            _ => {
                return Err(Error::Validation(format!(
                    "A new {} cannot have docstatus {docstatus}",
                    dt.name
                )))
            }
        }
        let now = self.clock.now();
        let user = caller.user.clone();
        let given = input.get("name").map(name_text).filter(|n| !n.is_empty());
        if let Some(g) = &given {
            if flags.keep_name || dt.is_prompt_named() {
                doc.insert("name".into(), Value::String(g.clone()));
            }
        }
        if !pending.applied {
            if let Some(from) = input
                .get("amended_from")
                .map(name_text)
                .filter(|n| !n.is_empty())
            {
                let name = amended_name(conn, reg, dt, &from).await?;
                if doc.get("name").map(name_text).is_none_or(|n| n.is_empty()) {
                    doc.insert("name".into(), Value::String(name));
                }
                doc.insert("amended_from".into(), Value::String(from));
            }
        }
        // Type rules see the docstatus the document is saved with (a submit on insert).
        doc.insert("docstatus".into(), Value::from(docstatus));
        doctypes::validate(self, conn, reg, dt, &mut doc, None, caller, &mut pending).await?;
        let name = match doc.get("name").map(name_text).filter(|n| !n.is_empty()) {
            Some(n) => name_value(dt, &n),
            None => {
                crate::service::naming::new_name(conn, dt, &doc, None, &self.clock.today()).await?
            }
        };
        let name_str = name_text(&name);
        check_name(&name_str)?;
        if flags.keep_name && given.is_some() {
            crate::service::naming::note_given_name(conn, dt, &doc, &name_str, &self.clock.today())
                .await?;
        }
        doc.insert("name".into(), name);
        for (k, v) in [
            ("owner", &user),
            ("modified_by", &user),
            ("creation", &now),
            ("modified", &now),
        ] {
            let keep = flags.keep_timestamps && !is_empty(input.get(k));
            doc.insert(
                k.into(),
                if keep {
                    input[k].clone()
                } else {
                    Value::String(v.clone())
                },
            );
        }
        doc.insert("docstatus".into(), Value::from(docstatus));
        doc.insert("idx".into(), Value::from(0));
        check_mandatory(reg, dt, &doc)?;
        // The link look-up and the insert go as one statement where the store can.
        let mut check = (!flags.ignore_links)
            .then(|| LinkCheck::new(reg, dt, &doc))
            .transpose()?;
        let streamed = match check.as_mut().and_then(LinkCheck::take_guard) {
            Some(guard) => {
                let rows = store::insert_row_guarded(conn, dt, &doc, guard)
                    .await
                    .map_err(|e| duplicate(dt, &doc, e))?;
                check.map(|c| c.verdict(&rows)).transpose()?.flatten()
            }
            None => {
                let streamed = match check {
                    Some(c) => c.run(conn).await?,
                    None => None,
                };
                store::insert_row(conn, dt, &doc)
                    .await
                    .map_err(|e| duplicate(dt, &doc, e))?;
                streamed
            }
        };
        let children = write_children(conn, reg, dt, &doc, &now, &user, None).await?;
        store_secrets(self, conn, caller, dt, &name_str, &pending).await?;
        doctypes::after_write(self, conn, reg, dt, &doc, None, &mut pending).await?;
        let saved = assemble(dt, &doc, children);
        pending.logs_written |=
            update_log::record_insert(self, conn, dt, &saved, flags, streamed).await?;
        Ok((saved, pending))
    }

    /// Applies a partial update; child tables sent are replaced as given.
    pub async fn update_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        patch: Doc,
        flags: &WriteFlags,
    ) -> Result<Doc> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        if dt.issingle {
            return self.update_single(caller, &dt, patch).await;
        }
        let mut tx = self.store.begin().await?;
        let (doc, pending) = self
            .update_in(&mut tx, &reg, caller, &dt, name, patch, flags)
            .await?;
        tx.commit().await?;
        self.after_commit(pending).await?;
        Ok(doc)
    }

    /// Updates inside the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_in(
        &self,
        conn: &mut Conn,
        reg: &Registry,
        caller: &Caller,
        dt: &DocType,
        name: &str,
        patch: Doc,
        flags: &WriteFlags,
    ) -> Result<(Doc, Pending)> {
        if !flags.ignore_permissions {
            caller.require(dt, PermType::Write)?;
        }
        if dt.istable {
            return Err(Error::Validation(format!(
                "{} is a child table type: update its rows through their parent document",
                dt.name
            )));
        }
        let old = load_doc_for_update(conn, reg, dt, name)
            .await?
            .ok_or_else(|| not_found(dt, name))?;
        self.update_loaded(conn, reg, caller, dt, old, patch, flags)
            .await
    }

    /// Updates a document the caller has just read in this transaction (`old`, as
    /// [`load_doc`] returns it), sparing a second read.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_loaded(
        &self,
        conn: &mut Conn,
        reg: &Registry,
        caller: &Caller,
        dt: &DocType,
        old: Doc,
        patch: Doc,
        flags: &WriteFlags,
    ) -> Result<(Doc, Pending)> {
        if !flags.ignore_permissions {
            caller.require(dt, PermType::Write)?;
        }
        let name = &name_text(old.get("name").unwrap_or(&Value::Null));
        if let Some(m) = patch
            .get("modified")
            .map(name_text)
            .filter(|m| !m.is_empty())
        {
            let stored = old.get("modified").map(name_text).unwrap_or_default();
            let sent = crate::time::normalize_datetime(&m).unwrap_or(m);
            if !flags.keep_timestamps && sent < stored {
                return Err(Error::TimestampMismatch(format!(
                    "Document has been modified after you have opened it ({sent} < {stored}). Please reload and try again."
                )));
            }
        }
        let adjusted = doctypes::flags_for_update(dt, &patch, flags);
        let flags = &adjusted;
        let mut pending = Pending {
            applied: flags.origin.is_some() && !flags.mapped,
            ..Default::default()
        };
        let mut doc = old.clone();
        merge_fields(reg, dt, &mut doc, &patch, flags, &mut pending)?;
        if !flags.ignore_permissions {
            super::files::check_attachments(conn, reg, caller, dt, &doc, Some(&old)).await?;
        }
        if !pending.applied {
            check_set_only_once(dt, &old, &doc)?;
            fetch_linked(conn, reg, dt, &mut doc, Some(&old)).await?;
        }
        let old_status = docstatus_of(&old);
        let new_status = requested_docstatus(&patch)?.unwrap_or(old_status);
        self.check_docstatus_change(caller, dt, &old, &doc, old_status, new_status, flags)?;
        doc.insert("docstatus".into(), Value::from(new_status));
        doctypes::validate(
            self,
            conn,
            reg,
            dt,
            &mut doc,
            Some(&old),
            caller,
            &mut pending,
        )
        .await?;
        let changed = crate::streaming::diff::diff(reg, dt, &old, &doc)?;
        if changed.is_empty() && pending.secrets.is_empty() && pending.login_password.is_none() {
            return Ok((old, pending));
        }
        let now = self.clock.now();
        let modified = if flags.keep_timestamps && !is_empty(patch.get("modified")) {
            patch["modified"].clone()
        } else {
            Value::String(now.clone())
        };
        doc.insert("modified".into(), modified);
        doc.insert("modified_by".into(), Value::String(caller.user.clone()));
        check_mandatory(reg, dt, &doc)?;
        let streamed = match flags.ignore_links {
            false => check_links(conn, reg, dt, &doc).await?,
            true => None,
        };
        let mut cols = Doc::new();
        for (k, v) in &doc {
            if k != "name" && dt.has_column(k) {
                cols.insert(k.clone(), v.clone());
            }
        }
        store::update_columns(conn, dt, &old["name"], &cols)
            .await
            .map_err(|e| duplicate(dt, &doc, e))?;
        // Only tables whose rows changed are rewritten (all of them when docstatus changes,
        // since rows carry it).
        let all = changed.changed.contains_key("docstatus");
        let touched: Vec<String> = dt
            .table_fields()
            .filter(|tf| {
                all || changed.added.contains_key(&tf.fieldname)
                    || changed.removed.contains_key(&tf.fieldname)
                    || changed.row_changed.contains_key(&tf.fieldname)
            })
            .map(|tf| tf.fieldname.clone())
            .collect();
        let children =
            write_children(conn, reg, dt, &doc, &now, &caller.user, Some(&touched)).await?;
        store_secrets(self, conn, caller, dt, name, &pending).await?;
        doctypes::after_write(self, conn, reg, dt, &doc, Some(&old), &mut pending).await?;
        let mut saved = assemble(dt, &doc, children);
        for tf in dt.table_fields() {
            if !touched.contains(&tf.fieldname) {
                saved.insert(
                    tf.fieldname.clone(),
                    old.get(&tf.fieldname)
                        .cloned()
                        .unwrap_or(Value::Array(vec![])),
                );
            }
        }
        pending.logs_written |=
            update_log::record_update(self, conn, dt, name, &changed, flags, streamed).await?;
        Ok((saved, pending))
    }

    #[allow(clippy::too_many_arguments)]
    fn check_docstatus_change(
        &self,
        caller: &Caller,
        dt: &DocType,
        old: &Doc,
        new: &Doc,
        from: i64,
        to: i64,
        flags: &WriteFlags,
    ) -> Result<()> {
        let need = |p: PermType| {
            if flags.ignore_permissions {
                Ok(())
            } else {
                caller.require(dt, p)
            }
        };
        match (from, to) {
            (0, 0) => Ok(()),
            (0, 1) if dt.is_submittable => need(PermType::Submit),
            (1, 1) | (1, 2) => {
                if to == 2 {
                    need(PermType::Cancel)?;
                }
                for f in dt.data_fields() {
                    if (to == 2 || !f.allow_on_submit)
                        && old.get(&f.fieldname) != new.get(&f.fieldname)
                    {
                        return Err(Error::Validation(format!(
                            "Not allowed to change {} after submission",
                            f.label()
                        )));
                    }
                }
                for tf in dt.table_fields() {
                    if old.get(&tf.fieldname) != new.get(&tf.fieldname) && !tf.allow_on_submit {
                        return Err(Error::Validation(format!(
                            "Not allowed to change {} after submission",
                            tf.label()
                        )));
                    }
                }
                Ok(())
            }
            (2, _) => Err(Error::Validation(format!(
                "Cannot edit a cancelled {}: amend it instead",
                dt.name
            ))),
            (a, b) => Err(Error::Validation(format!(
                "Cannot change docstatus of {} from {a} to {b}",
                dt.name
            ))),
        }
    }

    /// Submits (1) or cancels (2) a document.
    pub async fn set_docstatus(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        status: i64,
    ) -> Result<Doc> {
        let mut patch = Doc::new();
        patch.insert("docstatus".into(), Value::from(status));
        let dt = self.meta().get(doctype)?;
        if !dt.is_submittable {
            return Err(Error::Validation(format!("{doctype} is not submittable")));
        }
        self.update_doc(caller, doctype, name, patch, &WriteFlags::default())
            .await
    }

    /// Deletes a document; refused while another document links to it.
    pub async fn delete_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        name: &str,
        flags: &WriteFlags,
    ) -> Result<()> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        let mut tx = self.store.begin().await?;
        let pending = self
            .delete_in(&mut tx, &reg, caller, &dt, name, flags)
            .await?;
        tx.commit().await?;
        self.after_commit(pending).await?;
        Ok(())
    }

    /// Deletes inside the caller's transaction.
    pub async fn delete_in(
        &self,
        conn: &mut Conn,
        reg: &Registry,
        caller: &Caller,
        dt: &DocType,
        name: &str,
        flags: &WriteFlags,
    ) -> Result<Pending> {
        if !flags.ignore_permissions {
            caller.require(dt, PermType::Delete)?;
        }
        if dt.istable || dt.issingle {
            return Err(Error::Validation(format!(
                "{} documents cannot be deleted on their own",
                dt.name
            )));
        }
        let doc = load_doc_for_update(conn, reg, dt, name)
            .await?
            .ok_or_else(|| not_found(dt, name))?;
        if docstatus_of(&doc) == 1 {
            return Err(Error::Validation(format!(
                "Submitted {} {name} cannot be deleted: cancel it first",
                dt.name
            )));
        }
        let mut pending = Pending::default();
        doctypes::before_delete(self, conn, reg, dt, &doc, &mut pending).await?;
        // Its attachments go with it.
        let attached = crate::service::files::attached_files(conn, &dt.name, name).await?;
        if !attached.is_empty() {
            let file_dt = reg.get("File")?;
            let admin = Caller::administrator();
            let all = WriteFlags {
                ignore_permissions: true,
                ..Default::default()
            };
            for f in attached {
                let p = Box::pin(self.delete_in(conn, reg, &admin, &file_dt, &f, &all)).await?;
                pending.logs_written |= p.logs_written;
            }
        }
        check_not_linked(conn, reg, dt, name).await?;
        for tf in dt.table_fields() {
            let child = reg.get(&tf.options)?;
            store::delete_child_rows(conn, &child, &dt.name, name, &tf.fieldname).await?;
        }
        store::delete_row(conn, dt, &doc["name"]).await?;
        store::execute(
            conn,
            r#"DELETE FROM "__Auth" WHERE doctype = $1 AND name = $2"#,
            &[Param::text(&dt.name), Param::text(name)],
        )
        .await?;
        pending.logs_written |=
            crate::streaming::update_log::record_delete(self, conn, reg, dt, &doc, flags).await?;
        Ok(pending)
    }

    /// Renames a document and rewrites every Link and Dynamic Link to it.
    pub async fn rename_doc(
        &self,
        caller: &Caller,
        doctype: &str,
        old: &str,
        new: &str,
        flags: &WriteFlags,
    ) -> Result<String> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        let mut tx = self.store.begin().await?;
        let logged = self
            .rename_in(&mut tx, &reg, caller, &dt, old, new, flags)
            .await?;
        tx.commit().await?;
        self.after_commit(Pending {
            logs_written: logged,
            ..Default::default()
        })
        .await?;
        Ok(new.to_string())
    }

    /// Renames inside the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn rename_in(
        &self,
        conn: &mut Conn,
        reg: &Registry,
        caller: &Caller,
        dt: &DocType,
        old: &str,
        new: &str,
        flags: &WriteFlags,
    ) -> Result<bool> {
        if !flags.ignore_permissions {
            caller.require(dt, PermType::Write)?;
        }
        let new = new.trim();
        check_name(new)?;
        if dt.istable
            || dt.issingle
            || dt.column_storage("name") == Storage::Int
            || matches!(dt.name.as_str(), "DocType" | "User")
        {
            return Err(Error::Validation(format!(
                "{} documents cannot be renamed",
                dt.name
            )));
        }
        let before = load_doc_for_update(conn, reg, dt, old)
            .await?
            .ok_or_else(|| not_found(dt, old))?;
        if old == new {
            return Ok(false);
        }
        if store::row_exists(conn, dt, &Value::String(new.into())).await? {
            return Err(Error::DuplicateEntry(format!(
                "{} {new} already exists",
                dt.name
            )));
        }
        let q = store::q;
        let p = |s: &str| store::Param::Text(Some(s.to_string()));
        let mut set_name = Doc::new();
        set_name.insert("name".into(), Value::String(new.into()));
        if let Some(field) = dt.autoname.strip_prefix("field:") {
            if dt.field(field).is_some() {
                set_name.insert(field.to_string(), Value::String(new.into()));
            }
        }
        set_name.insert("modified".into(), Value::String(self.clock.now()));
        set_name.insert("modified_by".into(), Value::String(caller.user.clone()));
        store::update_columns(conn, dt, &Value::String(old.into()), &set_name).await?;
        for tf in dt.table_fields() {
            let child = reg.get(&tf.options)?;
            store::execute(
                conn,
                &format!(
                    "UPDATE {} SET parent = $1 WHERE parent = $2 AND parenttype = $3",
                    q(&child.table())
                ),
                &[p(new), p(old), p(&dt.name)],
            )
            .await?;
        }
        for l in reg.links_to(&dt.name) {
            let holder = reg.get(&l.doctype)?;
            if holder.issingle {
                continue;
            }
            let mut sql = format!(
                "UPDATE {} SET {} = $1 WHERE {} = $2",
                q(&holder.table()),
                q(&l.fieldname),
                q(&l.fieldname)
            );
            let mut params = vec![p(new), p(old)];
            if let Some(tf) = &l.dynamic_type_field {
                sql.push_str(&format!(" AND {} = $3", q(tf)));
                params.push(p(&dt.name));
            }
            store::execute(conn, &sql, &params).await?;
        }
        store::execute(
            conn,
            r#"UPDATE "__Auth" SET name = $1 WHERE doctype = $2 AND name = $3"#,
            &[p(new), p(&dt.name), p(old)],
        )
        .await?;
        let after = load_doc(conn, reg, dt, new)
            .await?
            .ok_or_else(|| not_found(dt, new))?;
        crate::streaming::update_log::record_rename(self, conn, reg, dt, &before, &after, flags)
            .await
    }

    /// Lists documents the caller may read.
    pub async fn list_docs(
        &self,
        caller: &Caller,
        doctype: &str,
        query: &ListQuery,
    ) -> Result<Vec<Doc>> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        caller.require(&dt, PermType::Read)?;
        if dt.issingle {
            return Err(Error::Validation(format!(
                "{doctype} is a single document: GET /api/resource/{doctype}/{doctype}"
            )));
        }
        let sql = query.to_sql(&reg, &dt, self.store.dialect())?;
        let mut conn = self.store.conn().await?;
        let mut rows = store::fetch_docs(&mut conn, &sql.text, &sql.params).await?;
        hide_write_only(&dt, &mut rows);
        Ok(rows)
    }

    /// Counts documents matching the query's filters.
    pub async fn count_docs(
        &self,
        caller: &Caller,
        doctype: &str,
        query: &ListQuery,
    ) -> Result<i64> {
        let reg = self.meta();
        let dt = reg.get(doctype)?;
        caller.require(&dt, PermType::Read)?;
        let sql = query.to_count_sql(&reg, &dt, self.store.dialect())?;
        let mut conn = self.store.conn().await?;
        let rows = store::fetch_docs(&mut conn, &sql.text, &sql.params).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("count"))
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }

    async fn get_single(&self, dt: &DocType) -> Result<Doc> {
        let mut conn = self.store.conn().await?;
        let rows = store::fetch_docs(
            &mut conn,
            r#"SELECT field, value FROM "tabSingles" WHERE doctype = $1"#,
            &[store::Param::Text(Some(dt.name.clone()))],
        )
        .await?;
        let mut doc = Doc::new();
        doc.insert("doctype".into(), Value::String(dt.name.clone()));
        doc.insert("name".into(), Value::String(dt.name.clone()));
        for f in dt.data_fields() {
            let raw = rows
                .iter()
                .find(|r| r.get("field").and_then(Value::as_str) == Some(&f.fieldname))
                .and_then(|r| r.get("value"))
                .cloned()
                .unwrap_or(Value::Null);
            let v = if raw.is_null() {
                Value::Null
            } else {
                f.fieldtype
                    .coerce(&raw, f.label(), &f.options)
                    .unwrap_or(raw)
            };
            doc.insert(f.fieldname.clone(), v);
        }
        for k in ["modified", "modified_by"] {
            let v = rows
                .iter()
                .find(|r| r.get("field").and_then(Value::as_str) == Some(k))
                .and_then(|r| r.get("value"))
                .cloned()
                .unwrap_or(Value::Null);
            doc.insert(k.into(), v);
        }
        doc.insert("docstatus".into(), Value::from(0));
        Ok(doc)
    }

    async fn update_single(&self, caller: &Caller, dt: &DocType, input: Doc) -> Result<Doc> {
        caller.require(dt, PermType::Write)?;
        let mut doc = Doc::new();
        let mut pending = Pending::default();
        merge_fields(
            &self.meta(),
            dt,
            &mut doc,
            &input,
            &WriteFlags::default(),
            &mut pending,
        )?;
        let mut tx = self.store.begin().await?;
        let now = self.clock.now();
        doc.insert("modified".into(), Value::String(now));
        doc.insert("modified_by".into(), Value::String(caller.user.clone()));
        for (k, v) in &doc {
            let text = match v {
                Value::Null => None,
                other => Some(name_text(other)),
            };
            store::execute(
                &mut tx,
                r#"INSERT INTO "tabSingles" (doctype, field, value) VALUES ($1, $2, $3)
                   ON CONFLICT (doctype, field) DO UPDATE SET value = excluded.value"#,
                &[Param::text(&dt.name), Param::text(k), Param::Text(text)],
            )
            .await?;
        }
        tx.commit().await?;
        self.get_single(dt).await
    }
}

/// Removes write-only values (`new_password`) from listed rows.
fn hide_write_only(dt: &DocType, rows: &mut [Doc]) {
    let write_only: Vec<&DocField> = dt
        .fields
        .iter()
        .filter(|f| f.fieldname == "new_password")
        .collect();
    for r in rows {
        for f in &write_only {
            if r.contains_key(&f.fieldname) {
                r.insert(f.fieldname.clone(), Value::Null);
            }
        }
    }
}

/// Refuses names that cannot be used in a URL path or that look like an attack.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::Validation("Name cannot be empty".into()));
    }
    if name.len() > 140 {
        return Err(Error::Validation(format!(
            "Name is too long ({} characters; at most 140)",
            name.len()
        )));
    }
    if name.ends_with('/')
        || name.contains('\0')
        || name.chars().any(|c| c.is_control())
        || name.split('/').any(|p| p == ".." || p == ".")
    {
        return Err(Error::Validation(format!("Name {name:?} is not allowed: no control characters, no trailing \"/\" and no \".\" or \"..\" path parts")));
    }
    Ok(())
}

async fn check_not_linked(conn: &mut Conn, reg: &Registry, dt: &DocType, name: &str) -> Result<()> {
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
