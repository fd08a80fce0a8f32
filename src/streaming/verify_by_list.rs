//! Verification against a producer without digests (Frappe, docstream before 0.2), through
//! its ordinary REST lists: a document is in step when the producer's `modified` is not later
//! than the `creation` of the last update log applied here for it (`log_creation` of its sync
//! log; both by the producer's clock). Documents modified after the consumer's cursor (the
//! creation of the last log it applied) are in flight and left out.
//!
//! Missing here: a document the producer has, not here, that this site received before, or
//! that it should have received (the row syncs existing documents, or it was modified after
//! the first log this site applied from that producer); rows with a condition are judged on
//! the producer, so only the documents received are compared for them. Only here: received,
//! held, and no longer in the producer's list. Reads names and `modified` only, a page at a
//! time, at most [`MAX_DOCUMENTS`] per type.
//! Must not repair: `verify` does, as for digests.

use super::apply::{ProducerInfo, SubscribedType};
use super::remote::RemoteSite;
use super::verify::{Difference, Report};
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store::{self, Param};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Documents of one type a list verification reads at most.
const MAX_DOCUMENTS: usize = 1_000_000;
/// Names per page of the producer's list.
const PAGE: usize = 1_000;
/// Differences found by time whose fields are fetched and listed.
const DETAILED: usize = 200;

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// What this site received of one type from a producer: per producer name, the last applied
/// update's kind and its log's creation (empty when applied before that was recorded).
async fn received(
    site: &Site,
    info: &ProducerInfo,
    sub: &SubscribedType,
) -> Result<BTreeMap<String, (String, String)>> {
    let mut conn = site.store.conn().await?;
    let mut sql = String::from(
        r#"SELECT producer_doc, update_type, log_creation FROM "tabEvent Sync Log"
           WHERE event_producer = $1 AND ref_doctype = $2 AND status IN ('Synced', 'Resolved')
             AND producer_doc IS NOT NULL"#,
    );
    let mut params = vec![Param::text(&info.url), Param::text(&sub.local_type)];
    // A mapped row's entries are told from another row's of the same type by their mapping.
    if let Some(m) = &sub.mapping {
        sql.push_str(" AND mapping = $3");
        params.push(Param::text(&m.name));
    }
    sql.push_str(" ORDER BY creation, name");
    let rows = store::fetch_docs(&mut conn, &sql, &params).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name = text(r.get("producer_doc"));
            (
                name,
                (text(r.get("update_type")), text(r.get("log_creation"))),
            )
        })
        .collect())
}

/// The consumer's cursor (the creation of the last log it applied, `last_update`) and the
/// first log it applied from the producer, both by the producer's clock.
pub struct Window {
    cursor: String,
    first: String,
}

/// The window of a verification by lists, read once for all its types.
pub async fn window(site: &Site, info: &ProducerInfo, last_update: &str) -> Result<Window> {
    let mut conn = site.store.conn().await?;
    // The producer's logs this site applied, not the documents it fetched itself (whose
    // log_creation is their own `modified`, however old).
    let mut params = vec![Param::text(&info.url)];
    let mut sql = String::from(
        r#"SELECT MIN(log_creation) AS first FROM "tabEvent Sync Log" WHERE event_producer = $1 AND log_creation IS NOT NULL AND log_creation <> ''"#,
    );
    for p in super::apply::FETCHED_NOTES {
        params.push(Param::Text(Some(format!("{p}%"))));
        sql.push_str(&format!(
            " AND COALESCE(note, '') NOT LIKE ${}",
            params.len()
        ));
    }
    let first = store::fetch_docs(&mut conn, &sql, &params)
        .await?
        .first()
        .map(|r| text(r.get("first")))
        .unwrap_or_default();
    Ok(Window {
        cursor: last_update.to_string(),
        first,
    })
}

