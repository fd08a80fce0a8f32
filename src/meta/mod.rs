//! The meta model: DocType, DocField and DocPerm as Rust values, and the registry of a site's types.
//!
//! Built-in types are data (`doctypes/*.json`, embedded at build time); custom types and Custom
//! Fields come from the site's database. This module knows nothing of SQL or HTTP.

mod fieldtype;

pub use fieldtype::{FieldType, Storage};

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

include!(concat!(env!("OUT_DIR"), "/builtin_doctypes.rs"));

/// Columns every document table has, in table order.
pub const STANDARD_COLUMNS: [&str; 7] = [
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "idx",
];
/// Extra columns of child tables.
pub const CHILD_COLUMNS: [&str; 3] = ["parent", "parentfield", "parenttype"];

/// One field of a document type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocField {
    /// Column name.
    pub fieldname: String,
    /// Human label.
    #[serde(default, deserialize_with = "de_string")]
    pub label: String,
    /// Frappe field type.
    #[serde(deserialize_with = "de_fieldtype", serialize_with = "ser_fieldtype")]
    pub fieldtype: FieldType,
    /// Link target, child type, select choices or dynamic-link field.
    #[serde(default, deserialize_with = "de_string")]
    pub options: String,
    /// Mandatory.
    #[serde(default, deserialize_with = "de_flag")]
    pub reqd: bool,
    /// Unique across the table.
    #[serde(default, deserialize_with = "de_flag")]
    pub unique: bool,
    /// Default value as text.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub default: Option<String>,
    /// Set only by the server.
    #[serde(default, deserialize_with = "de_flag")]
    pub read_only: bool,
    /// Not shown in forms.
    #[serde(default, deserialize_with = "de_flag")]
    pub hidden: bool,
    /// Shown as a list column.
    #[serde(default, deserialize_with = "de_flag")]
    pub in_list_view: bool,
    /// Editable after submit.
    #[serde(default, deserialize_with = "de_flag")]
    pub allow_on_submit: bool,
    /// Help text.
    #[serde(default, deserialize_with = "de_string")]
    pub description: String,
    /// `link_field.source_field`: copied from the linked document on save.
    #[serde(default, deserialize_with = "de_string")]
    pub fetch_from: String,
    /// Fetch only into an empty value.
    #[serde(default, deserialize_with = "de_flag")]
    pub fetch_if_empty: bool,
    /// Cannot change once the saved document has a value.
    #[serde(default, deserialize_with = "de_flag")]
    pub set_only_once: bool,
    /// Shown in the desk only when this `eval:` expression (or field) is true.
    #[serde(default, deserialize_with = "de_string")]
    pub depends_on: String,
    /// Mandatory in the desk when this `eval:` expression (or field) is true.
    #[serde(default, deserialize_with = "de_string")]
    pub mandatory_depends_on: String,
}

impl DocField {
    /// The label, or the fieldname when there is none.
    pub fn label(&self) -> &str {
        if self.label.is_empty() {
            &self.fieldname
        } else {
            &self.label
        }
    }

    /// True when the field has a column.
    pub fn has_column(&self) -> bool {
        self.fieldtype.storage() != Storage::None
    }

    /// `fetch_from` as (link field, field of the linked type).
    pub fn fetch_source(&self) -> Option<(&str, &str)> {
        self.fetch_from
            .split_once('.')
            .map(|(l, f)| (l.trim(), f.trim()))
    }

    /// True for defaults resolved when a document is made: `Today`, `Now`, `__user`.
    pub fn has_dynamic_default(&self) -> bool {
        matches!(
            self.default
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("today" | "now" | "__user")
        )
    }

