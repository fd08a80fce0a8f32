//! Shipped Document Type Mapping templates (`templates/mappings/*.json`): what a consuming site
//! needs to take another site's documents into its own company (ERPNext's company, receivable
//! account, customer group, territory), filled from that site's own settings and installed
//! there over REST, with the mappings set on the rows of its Event Producer. A template is
//! data: adding one means adding a JSON file.
//! Must not write anything before every value is known and the Event Producer is found.

use super::remote::RemoteSite;
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

include!(concat!(env!("OUT_DIR"), "/mapping_templates.rs"));

#[derive(Debug, Deserialize)]
struct Template {
    about: String,
    values: Vec<Source>,
    mappings: Vec<Value>,
    rows: Vec<Row>,
}

/// Where a value of the template is read on the consuming site: (type, name, field).
#[derive(Debug, Deserialize)]
struct Source {
    key: String,
    from: [String; 3],
    /// Where a person sets it there.
    #[serde(rename = "where")]
    place: String,
}

/// A row of the Event Producer: its type and the mapping it gets (none: the row is only
/// made sure of).
#[derive(Debug, Deserialize)]
struct Row {
    ref_doctype: String,
    mapping: Option<String>,
    why: String,
}

/// Each shipped template's name (its file name without `.json`) and what it is for.
pub fn templates() -> Vec<(String, String)> {
    MAPPING_TEMPLATES
        .iter()
        .filter_map(|(file, _)| {
            let name = file.trim_end_matches(".json");
            load(name).ok().map(|t| (name.to_string(), t.about))
        })
        .collect()
}

fn load(name: &str) -> Result<Template> {
    let (_, text) = MAPPING_TEMPLATES
        .iter()
        .find(|(file, _)| file.trim_end_matches(".json") == name)
        .ok_or_else(|| {
            let known: Vec<String> = MAPPING_TEMPLATES
                .iter()
                .map(|(f, _)| f.trim_end_matches(".json").to_string())
                .collect();
            Error::DoesNotExist(format!(
                "no mapping template {name:?}; there are: {}",
                known.join(", ")
            ))
        })?;
    serde_json::from_str(text)
        .map_err(|e| Error::Validation(format!("the mapping template {name} is damaged: {e}")))
}

/// What to install, for which producer, with which values given by hand.
#[derive(Debug, Default)]
pub struct Install {
    /// The template's name.
    pub template: String,
    /// The producer's URL, as the consuming site's Event Producer names it.
    pub producer: String,
    /// What the mapping names begin with (default: the producer's host).
    pub name: Option<String>,
    /// Values given by hand, over those read on the consuming site.
    pub given: BTreeMap<String, String>,
    /// Print what would be written; write nothing.
    pub dry_run: bool,
}

/// What an install wrote (or, on a dry run, would write).
#[derive(Debug, Default)]
pub struct Installed {
    /// (key, value, where it came from).
    pub values: Vec<(String, String, String)>,
    /// (mapping name, "created" or "updated"; "would be ..." on a dry run).
    pub mappings: Vec<(String, String)>,
    /// What changed on the Event Producer's rows, one line each.
    pub rows: Vec<String>,
    /// Rows added: the producer must approve them on its Event Consumer.
    pub to_approve: Vec<String>,
}

/// Fills the template from `site`'s settings and writes its mappings there, setting them on
/// its Event Producer for `ask.producer`. Written one by one over REST: what failed part-way
/// is finished by running it again (every write finds what an earlier run made).
pub async fn install(site: &RemoteSite, ask: &Install) -> Result<Installed> {
    let t = load(&ask.template)?;
    let mut values = BTreeMap::new();
    values.insert("name".to_string(), name_for(ask));
    if let Some(k) = ask
        .given
        .keys()
        .find(|k| !t.values.iter().any(|s| &&s.key == k))
    {
        let keys: Vec<&str> = t.values.iter().map(|s| s.key.as_str()).collect();
        return Err(Error::Validation(format!(
            "the template {} has no value {k}; it takes: {}",
            ask.template,
            keys.join(", ")
        )));
    }
    let mut done = Installed::default();
    let mut unknown = Vec::new();
    for s in &t.values {
        let (value, from) = match ask.given.get(&s.key) {
            Some(v) => (v.clone(), "given".to_string()),
            None if fill_text(&s.from[1], &values).contains("{{") => {
                unknown.push((
                    &s.key,
                    format!("{}, read once the values it names are known", s.place),
                ));
                continue;
            }
            None => match read_value(site, s, &values).await? {
                Some(v) => (v, format!("{} on {}", s.place, site.url)),
                None => {
                    unknown.push((&s.key, s.place.clone()));
                    continue;
                }
            },
        };
        done.values.push((s.key.clone(), value.clone(), from));
        values.insert(s.key.clone(), value);
    }
    if !unknown.is_empty() {
        let needs: Vec<String> = unknown
            .iter()
            .map(|(key, place)| format!("{key} ({place})"))
            .collect();
        let sets: Vec<String> = unknown
            .iter()
            .map(|(key, _)| format!("--set {key}=VALUE"))
            .collect();
        return Err(Error::Validation(format!(
            "the template needs {}, not set on {}: set them there or give {}",
            needs.join(", "),
            site.url,
            sets.join(" ")
        )));
    }
    let mappings: Vec<Value> = t.mappings.iter().map(|m| fill(m, &values)).collect();
    let producer = site
        .get_doc("Event Producer", &ask.producer)
        .await
        .map_err(|e| match e {
            Error::DoesNotExist(_) => Error::DoesNotExist(format!(
                "{} has no Event Producer for {}: add it there first (the producer's URL and \
                 its subscriber's API key), then install the template",
                site.url, ask.producer
            )),
            other => other,
        })?;
    let rows = rows_with_mappings(&t, &producer, &values, &mut done);
    let verb = |v: &str| match ask.dry_run {
        true => format!("would be {v}"),
        false => v.to_string(),
    };
    for m in &mappings {
        let name = text(m.get("mapping_name"));
        let exists = match site.get_doc("Document Type Mapping", &name).await {
            Ok(_) => true,
            Err(Error::DoesNotExist(_)) => false,
            Err(e) => return Err(e),
        };
        if !ask.dry_run {
            let mut doc = m.clone();
            doc["doctype"] = json!("Document Type Mapping");
            match exists {
                true => {
                    site.update_doc("Document Type Mapping", &name, &doc)
                        .await?
                }
                false => site.insert_doc("Document Type Mapping", &doc).await?,
            };
        }
        done.mappings
            .push((name, verb(if exists { "updated" } else { "created" })));
    }
    if !done.rows.is_empty() && !ask.dry_run {
        site.update_doc(
            "Event Producer",
            &ask.producer,
            &json!({"producer_doctypes": rows}),
        )
        .await?;
    }
    Ok(done)
}

