//! A linked document whose name is held here but that did not come from this producer (the
//! head office's own "Acme Corp" named in a shop's invoice): linked as it is, never
//! overwritten, and compared once per (producer, type, name) with the producer's copy. When a
//! field both copies have differs, the first sync log that links it says so ("linked to a
//! different local document"), and the difference stays listed in `__dependency_checks`.
//! Must not write the linked document.

use super::*;
use std::collections::HashMap;

/// The notes still to write for documents the page links to that are held here and differ
/// from the producer's copy: new ones are compared first (fetched in parallel, best effort,
/// each once per producer), and every comparison is recorded in its own transaction.
pub(super) async fn check(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    here: Vec<(String, String)>,
) -> HashMap<(String, String), String> {
    let mut notes = HashMap::new();
    let here: Vec<(String, String)> = here
        .into_iter()
        .filter(|(t, _)| {
            reg.get(t).is_ok_and(|dt| {
                t != "DocType" && !dt.issingle && !dt.istable && dt.module != "Event Streaming"
            })
        })
        .collect();
    if here.is_empty() {
        return notes;
    }
    let Ok(unchecked) = recorded(site, info, &here, &mut notes).await else {
        return notes;
    };
    if unchecked.is_empty() {
        return notes;
    }
    let Ok(unchecked) = not_received(site, info, unchecked).await else {
        return notes;
    };
    if unchecked.is_empty() {
        return notes;
    }
    let theirs = super::dependencies::fetch_each(remote, unchecked).await;
    let Ok(mut tx) = site.store.begin().await else {
        return notes;
    };
    let now = site.clock.now();
    for ((t, n), theirs) in theirs {
        // Not readable there (gone, or not shared): nothing to compare, asked again later.
        let Some(theirs) = theirs.filter(Value::is_object) else {
            continue;
        };
        let Ok(dt) = reg.get(&t) else { continue };
        let Ok(Some(ours)) = load_doc(&mut tx, reg, &dt, &n).await else {
            continue;
        };
        let differs = differences(reg, &dt, &ours, &strip_dunder(&theirs));
        let stored = store::execute(
            &mut tx,
            r#"INSERT INTO "__dependency_checks" (producer, ref_doctype, docname, differs, noted, checked_at)
               VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT DO NOTHING"#,
            &[
                Param::text(&info.url),
                Param::text(&t),
                Param::text(&n),
                Param::Text(differs.clone()),
                Param::text(&now),
            ],
        )
        .await;
        if stored.is_err() {
            return notes;
        }
        if let Some(d) = differs {
            notes.insert((t, n), d);
        }
    }
    if tx.commit().await.is_err() {
        notes.clear();
    }
    notes
}