    /// Checks `fetch_from` and `default` against the type the field belongs to (`siblings`
    /// are that type's fields): each mistake is refused with the field named.
    pub fn check_behaviour(
        &self,
        reg: &Registry,
        siblings: &[DocField],
    ) -> crate::error::Result<()> {
        let bad = |why: String| {
            crate::error::Error::Validation(format!("Field {}: {why}", self.fieldname))
        };
        if !self.fetch_from.trim().is_empty() {
            let (link, source) = self.fetch_source().ok_or_else(|| {
                bad(format!(
                    "fetch_from {:?} must be link_field.field",
                    self.fetch_from
                ))
            })?;
            let link_field = siblings
                .iter()
                .find(|f| f.fieldname == link && f.fieldtype == FieldType::Link)
                .ok_or_else(|| {
                    bad(format!(
                        "fetch_from names {link:?}, which is not a Link field of this type"
                    ))
                })?;
            let target = reg.get(&link_field.options)?;
            if !target.has_column(source) {
                return Err(bad(format!(
                    "fetch_from names {source:?}, which {} does not have",
                    target.name
                )));
            }
        }
        if let Some(d) = self.default.as_deref().filter(|d| !d.is_empty()) {
            if self.has_column() && !self.has_dynamic_default() {
                self.fieldtype
                    .coerce(
                        &serde_json::Value::String(d.to_string()),
                        self.label(),
                        &self.options,
                    )
                    .map_err(|e| bad(format!("default {d:?} is not valid: {}", e.message())))?;
            }
        }
        Ok(())
    }
}

/// One permission rule of a document type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DocPerm {
    /// The role the rule is for.
    #[serde(default, deserialize_with = "de_string")]
    pub role: String,
    #[serde(default, deserialize_with = "de_flag")]
    pub read: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub write: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub create: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub delete: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub submit: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub cancel: bool,
}

/// An action a permission rule may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermType {
    Read,
    Write,
    Create,
    Delete,
    Submit,
    Cancel,
}

impl PermType {
    /// Lower-case name, as in DocPerm.
    pub fn name(self) -> &'static str {
        match self {
            PermType::Read => "read",
            PermType::Write => "write",
            PermType::Create => "create",
            PermType::Delete => "delete",
            PermType::Submit => "submit",
            PermType::Cancel => "cancel",
        }
    }
}

/// A document type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocType {
    /// The type's name, e.g. `Sales Invoice`.
    pub name: String,
    #[serde(default, deserialize_with = "de_string")]
    pub module: String,
    #[serde(default, deserialize_with = "de_flag")]
    pub custom: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub istable: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub issingle: bool,
    #[serde(default, deserialize_with = "de_flag")]
    pub is_submittable: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub autoname: String,
    #[serde(default, deserialize_with = "de_string")]
    pub title_field: String,
    #[serde(default, deserialize_with = "de_string")]
    pub sort_field: String,
    #[serde(default)]
    pub fields: Vec<DocField>,
    #[serde(default)]
    pub permissions: Vec<DocPerm>,
    /// What another layer derives from the fields (the store's SQL text), made once.
    #[serde(skip)]
    pub derived: Derived,
}

/// Data another layer derives from a type's fields, made at first use and kept while the type
/// is unchanged: a clone starts empty, and the registry empties it when it changes a type's
/// fields in place. (This module stays ignorant of what is kept: one kind of value per type.)
#[derive(Default)]
pub struct Derived(OnceLock<Box<dyn Any + Send + Sync>>);

impl Derived {
    /// The kept value, made by `make` the first time.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> &T {
        self.0
            .get_or_init(|| Box::new(make()))
            .downcast_ref()
            .expect("a type keeps one kind of derived data")
    }
}

impl Clone for Derived {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl DocType {
    /// The table holding this type's rows.
    pub fn table(&self) -> String {
        table_name(&self.name)
    }

    /// The field of that name, if any.
    pub fn field(&self, fieldname: &str) -> Option<&DocField> {
        self.fields.iter().find(|f| f.fieldname == fieldname)
    }

    /// Fields that have a column.
    pub fn data_fields(&self) -> impl Iterator<Item = &DocField> {
        self.fields.iter().filter(|f| f.has_column())
    }

