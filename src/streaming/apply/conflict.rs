//! Conflicts: an incoming change never overwrites silently what this site changed since it
//! last received the document (`streaming::local_edits`), nor a document of the same name that
//! did not come from the producer. The fields in conflict keep this site's values, the rest
//! applies, and the update's sync log holds the incoming values until a person chooses
//! (`resolve.rs`); later updates of the document wait on it as after a Failed sync. A row that
//! says the producer wins overwrites, and its sync log says what was overwritten.
//! Must not write sync logs (`sync_log.rs` records the conflict it is given).

use super::echo::same_value;
use super::*;
use crate::streaming::local_edits;

/// How a conflict's sync log error begins: a person resolves it, never an automatic retry.
pub(super) const CONFLICT: &str = "conflict: ";

/// Keys of a child row that are bookkeeping, not content.
pub(super) const ROW_BOOKKEEPING: [&str; 10] = [
    "name",
    "parent",
    "parenttype",
    "parentfield",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "doctype",
];

/// Keys a document written over a local one never takes from the producer: the local
/// document's identity and stamps stay its own.
pub(super) const OWN_KEYS: [&str; 7] = [
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "doctype",
    "idx",
];

/// Equal as field values: numbers by value, empty as empty, child rows by their content.
pub(super) fn same_field(a: &Value, b: &Value) -> bool {
    use super::echo::is_empty;
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(r, s)| same_row(r, s))
        }
        _ if is_empty(a) && is_empty(b) => true,
        _ => same_value(a, b),
    }
}

fn same_row(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return same_value(a, b);
    };
    let keys = a
        .keys()
        .chain(b.keys())
        .filter(|k| !ROW_BOOKKEEPING.contains(&k.as_str()) && !k.starts_with("__"));
    keys.into_iter().all(|k| {
        same_field(
            a.get(k).unwrap_or(&Value::Null),
            b.get(k).unwrap_or(&Value::Null),
        )
    })
}

/// One field in conflict: this site's value and the producer's.
fn field_entry(field: &str, here: &Value, incoming: &Value) -> Value {
    json!({"field": field, "here": here, "incoming": incoming})
}

/// Settles an incoming change (`patch`, local field names) of the local document `local`
/// against what was changed here since it was last received: fields both sides set alike are
/// received again, fields the producer wins are overwritten, an older value this site sent
/// itself (an echo) is passed over, and the rest conflict: they leave the patch and go to
/// `known.conflict`. What it did goes to `known.note`.
pub(super) async fn settle(
    a: &Applying<'_>,
    conn: &mut Conn,
    t: &Target<'_>,
    local: &str,
    current: Option<&Doc>,
    patch: &mut Doc,
    known: &mut Known,
) -> Result<()> {
    let (sub, dt) = (t.sub, t.dt);
    let edits = local_edits::of(conn, &dt.name, local).await?;
    if edits.is_empty() {
        return Ok(());
    }
    let loaded;
    let current = match current {
        Some(c) => c,
        None => {
            loaded = load_doc(conn, a.reg, dt, local).await?.unwrap_or_default();
            &loaded
        }
    };
    let (mut received, mut kept, mut overwritten, mut echoed, mut conflicts) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (field, _since) in edits {
        let Some(incoming) = patch.get(&field).cloned() else {
            kept.push(field);
            continue;
        };
        let here = current.get(&field).cloned().unwrap_or(Value::Null);
        if same_field(&here, &incoming) {
            received.push(field);
        } else if sub.producer_wins {
            overwritten.push(format!("{field} (was {})", shown(&here)));
            received.push(field);
        } else if super::echo::sent_here(a, conn, dt, local, &field, &incoming).await? {
            patch.remove(&field);
            echoed.push(field);
        } else {
            patch.remove(&field);
            conflicts.push(field_entry(&field, &here, &incoming));
        }
    }
    local_edits::clear(conn, &dt.name, local, Some(&received)).await?;
    let mut notes = vec![];
    if !overwritten.is_empty() {
        notes.push(format!(
            "the producer's version wins: overwrote this site's edits of {}",
            overwritten.join(", ")
        ));
    }
    if !echoed.is_empty() {
        notes.push(format!(
            "echo merged: kept {} (the producer sent back an older value this site sent)",
            echoed.join(", ")
        ));
    }
    if !kept.is_empty() {
        notes.push(format!(
            "kept local: {} (changed here since received; this update does not change it)",
            kept.join(", ")
        ));
    }
    if !notes.is_empty() {
        known.note = Some(notes.join("; "));
    }
    if !conflicts.is_empty() {
        known.conflict = Some(json!({"kind": "update", "fields": conflicts}));
    }
    Ok(())
}

