//! Whether this site holds every field an update brings: before a page, the types whose
//! documents bring fields they lack follow the producer's definitions
//! (`streaming::definitions`); an update whose fields are still not all held is refused (a
//! Failed sync that names them), never applied with fields dropped.
//! Must not change types itself.

use super::*;
use crate::streaming::definitions;

/// The fields an update brings, in the shape of a document: a Create's document; an
/// Update's changed values with the rows it adds or changes. None for what brings no fields
/// (a Delete, a rename, a stub).
fn brought(inc: &Incoming) -> Option<std::borrow::Cow<'_, serde_json::Map<String, Value>>> {
    use std::borrow::Cow;
    match inc.update_type.as_str() {
        // Borrowed: this runs for every update of every page.
        "Create" => inc.data.as_object().map(Cow::Borrowed),
        "Update" if inc.data.get("old_name").is_none() => {
            let mut doc = inc
                .data
                .get("changed")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for part in ["added", "row_changed"] {
                for (table, rows) in inc
                    .data
                    .get(part)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let entry = doc.entry(table.clone()).or_insert_with(|| json!([]));
                    if let (Some(all), Some(rows)) = (entry.as_array_mut(), rows.as_array()) {
                        all.extend(rows.iter().cloned());
                    }
                }
            }
            Some(Cow::Owned(doc))
        }
        _ => None,
    }
}

/// The `(type, field)` pairs an update brings that its local type (subscribed as it is, not
/// through a mapping) does not hold.
pub(super) fn unheld(
    reg: &Registry,
    sub: &SubscribedType,
    inc: &Incoming,
) -> Vec<(String, String)> {
    if sub.mapping.is_some() {
        return vec![];
    }
    let (Ok(dt), Some(doc)) = (reg.get(&sub.local_type), brought(inc)) else {
        return vec![];
    };
    definitions::unheld(reg, &dt, &doc)
}

/// Before a page: each local type whose updates bring fields it lacks follows the producer's
/// definition. Best effort: an update whose fields are still not held fails with the reason.
pub(super) async fn follow_unheld(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
) {
    if !site.config.follow_producer_types {
        return;
    }
    let reg = site.meta();
    let mut types: Vec<(String, String)> = Vec::new();
    for inc in logs {
        let Some(sub) = info.for_remote(&inc.remote_type) else {
            continue;
        };
        let pair = (sub.local_type.clone(), sub.remote_type.clone());
        if !types.contains(&pair) && !unheld(&reg, sub, inc).is_empty() {
            types.push(pair);
        }
    }
    for (local, remote_type) in types {
        if local != remote_type {
            continue;
        }
        if let Err(e) = definitions::follow(site, remote, &local).await {
            tracing::warn!(producer = %info.url, doctype = %local, "could not follow the producer's definition: {e}");
        }
    }
}

/// Refuses an update whose fields this site does not all hold.
pub(super) fn check_held(a: &Applying<'_>, sub: &SubscribedType, inc: &Incoming) -> Result<()> {
    let missing = unheld(a.reg, sub, inc);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|(t, f)| format!("{t}.{f}")).collect();
    Err(Error::Validation(format!(
        "not applied: this site has no field for {} sent by {} (it follows the producer's definitions unless follow_producer_types is off; add the fields, then resync)",
        names.join(", "),
        a.info.url
    )))
}