/// The row's condition and Sync Existing, as this site's Event Producer says.
async fn row_rules(site: &Site, info: &ProducerInfo, remote_type: &str) -> Result<(bool, bool)> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT "condition", sync_existing FROM "tabEvent Producer Document Type" WHERE parent = $1 AND ref_doctype = $2"#,
        &[Param::text(&info.url), Param::text(remote_type)],
    )
    .await?;
    let row = rows.first();
    let conditioned = row.is_some_and(|r| !text(r.get("condition")).trim().is_empty());
    let existing = row
        .and_then(|r| r.get("sync_existing"))
        .and_then(Value::as_i64)
        .is_some_and(|v| v != 0);
    Ok((conditioned, existing))
}

/// Of `names`, those this site holds in `doctype`.
async fn held_here(site: &Site, doctype: &str, names: &[&String]) -> Result<BTreeSet<String>> {
    let table = store::q(&crate::meta::table_name(doctype));
    let mut conn = site.store.conn().await?;
    let mut out = BTreeSet::new();
    for chunk in names.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let params: Vec<Param> = chunk.iter().map(|n| Param::text(n)).collect();
        let rows = store::fetch_docs(
            &mut conn,
            &format!(
                "SELECT name FROM {table} WHERE name IN ({})",
                marks.join(", ")
            ),
            &params,
        )
        .await?;
        out.extend(rows.iter().map(|r| text(r.get("name"))));
    }
    Ok(out)
}

/// Why a row with a condition is compared only for what was received.
fn judged_there(sub: &SubscribedType) -> String {
    format!(
        "{}: the row has a condition, judged on the producer: only the documents received are compared",
        sub.local_type
    )
}

/// The producer's documents of a type as (name -> modified), every page; what they cost on
/// the wire goes to `report`.
async fn theirs(
    remote: &RemoteSite,
    remote_type: &str,
    report: &mut Report,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    loop {
        let page = remote.list_modified(remote_type, out.len(), PAGE).await?;
        let n = page.len();
        report.bytes_received += page
            .iter()
            .map(|(n, m)| n.len() + m.len() + 30)
            .sum::<usize>();
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
        if out.len() >= MAX_DOCUMENTS {
            return Err(Error::Validation(format!(
                "{} holds more than {MAX_DOCUMENTS} {remote_type} documents: too many to compare by its lists",
                remote.url
            )));
        }
    }
}

/// "edited here" when this site's users changed the document since it was received, else
/// "different".
async fn edited_or_different(
    conn: &mut store::Conn,
    sub: &SubscribedType,
    name: &str,
) -> Result<&'static str> {
    let edits = super::local_edits::of(conn, &sub.local_type, name).await?;
    Ok(if edits.is_empty() {
        "different"
    } else {
        "edited here"
    })
}

/// The fields in which this site's copy of `name` differs from the producer's, both read
/// whole; an error when the producer's cannot be read.
async fn whole(
    site: &Site,
    remote: &RemoteSite,
    sub: &SubscribedType,
    name: &str,
) -> Result<Vec<Value>> {
    let reg = site.meta();
    let dt = reg.get(&sub.local_type)?;
    let theirs = remote.get_doc(&sub.remote_type, name).await?;
    let mut conn = site.store.conn().await?;
    let ours = crate::service::documents::load_doc(&mut conn, &reg, &dt, name)
        .await?
        .unwrap_or_default();
    let spec = super::digest::spec_of(&reg, &dt);
    let empty = serde_json::Map::new();
    Ok(super::verify::differing_fields(
        &ours,
        theirs.as_object().unwrap_or(&empty),
        &spec,
    ))
}