/// A Create for a name held here that did not come from the producer (and is not an echo),
/// or, when `history`, a new Create from a producer whose history changed for a document
/// received from it (`resent.rs`): the same content is taken as received; other content is a
/// conflict, and nothing is written unless the producer wins.
pub(super) async fn create_over(
    a: &Applying<'_>,
    conn: &mut Conn,
    t: &Target<'_>,
    local: &str,
    incoming: &Doc,
    known: &mut Known,
    history: bool,
) -> Result<()> {
    let dt = t.dt;
    let current = load_doc(conn, a.reg, dt, local).await?.unwrap_or_default();
    let differ: Vec<Value> = dt
        .fields
        .iter()
        .filter(|f| f.has_column() || f.fieldtype.is_table())
        .map(|f| f.fieldname.as_str())
        .chain(["docstatus"])
        .filter_map(|f| {
            let incoming = incoming.get(f)?;
            let here = current.get(f).unwrap_or(&Value::Null);
            (!same_field(here, incoming)).then(|| field_entry(f, here, incoming))
        })
        .collect();
    let names: Vec<&str> = differ.iter().filter_map(|d| d["field"].as_str()).collect();
    let held = match history {
        true => format!(
            "{} {local}, received from {} before this new Create",
            dt.name, a.info.url
        ),
        false => format!(
            "the local {} named {local}, which did not come from {}",
            dt.name, a.info.url
        ),
    };
    if differ.is_empty() {
        known.note = Some(format!("{held}, held the same content: taken as received"));
        return Ok(());
    }
    if t.sub.producer_wins {
        known.note = Some(format!(
            "the producer's version wins: overwrote {held} ({} differed)",
            names.join(", ")
        ));
        let mut patch = incoming.clone();
        for k in OWN_KEYS {
            patch.remove(k);
        }
        documents::update_in(&a.write(dt), conn, local, patch, t.flags).await?;
        return Ok(());
    }
    known.conflict = Some(json!({"kind": "create", "history": history, "fields": differ}));
    Ok(())
}

/// A Delete of a document edited here since it was received: a conflict (true: nothing is
/// deleted), unless the producer wins (the note says which edits went with it).
pub(super) async fn delete_edited(
    conn: &mut Conn,
    sub: &SubscribedType,
    dt: &DocType,
    local: &str,
    current: &Doc,
    known: &mut Known,
) -> Result<bool> {
    let edits = local_edits::of(conn, &dt.name, local).await?;
    if edits.is_empty() {
        return Ok(false);
    }
    let fields: Vec<&str> = edits.iter().map(|(f, _)| f.as_str()).collect();
    if sub.producer_wins {
        known.note = Some(format!(
            "the producer's version wins: deleted with this site's edits of {}",
            fields.join(", ")
        ));
        return Ok(false);
    }
    let entries: Vec<Value> = fields
        .iter()
        .map(|f| field_entry(f, current.get(*f).unwrap_or(&Value::Null), &Value::Null))
        .collect();
    known.conflict = Some(json!({"kind": "delete", "fields": entries}));
    Ok(true)
}

/// The error of a conflict's sync log.
pub(super) fn message(a: &Applying<'_>, doctype: &str, local: &str, conflict: &Value) -> String {
    let fields: Vec<&str> = conflict["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["field"].as_str())
        .collect();
    match conflict["kind"].as_str() {
        Some("delete") => format!(
            "{CONFLICT}{} deleted {doctype} {local}, which was edited here since it was received ({}); it is kept until a person chooses (Resolve on this sync log: keep this site's version, or take the producer's and delete it)",
            a.info.url,
            fields.join(", ")
        ),
        Some("create") if conflict["history"] == true => format!(
            "{CONFLICT}history changed: {} sent a new Create of {doctype} {local}, which this site received from it before, and it differs in {} (was the producer restored from an older backup, or its database reset?); this site's document is kept: choose which version to keep (Resolve on this sync log)",
            a.info.url,
            fields.join(", ")
        ),
        Some("create") => format!(
            "{CONFLICT}name clash: a local {doctype} named {local} exists that did not come from {} and differs in {}; this site's document is kept: choose which version to keep (Resolve on this sync log), or rename or delete it, then resync",
            a.info.url,
            fields.join(", ")
        ),
        _ => format!(
            "{CONFLICT}{doctype} {local}: {} changed here and on {}; this site's values are kept and the rest of the update applied: choose which version to keep (Resolve on this sync log)",
            fields.join(", "),
            a.info.url
        ),
    }
}

/// A value as a person reads it in a note.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "empty".into(),
        Value::String(s) if s.is_empty() => "empty".into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(rows) => format!("{} rows", rows.len()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_by_content() {
        let a = json!([{"name": "r1", "item_code": "I1", "qty": 9, "idx": 1}]);
        let b = json!([{"name": "x7", "parent": "P", "item_code": "I1", "qty": 9.0, "idx": 1}]);
        assert!(same_field(&a, &b));
        let c = json!([{"name": "r1", "item_code": "I1", "qty": 8, "idx": 1}]);
        assert!(!same_field(&a, &c));
        assert!(same_field(&json!(null), &json!("")));
        assert!(!same_field(&json!("Open"), &json!("Closed")));
    }
}