    /// Child-table fields.
    pub fn table_fields(&self) -> impl Iterator<Item = &DocField> {
        self.fields.iter().filter(|f| f.fieldtype.is_table())
    }

    /// The columns of this type's table as its metadata knows them, standard ones first.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        let child: &[&str] = if self.istable { &CHILD_COLUMNS } else { &[] };
        STANDARD_COLUMNS
            .iter()
            .chain(child)
            .copied()
            .chain(self.data_fields().map(|f| f.fieldname.as_str()))
    }

    /// True when `column` is a column of this type's table.
    pub fn has_column(&self, column: &str) -> bool {
        STANDARD_COLUMNS.contains(&column)
            || (self.istable && CHILD_COLUMNS.contains(&column))
            || self.field(column).is_some_and(|f| f.has_column())
    }

    /// Storage of a column (standard or field).
    pub fn column_storage(&self, column: &str) -> Storage {
        match column {
            "docstatus" | "idx" => Storage::Int,
            "name" if self.autoname == "autoincrement" => Storage::Int,
            _ => self
                .field(column)
                .map(|f| f.fieldtype.storage())
                .unwrap_or(Storage::Text),
        }
    }

    /// True when names are given by the client.
    pub fn is_prompt_named(&self) -> bool {
        self.autoname.eq_ignore_ascii_case("prompt")
    }
}

/// The URL slug of a document type: lower case, spaces as `-` (`Event Producer` ->
/// `event-producer`).
pub fn slug(doctype: &str) -> String {
    doctype.to_lowercase().replace(' ', "-")
}

/// `tab<DocType>`.
pub fn table_name(doctype: &str) -> String {
    format!("tab{doctype}")
}

/// Where a Link or Dynamic Link field can point at a document.
#[derive(Debug, Clone)]
pub struct LinkRef {
    /// The type holding the field (a child type for fields in rows).
    pub doctype: String,
    /// The field.
    pub fieldname: String,
    /// For a Dynamic Link, the field holding the target type.
    pub dynamic_type_field: Option<String>,
    /// True when the holder is a child type.
    pub is_child: bool,
}

/// All document types of a site.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: HashMap<String, Arc<DocType>>,
}