/// The Event Producer's rows with the template's mappings set and its missing rows added,
/// each change told in `done.rows`.
fn rows_with_mappings(
    t: &Template,
    producer: &Value,
    values: &BTreeMap<String, String>,
    done: &mut Installed,
) -> Vec<Value> {
    let mut rows: Vec<Value> = producer
        .get("producer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in &t.rows {
        let mapping = r.mapping.as_ref().map(|m| fill_text(m, values));
        let why = fill_text(&r.why, values);
        match rows
            .iter_mut()
            .find(|row| text(row.get("ref_doctype")) == r.ref_doctype)
        {
            Some(row) => {
                let Some(m) = mapping else { continue };
                if text(row.get("mapping")) == m
                    && super::definitions::checked(row.get("has_mapping"))
                {
                    continue;
                }
                row["has_mapping"] = json!(1);
                row["mapping"] = json!(m);
                done.rows
                    .push(format!("{}: mapping {m} ({why})", r.ref_doctype));
            }
            None => {
                rows.push(json!({"ref_doctype": r.ref_doctype, "use_same_name": 1,
                                 "has_mapping": mapping.is_some() as i64,
                                 "mapping": mapping.clone().unwrap_or_default()}));
                done.rows.push(format!(
                    "{}: row added{} ({why})",
                    r.ref_doctype,
                    mapping
                        .map(|m| format!(" with mapping {m}"))
                        .unwrap_or_default()
                ));
                done.to_approve.push(r.ref_doctype.clone());
            }
        }
    }
    rows
}

/// A value read on the consuming site; None when it is not set there.
async fn read_value(
    site: &RemoteSite,
    s: &Source,
    values: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let [doctype, name, field] = &s.from;
    let name = fill_text(name, values);
    let doc = site.get_doc(doctype, &name).await?;
    Ok(Some(text(doc.get(field))).filter(|v| !v.is_empty()))
}

/// The mapping names' beginning: given, else the producer's host (and port).
fn name_for(ask: &Install) -> String {
    ask.name.clone().unwrap_or_else(|| {
        let rest = ask
            .producer
            .split_once("://")
            .map_or(ask.producer.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_string()
    })
}

/// `v` with every `{{key}}` in its strings replaced by its value.
fn fill(v: &Value, values: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(fill_text(s, values)),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, values)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), fill(x, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn fill_text(s: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn text(v: Option<&Value>) -> String {
    super::remote::list_text(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped template parses, and fills every placeholder it uses from its values.
    #[test]
    fn shipped_templates_are_whole() {
        assert!(!MAPPING_TEMPLATES.is_empty());
        for (file, _) in MAPPING_TEMPLATES {
            let t = load(file.trim_end_matches(".json")).unwrap();
            let mut values: BTreeMap<String, String> = t
                .values
                .iter()
                .map(|s| (s.key.clone(), "x".into()))
                .collect();
            values.insert("name".into(), "x".into());
            let filled = fill(
                &json!([
                    t.mappings,
                    t.values.iter().map(|s| s.from.clone()).collect::<Vec<_>>()
                ]),
                &values,
            );
            assert!(!filled.to_string().contains("{{"), "{file}: {filled}");
            for r in &t.rows {
                assert!(!fill_text(&r.why, &values).contains("{{"), "{file}");
            }
        }
    }
}
