//! Echoes: a Frappe site re-logs what it applies, so a document this site sent to it comes
//! back as that site's own Create. Such a Create is merged into the local document (fields
//! this site lacks or left empty are taken, the rest kept) and its sync log says so; it is
//! never taken for a name clash, which would stall every later edit from that site.
//! A Create whose content is not what this site sent stays a name clash.
//! Must not overwrite a value this site holds.

use super::*;

/// True when the producer's Create of `docname` is this site's own document coming back: the
/// producer is an approved consumer here (of the type, or of one linking to it), and the
/// Create carries what this site's own Create log of it carried (a log that did not come from
/// the producer), field for field (the producer may add what was empty).
pub(super) async fn is_echo(
    a: &Applying<'_>,
    conn: &mut Conn,
    dt: &DocType,
    docname: &str,
    incoming: &Doc,
) -> Result<bool> {
    if !consumes_here(a, conn).await? {
        return Ok(false);
    }
    let created = store::fetch_docs(
        conn,
        r#"SELECT data FROM "tabEvent Update Log"
           WHERE ref_doctype = $1 AND docname = $2 AND update_type = 'Create'
             AND (origin IS NULL OR origin <> $3)
           ORDER BY seq DESC LIMIT 1"#,
        &[
            Param::Text(Some(dt.name.clone())),
            Param::Text(Some(docname.into())),
            Param::Text(Some(a.info.url.clone())),
        ],
    )
    .await?;
    // Without a Create log the document went out with the consumer's first snapshot, as it
    // is (or was: then its later edits were logged, and the echo is older than they are).
    let sent = match created
        .first()
        .and_then(|r| r.get("data"))
        .and_then(Value::as_str)
        .and_then(|d| serde_json::from_str::<Doc>(d).ok())
    {
        Some(sent) => sent,
        None => match load_doc(conn, a.reg, dt, docname).await? {
            Some(current) => current,
            None => return Ok(false),
        },
    };
    Ok(dt.fields.iter().filter(|f| f.has_column()).all(|f| {
        match sent.get(&f.fieldname).filter(|v| !is_empty(v)) {
            None => true,
            Some(v) => incoming.get(&f.fieldname).is_some_and(|w| same_value(v, w)),
        }
    }))
}

/// True when `value` of `field` is one this site sent the producer itself: the producer is an
/// approved consumer of the type here and one of this site's own logs of the document (not one
/// that came from the producer) carried it. An echo of an older edit, never a conflict.
pub(super) async fn sent_here(
    a: &Applying<'_>,
    conn: &mut Conn,
    dt: &DocType,
    docname: &str,
    field: &str,
    value: &Value,
) -> Result<bool> {
    if !consumes_here(a, conn).await? {
        return Ok(false);
    }
    let logs = store::fetch_docs(
        conn,
        r#"SELECT update_type, data FROM "tabEvent Update Log"
           WHERE ref_doctype = $1 AND docname = $2 AND (origin IS NULL OR origin <> $3)
           ORDER BY seq DESC LIMIT 50"#,
        &[
            Param::Text(Some(dt.name.clone())),
            Param::Text(Some(docname.into())),
            Param::Text(Some(a.info.url.clone())),
        ],
    )
    .await?;
    Ok(logs.iter().any(|l| {
        let data = l
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .unwrap_or(Value::Null);
        let sent = match l.get("update_type").and_then(Value::as_str) {
            Some("Create") => data.get(field),
            _ => data.get("changed").and_then(|c| c.get(field)),
        };
        sent.is_some_and(|v| super::conflict::same_field(v, value))
    }))
}

/// Whether the producer is an approved consumer here, of any type (what this site sends it
/// comes back from a Frappe site, and a Frappe consumer fetches the documents its documents
/// link to itself and re-logs them as its own Creates).
async fn consumes_here(a: &Applying<'_>, conn: &mut Conn) -> Result<bool> {
    let consumer = store::fetch_docs(
        conn,
        r#"SELECT 1 AS hit FROM "tabEvent Consumer Document Type" t
           WHERE t.parent = $1 AND t.parenttype = 'Event Consumer' AND t.status = 'Approved' LIMIT 1"#,
        &[Param::Text(Some(a.info.url.clone()))],
    )
    .await?;
    Ok(!consumer.is_empty())
}

/// Equal as values: numbers by value (Frappe may send 1.0 for 1), the rest as sent.
pub(super) fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Merges an echoed document into the local one; the note for its sync log.
pub(super) async fn merge_echo(
    a: &Applying<'_>,
    conn: &mut Conn,
    dt: &DocType,
    local: &str,
    incoming: &Doc,
    flags: &WriteFlags,
) -> Result<String> {
    let current = load_doc_for_update(conn, a.reg, dt, local)
        .await?
        .ok_or_else(|| Error::DoesNotExist(format!("{} {local} vanished", dt.name)))?;
    let patch = taken_from_echo(dt, &current, incoming);
    let taken: Vec<String> = patch.keys().cloned().collect();
    if !patch.is_empty() {
        let f = WriteFlags {
            keep_timestamps: false,
            ..flags.clone()
        };
        documents::update_loaded(&a.write(dt), conn, current, patch, &f).await?;
    }
    Ok(match taken.is_empty() {
        true => format!(
            "echo merged: {} sent back this site's own document; nothing new in it",
            a.info.url
        ),
        false => format!(
            "echo merged: {} sent back this site's own document; took {} (empty here), kept the rest",
            a.info.url,
            taken.join(", ")
        ),
    })
}

/// The fields of an echo this site lacks or left empty: values (and whole child tables) that
/// are set in `incoming` and empty in `current`.
fn taken_from_echo(dt: &DocType, current: &Doc, incoming: &Doc) -> Doc {
    let mut patch = Doc::new();
    for f in &dt.fields {
        if !f.has_column() && !f.fieldtype.is_table() {
            continue;
        }
        let Some(v) = incoming.get(&f.fieldname).filter(|v| !is_empty(v)) else {
            continue;
        };
        if !current.get(&f.fieldname).is_none_or(is_empty) {
            continue;
        }
        let value = match v {
            Value::Array(rows) => Value::Array(rows.iter().map(fresh_row).collect()),
            other => other.clone(),
        };
        patch.insert(f.fieldname.clone(), value);
    }
    patch
}

/// A child row as a new row of the local document (the producer's row names stay there).
fn fresh_row(row: &Value) -> Value {
    let mut r = row.as_object().cloned().unwrap_or_default();
    for k in super::conflict::ROW_BOOKKEEPING {
        r.remove(k);
    }
    Value::Object(r)
}

pub(super) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Registry;

    #[test]
    fn an_echo_fills_only_what_is_empty_here() {
        let reg = Registry::builtin();
        let dt = reg.get("ToDo").unwrap();
        let current: Doc = json!({"description": "Call Acme", "priority": "High", "date": null})
            .as_object()
            .cloned()
            .unwrap();
        let incoming: Doc = json!({"description": "Call Acme Corp", "priority": "Low",
                                   "date": "2026-12-10", "unknown": "x"})
        .as_object()
        .cloned()
        .unwrap();
        let patch = taken_from_echo(&dt, &current, &incoming);
        assert_eq!(Value::Object(patch), json!({"date": "2026-12-10"}));
    }
}