impl Registry {
    /// The built-in types only.
    pub fn builtin() -> Registry {
        let mut types = HashMap::new();
        for (file, text) in BUILTIN_DOCTYPES {
            let dt: DocType = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("built-in doctype {file} is invalid: {e}"));
            types.insert(dt.name.clone(), Arc::new(dt));
        }
        Registry { types }
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, dt: DocType) {
        self.types.insert(dt.name.clone(), Arc::new(dt));
    }

    /// Adds a custom field to a type, after `insert_after` when that field exists.
    pub fn add_custom_field(&mut self, dt: &str, field: DocField, insert_after: &str) {
        if let Some(t) = self.types.get_mut(dt) {
            let t = Arc::make_mut(t);
            if t.field(&field.fieldname).is_some() {
                return;
            }
            let pos = t
                .fields
                .iter()
                .position(|f| f.fieldname == insert_after)
                .map(|p| p + 1)
                .unwrap_or(t.fields.len());
            t.fields.insert(pos, field);
            t.derived = Derived::default();
        }
    }

    /// Gives a type the site's own naming series (`naming_series` in `site_config.json`): the
    /// first is the default of new documents; all of them, and the type's own, may be chosen
    /// (and may arrive from other sites).
    pub fn set_naming_series(&mut self, doctype: &str, series: &[String]) {
        let Some(first) = series.first() else { return };
        let Some(t) = self.types.get_mut(doctype) else {
            tracing::warn!(
                doctype,
                "naming_series is set for a type that does not exist"
            );
            return;
        };
        let t = Arc::make_mut(t);
        let Some(f) = t.fields.iter_mut().find(|f| f.fieldname == "naming_series") else {
            tracing::warn!(
                doctype,
                "naming_series is set for a type without a naming series"
            );
            return;
        };
        let mut options: Vec<String> = series.to_vec();
        for o in f.options.split('\n').filter(|o| !o.is_empty()) {
            if !options.iter().any(|s| s == o) {
                options.push(o.to_string());
            }
        }
        f.options = options.join("\n");
        f.default = Some(first.clone());
        t.derived = Derived::default();
    }

    /// The type of that name or `DoesNotExistError`.
    pub fn get(&self, name: &str) -> Result<Arc<DocType>> {
        self.types
            .get(name)
            .cloned()
            .ok_or_else(|| Error::DoesNotExist(format!("DocType {name} not found")))
    }

    /// True when the type exists.
    pub fn exists(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Every type, sorted by name.
    pub fn all(&self) -> Vec<Arc<DocType>> {
        let mut v: Vec<_> = self.types.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The fields that can hold a link to a document of `target` (Dynamic Links included).
    pub fn links_to(&self, target: &str) -> Vec<LinkRef> {
        let mut out = Vec::new();
        for t in self.types.values() {
            for f in &t.fields {
                let hit = match f.fieldtype {
                    FieldType::Link => f.options == target,
                    FieldType::DynamicLink => true,
                    _ => false,
                };
                if hit {
                    out.push(LinkRef {
                        doctype: t.name.clone(),
                        fieldname: f.fieldname.clone(),
                        dynamic_type_field: (f.fieldtype == FieldType::DynamicLink)
                            .then(|| f.options.clone()),
                        is_child: t.istable,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.doctype, &a.fieldname).cmp(&(&b.doctype, &b.fieldname)));
        out
    }

    /// The parent types and fields that hold rows of the child type `child`.
    pub fn parents_of(&self, child: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .types
            .values()
            .flat_map(|t| {
                t.table_fields()
                    .filter(|f| f.options == child)
                    .map(|f| (t.name.clone(), f.fieldname.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }
}

/// Checks that a name is safe as a type or field name: letters, digits, spaces, `_` and `-`.
pub fn check_identifier(what: &str, s: &str, allow_space: bool) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 61
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || (allow_space && (c == ' ' || c == '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "{what} \"{s}\" is not allowed: use letters, digits{} and underscores, starting with a letter",
            if allow_space { ", spaces, hyphens" } else { "" }
        )))
    }
}

fn de_flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => matches!(s.trim(), "1" | "true" | "True"),
        _ => false,
    })
}

fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_opt_string(d)?.unwrap_or_default())
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

fn de_fieldtype<'de, D: Deserializer<'de>>(d: D) -> Result<FieldType, D::Error> {
    let s = String::deserialize(d)?;
    FieldType::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown field type {s}")))
}

fn ser_fieldtype<S: serde::Serializer>(t: &FieldType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

#[cfg(test)]
mod tests {
    use super::Registry;

    #[test]
    fn every_field_type_can_be_chosen() {
        let reg = Registry::builtin();
        let all: Vec<&str> = super::FieldType::ALL.iter().map(|(_, n)| *n).collect();
        for (dt, field) in [("DocField", "fieldtype"), ("Custom Field", "fieldtype")] {
            let options = reg.get(dt).unwrap().field(field).unwrap().options.clone();
            let choices: Vec<&str> = options.split('\n').collect();
            assert_eq!(choices, all, "{dt}.{field}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(super::slug("Event Producer"), "event-producer");
        assert_eq!(super::slug("ToDo"), "todo");
        assert_eq!(super::slug("Sales Invoice Item"), "sales-invoice-item");
    }

    #[test]
    fn built_in_fetch_from_and_defaults_are_valid() {
        let reg = Registry::builtin();
        for dt in reg.all() {
            for f in &dt.fields {
                f.check_behaviour(&reg, &dt.fields)
                    .unwrap_or_else(|e| panic!("{}.{}: {e}", dt.name, f.fieldname));
            }
        }
    }
}