/// What differs between this site's document and the producer's, in fields both have (a
/// child table by row and column), the first few of them.
fn differences(reg: &Registry, dt: &DocType, ours: &Doc, theirs: &Doc) -> Option<String> {
    const SHOWN: usize = 5;
    let spec: crate::streaming::digest::FieldSpec = crate::streaming::digest::spec_of(reg, dt)
        .into_iter()
        .filter(|(f, _)| theirs.contains_key(f))
        .collect();
    let differ = crate::streaming::verify::differing_fields(ours, theirs, &spec);
    let mut parts: Vec<String> = differ
        .iter()
        .take(SHOWN)
        .map(|d| {
            format!(
                "{}: here {}, there {}",
                text(d.get("field")),
                d["here"],
                d["there"]
            )
        })
        .collect();
    if differ.len() > SHOWN {
        parts.push(format!("and {} more", differ.len() - SHOWN));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Of `here`, those never compared for this producer; the recorded differences not yet noted
/// on a sync log go to `notes`.
async fn recorded(
    site: &Site,
    info: &ProducerInfo,
    here: &[(String, String)],
    notes: &mut HashMap<(String, String), String>,
) -> Result<Vec<(String, String)>> {
    let mut conn = site.store.conn().await?;
    let mut unchecked = vec![];
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (t, n) in here {
        by_type.entry(t).or_default().push(n);
    }
    for (t, names) in by_type {
        for chunk in names.chunks(500) {
            let mut params = vec![Param::text(&info.url), Param::text(t)];
            let ph: Vec<String> = chunk
                .iter()
                .map(|n| {
                    params.push(Param::text(n));
                    format!("${}", params.len())
                })
                .collect();
            let rows = store::fetch_docs(
                &mut conn,
                &format!(
                    r#"SELECT docname, differs, noted FROM "__dependency_checks" WHERE producer = $1 AND ref_doctype = $2 AND docname IN ({})"#,
                    ph.join(", ")
                ),
                &params,
            )
            .await?;
            let mut seen = std::collections::HashSet::new();
            for r in rows {
                let n = text(r.get("docname"));
                let differs = text(r.get("differs"));
                if !differs.is_empty() && r.get("noted").and_then(Value::as_i64) == Some(0) {
                    notes.insert((t.to_string(), n.clone()), differs);
                }
                seen.insert(n);
            }
            unchecked.extend(
                chunk
                    .iter()
                    .filter(|n| !seen.contains(**n))
                    .map(|n| (t.to_string(), n.to_string())),
            );
        }
    }
    Ok(unchecked)
}

/// Of `keys`, those that did not come from this producer (no Synced sync log from it); the
/// others are recorded as checked, so that later pages do not ask again.
async fn not_received(
    site: &Site,
    info: &ProducerInfo,
    keys: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut tx = site.store.begin().await?;
    let now = site.clock.now();
    let mut out = vec![];
    for (t, n) in keys {
        let rows = store::fetch_docs(
            &mut tx,
            r#"SELECT 1 AS hit FROM "tabEvent Sync Log" WHERE event_producer = $1 AND ref_doctype = $2 AND producer_doc = $3 AND status = 'Synced' LIMIT 1"#,
            &[Param::text(&info.url), Param::text(&t), Param::text(&n)],
        )
        .await?;
        if rows.is_empty() {
            out.push((t, n));
            continue;
        }
        store::execute(
            &mut tx,
            r#"INSERT INTO "__dependency_checks" (producer, ref_doctype, docname, differs, noted, checked_at)
               VALUES ($1, $2, $3, NULL, 0, $4) ON CONFLICT DO NOTHING"#,
            &[Param::text(&info.url), Param::text(&t), Param::text(&n), Param::text(&now)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// The note of an update whose document links to a document held here that differs from the
/// producer's copy (each such document is noted once); the keys noted go to `noted`.
pub(super) fn note_for(
    reg: &Registry,
    known: &mut Known,
    doctype: &str,
    doc: &Value,
) -> Option<String> {
    if known.linked_here.is_empty() {
        return None;
    }
    let dt = reg.get(doctype).ok()?;
    let doc = doc.as_object()?;
    let links = crate::service::documents::links_of(reg, &dt, doc).ok()?;
    let mut parts = vec![];
    for (_, target, value) in links {
        let key = (target, value);
        if let Some(d) = known.linked_here.remove(&key) {
            parts.push(format!(
                "linked to a different local document: {} {} here is not this producer's copy (made here or received from another site) ({d})",
                key.0, key.1
            ));
            known.linked_noted.push(key);
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Records, in the page's transaction, that these differences are on a sync log.
pub(super) async fn mark_noted(
    conn: &mut Conn,
    producer: &str,
    keys: &[(String, String)],
) -> Result<()> {
    for (t, n) in keys {
        store::execute(
            conn,
            r#"UPDATE "__dependency_checks" SET noted = 1 WHERE producer = $1 AND ref_doctype = $2 AND docname = $3"#,
            &[Param::text(producer), Param::text(t), Param::text(n)],
        )
        .await?;
    }
    Ok(())
}