/// Compares one subscribed type by the producer's lists; adds to `report`.
pub async fn compare_type(
    site: &Site,
    (info, window): (&ProducerInfo, &Window),
    remote: &RemoteSite,
    sub: &SubscribedType,
    deep: bool,
    report: &mut Report,
) -> Result<()> {
    let (cursor, first) = (&window.cursor, &window.first);
    let (conditioned, existing) = row_rules(site, info, &sub.remote_type).await?;
    let theirs = theirs(remote, &sub.remote_type, report).await?;
    let received = received(site, info, sub).await?;
    let kept: Vec<&String> = received
        .iter()
        .filter(|(_, (kind, _))| kind != "Delete")
        .map(|(n, _)| n)
        .collect();
    let candidates: Vec<&String> = kept
        .iter()
        .copied()
        .chain(theirs.keys().filter(|n| !received.contains_key(*n)))
        .collect();
    let here = held_here(site, &sub.local_type, &candidates).await?;
    let in_flight = |modified: &str| !cursor.is_empty() && modified > cursor.as_str();
    let mut unknown = 0;
    let mut conn = site.store.conn().await?;
    for (name, modified) in &theirs {
        if in_flight(modified) {
            continue;
        }
        let mut fields = vec![];
        let kind = match received.get(name) {
            Some((last, applied)) if last != "Delete" => {
                report.documents += 1;
                if !here.contains(name) {
                    "missing here"
                } else if deep {
                    // Whole documents: fetched and compared over the fields both types have.
                    fields = whole(site, remote, sub, name).await?;
                    if fields.is_empty() {
                        continue;
                    }
                    edited_or_different(&mut conn, sub, name).await?
                } else if applied.is_empty() {
                    unknown += 1;
                    continue;
                } else if modified.as_str() > applied.as_str() {
                    if report.differences.len() < DETAILED {
                        // Which fields, for the person reading the report (best effort).
                        fields = whole(site, remote, sub, name).await.unwrap_or_default();
                    }
                    edited_or_different(&mut conn, sub, name).await?
                } else {
                    continue;
                }
            }
            // Deleted here by the producer's own log, or never received.
            _ => {
                let should = !conditioned
                    && (existing || (!first.is_empty() && modified.as_str() >= first.as_str()));
                if !should || here.contains(name) {
                    continue;
                }
                report.documents += 1;
                "missing here"
            }
        };
        report
            .differences
            .push(Difference::new(&sub.local_type, name, kind, fields));
    }
    for name in kept {
        if !theirs.contains_key(name) && here.contains(name) {
            report
                .differences
                .push(Difference::new(&sub.local_type, name, "only here", vec![]));
        }
    }
    if unknown > 0 {
        report.skipped.push(format!(
            "{}: {unknown} documents received without the time of the producer's version (received by docstream before 0.2, or fetched as dependencies before it recorded that): compared once they change again",
            sub.local_type
        ));
    }
    if conditioned {
        report.skipped.push(judged_there(sub));
    }
    Ok(())
}

/// Compares a row with a mapping by presence: its documents here are what the mapping made of
/// the producer's (found through their sync logs), so which are held is compared, not their
/// content. Missing here: received or due (as for [`compare_type`]) and not held; only here:
/// held, and no longer in the producer's list.
pub async fn compare_mapped(
    site: &Site,
    (info, window): (&ProducerInfo, &Window),
    remote: &RemoteSite,
    sub: &SubscribedType,
    report: &mut Report,
) -> Result<()> {
    let (cursor, first) = (&window.cursor, &window.first);
    let (conditioned, existing) = row_rules(site, info, &sub.local_type).await?;
    let theirs = theirs(remote, &sub.remote_type, report).await?;
    let received = received(site, info, sub).await?;
    let held: BTreeSet<String> = {
        let reg = site.meta();
        let dt = reg.get(&sub.local_type)?;
        let mut conn = site.store.conn().await?;
        super::verify::held_mapped(&mut conn, info, sub, &dt)
            .await?
            .into_iter()
            .collect()
    };
    for (name, modified) in &theirs {
        if !cursor.is_empty() && modified > cursor {
            continue;
        }
        let due = match received.get(name) {
            Some((last, _)) => last != "Delete",
            None => {
                !conditioned
                    && (existing || (!first.is_empty() && modified.as_str() >= first.as_str()))
            }
        };
        if !due {
            continue;
        }
        report.documents += 1;
        if !held.contains(name) {
            report.differences.push(Difference::new(
                &sub.local_type,
                name,
                "missing here",
                vec![],
            ));
        }
    }
    for name in held.iter().filter(|n| !theirs.contains_key(*n)) {
        report
            .differences
            .push(Difference::new(&sub.local_type, name, "only here", vec![]));
    }
    report
        .skipped
        .push(super::verify::content_not_compared(&sub.local_type));
    if conditioned {
        report.skipped.push(judged_there(sub));
    }
    Ok(())
}
