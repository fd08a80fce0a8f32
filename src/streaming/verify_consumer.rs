//! The producer's check of what a consumer holds, for consumers that check nothing
//! themselves: a Frappe consumer pulls by time, has no digests, and logs an update it skipped
//! (an Update of a document it lacks, a Create of a name it has) as Synced. This site reads
//! the consumer's REST lists with the keys `register_consumer` gave it.
//!
//! Missing there: a document the consumer should hold as of what it acknowledged (the rule of
//! `verify_digests`: [`super::verify::should_hold`]) that its list lacks, under its own name or,
//! for a row without Use Same Name, as the `remote_docname` of one of its documents. With
//! `deep`, each document both hold is fetched from the consumer and compared over the fields
//! its copy has: "different there", with both values. Rows the consumer maps to another type
//! are listed as not compared.
//!
//! Must not write to the consumer: a producer cannot repair its consumers, and says so.

use super::digest::{self, FieldSpec};
use super::remote::{list_text, RemoteSite};
use super::verify::{differing_fields, Difference, Report};
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store::{self, Param};
use crate::streaming::Streaming;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Names per page of the consumer's list.
const PAGE: usize = 1_000;
/// Documents of one type read from a consumer's list at most.
const MAX_DOCUMENTS: usize = 1_000_000;
/// What each difference says instead of a repair.
const NOT_REPAIRED: &str =
    "not repaired: a producer cannot write to its consumers; see the consumer's Event Sync Logs for it";

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// How the consumer keeps one of this site's types, as its Event Producer row says.
enum Kept {
    /// Under the producer's names.
    SameName,
    /// Under names of its own, with the producer's in `remote_docname`.
    OwnNames,
    /// Mapped to another type, or no row: not compared.
    Elsewhere(String),
}

/// Reads the consumer's Event Producer for this site: how each type is kept there, and
/// whether through a mapping (into the same type: its fields are the mapping's, so only
/// presence is compared).
async fn kept_there(site: &Site, remote: &RemoteSite, doctype: &str) -> Result<(Kept, bool)> {
    let doc = remote.get_doc("Event Producer", &site.config.url).await?;
    let rows = doc
        .get("producer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let flag = |r: &Value, k: &str| r.get(k).and_then(Value::as_i64).unwrap_or(0) != 0;
    let elsewhere = || {
        Kept::Elsewhere(format!(
            "{doctype}: {} keeps it through a mapping into another type (or has no row for it): not compared",
            remote.url
        ))
    };
    let kept = |r: &Value| match flag(r, "use_same_name") {
        true => Kept::SameName,
        false => Kept::OwnNames,
    };
    for r in &rows {
        let mapping = text(r.get("mapping"));
        let mapped = flag(r, "has_mapping") || !mapping.is_empty();
        if !mapped && text(r.get("ref_doctype")) == doctype {
            return Ok((kept(r), false));
        }
    }
    // A Frappe row names the local type and its mapping the remote one.
    for r in &rows {
        let mapping = text(r.get("mapping"));
        if mapping.is_empty() || text(r.get("ref_doctype")) != doctype {
            continue;
        }
        let m = remote.get_doc("Document Type Mapping", &mapping).await?;
        if text(m.get("remote_doctype")) == doctype && text(m.get("local_doctype")) == doctype {
            return Ok((kept(r), true));
        }
    }
    Ok((elsewhere(), false))
}

/// The consumer's documents of a type, as (producer's name -> its name there).
async fn held_there(
    site: &Site,
    remote: &RemoteSite,
    doctype: &str,
    kept: &Kept,
) -> Result<BTreeMap<String, String>> {
    let (fields, filters): (&[&str], Value) = match kept {
        Kept::OwnNames => (
            &["name", "remote_docname"],
            json!([["remote_site_name", "=", site.config.url]]),
        ),
        _ => (&["name"], Value::Null),
    };
    let mut out = BTreeMap::new();
    let mut read = 0;
    loop {
        let page = remote
            .list_page(doctype, fields, &filters, read, PAGE)
            .await?;
        read += page.len();
        for r in &page {
            let local = list_text(r.get("name"));
            let theirs = match kept {
                Kept::OwnNames => list_text(r.get("remote_docname")),
                _ => local.clone(),
            };
            if !theirs.is_empty() {
                out.insert(theirs, local);
            }
        }
        if page.len() < PAGE {
            return Ok(out);
        }
        if read >= MAX_DOCUMENTS {
            return Err(Error::Validation(format!(
                "{} holds more than {MAX_DOCUMENTS} {doctype} documents: too many to compare by its lists",
                remote.url
            )));
        }
    }
}

/// The fields in which the consumer's copy differs from this site's, over the fields (and
/// child columns) its copy has, but those `left_out` of what it is sent.
async fn fields_differing(
    site: &Site,
    remote: &RemoteSite,
    (doctype, left_out): (&str, &[String]),
    (ours, theirs): (&str, &str),
) -> Result<Vec<Value>> {
    let reg = site.meta();
    let dt = reg.get(doctype)?;
    let there = remote.get_doc(doctype, theirs).await?;
    let there = there.as_object().cloned().unwrap_or_default();
    let mut conn = site.store.conn().await?;
    let here = crate::service::documents::load_doc(&mut conn, &reg, &dt, ours)
        .await?
        .unwrap_or_default();
    let spec: FieldSpec = digest::spec_of(&reg, &dt)
        .into_iter()
        .filter(|(f, _)| there.contains_key(f) && !left_out.contains(f))
        .map(|(f, cols)| {
            let first = there
                .get(&f)
                .and_then(Value::as_array)
                .and_then(|r| r.first());
            let cols = cols.map(|cols| match first.and_then(Value::as_object) {
                Some(row) => cols.into_iter().filter(|c| row.contains_key(c)).collect(),
                None => cols,
            });
            (f, cols)
        })
        .collect();
    Ok(differing_fields(&here, &there, &spec))
}

/// Compares one approved type; adds to `report`.
async fn compare_type(
    site: &Site,
    remote: &RemoteSite,
    doctype: &str,
    deep: bool,
    report: &mut Report,
) -> Result<()> {
    let (kept, mapped) = kept_there(site, remote, doctype).await?;
    if let Kept::Elsewhere(why) = &kept {
        report.skipped.push(why.clone());
        return Ok(());
    }
    if mapped && deep {
        report.skipped.push(format!(
            "{doctype}: {} maps it (its fields are the mapping's): compared by presence only",
            remote.url
        ));
    }
    let deep = deep && !mapped;
    let should = {
        let mut conn = site.store.conn().await?;
        super::verify::should_hold(&mut conn, site, &remote.url, doctype, report.as_of).await?
    };
    let there = held_there(site, remote, doctype, &kept).await?;
    // What is not sent to this consumer is its own.
    let left_out = {
        let mut conn = site.store.conn().await?;
        super::producer::left_out_for(&mut conn, &remote.url, doctype).await?
    };
    report.bytes_received += there
        .iter()
        .map(|(a, b)| a.len() + b.len() + 30)
        .sum::<usize>();
    report.documents += should.wanted.len();
    for name in &should.wanted {
        let (kind, fields) = match there.get(name) {
            None => ("missing there", vec![]),
            Some(local) if deep => {
                let fields =
                    fields_differing(site, remote, (doctype, &left_out), (name, local)).await?;
                if fields.is_empty() {
                    continue;
                }
                ("different there", fields)
            }
            Some(_) => continue,
        };
        let mut d = Difference::new(doctype, name, kind, fields);
        d.repair = Some(NOT_REPAIRED.into());
        report.differences.push(d);
    }
    Ok(())
}

/// What the consumer acknowledged (flushed first), or why it cannot be compared yet.
async fn acknowledged(site: &Site, consumer: &str) -> Result<i64> {
    site.streaming().acks.flush(site).await?;
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT c.name, p.acked_seq FROM "tabEvent Consumer" c
           LEFT JOIN "__consumer_progress" p ON p.consumer = c.name WHERE c.name = $1"#,
        &[Param::text(consumer)],
    )
    .await?;
    let row = rows.first().ok_or_else(|| {
        Error::DoesNotExist(format!(
            "{consumer} is not a consumer of {}",
            site.config.url
        ))
    })?;
    row.get("acked_seq").and_then(Value::as_i64).ok_or_else(|| {
        Error::Validation(format!(
            "{consumer} has not pulled from this site yet: verification compares once it has"
        ))
    })
}

/// Checks what `consumer` holds of each approved type, as of what it acknowledged; with
/// `deep`, each document both hold is compared whole. The result is recorded where the
/// dashboard reads it. An error means it could not compare.
pub async fn verify_consumer(site: &Site, consumer: &str, deep: bool) -> Result<Report> {
    super::consumer::with_pull_lock(site, &lock_key(consumer), check(site, consumer, deep)).await
}

fn lock_key(consumer: &str) -> String {
    format!("consumer:{consumer}")
}

/// Compares and records the outcome, failure included.
async fn check(site: &Site, consumer: &str, deep: bool) -> Result<Report> {
    let outcome = compare(site, consumer, deep).await;
    match &outcome {
        Ok(report) => record(site, consumer, Some(report), None).await?,
        Err(e) => record(site, consumer, None, Some(e)).await?,
    }
    outcome
}

async fn compare(site: &Site, consumer: &str, deep: bool) -> Result<Report> {
    let as_of = acknowledged(site, consumer).await?;
    let types: Vec<String> = {
        let mut conn = site.store.conn().await?;
        store::fetch_docs(
            &mut conn,
            r#"SELECT ref_doctype FROM "tabEvent Consumer Document Type"
               WHERE parent = $1 AND status = 'Approved' AND COALESCE(unsubscribed, 0) = 0 ORDER BY idx"#,
            &[Param::text(consumer)],
        )
        .await?
        .iter()
        .map(|r| text(r.get("ref_doctype")))
        .collect()
    };
    let remote = super::remote_with_stored_keys(site, "Event Consumer", consumer).await?;
    let mut report = Report::new(&site.config.url, as_of, format!("seq {as_of}"));
    report.consumer = Some(consumer.to_string());
    let mut seen = BTreeSet::new();
    for t in types.into_iter().filter(|t| seen.insert(t.clone())) {
        compare_type(site, &remote, &t, deep, &mut report).await?;
    }
    Ok(report)
}

/// Writes the result (or why it could not compare) where the dashboard reads it.
async fn record(
    site: &Site,
    consumer: &str,
    report: Option<&Report>,
    error: Option<&Error>,
) -> Result<()> {
    let (documents, differences, summary) = match (report, error) {
        (Some(r), _) => (
            Some(r.documents as i64),
            Some(r.remaining() as i64),
            match r.remaining() {
                0 => format!("in step: {} documents as of {}", r.documents, r.position),
                n => format!(
                    "{n} differences as of {}:\n{}",
                    r.position,
                    r.lines().join("\n")
                ),
            },
        ),
        (None, e) => (
            None,
            None,
            format!(
                "could not compare: {}",
                e.map(Error::message).unwrap_or_default()
            ),
        ),
    };
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"INSERT INTO "__consumer_verification" (consumer, verified_at, documents, differences, report, in_step_at)
           SELECT $1, $2, $3, $4, $5, CASE WHEN $4 = 0 THEN $2 ELSE NULL END
           WHERE EXISTS (SELECT 1 FROM "tabEvent Consumer" WHERE name = $1)
           ON CONFLICT (consumer) DO UPDATE SET verified_at = excluded.verified_at,
             documents = excluded.documents, differences = excluded.differences, report = excluded.report,
             in_step_at = COALESCE(excluded.in_step_at, "__consumer_verification".in_step_at)"#,
        &[
            Param::text(consumer),
            Param::text(&site.clock.now()),
            Param::Int(documents),
            Param::Int(differences),
            Param::Text(Some(summary)),
        ],
    )
    .await?;
    tx.commit().await
}

/// Consumers that pull by time and whose check is due (never checked: an interval after they
/// were added), or `consumer` only.
async fn due(site: &Site, consumer: Option<&str>) -> Result<Vec<String>> {
    let minutes = site.config.verify_interval_minutes;
    let cutoff = (site.clock.now_naive()
        - chrono::Duration::milliseconds((minutes * 60_000.0) as i64))
    .format(crate::time::DATETIME_FORMAT)
    .to_string();
    let mut params = vec![Param::Text(Some(cutoff))];
    let mut sql = r#"SELECT v.consumer FROM "__consumer_verification" v JOIN "tabEvent Consumer" c ON c.name = v.consumer
           WHERE v.by_time = 1 AND COALESCE(v.verified_at, c.creation) < $1"#
        .to_string();
    if let Some(c) = consumer {
        params.push(Param::text(c));
        sql.push_str(" AND v.consumer = $2");
    }
    let mut conn = site.store.conn().await?;
    Ok(store::fetch_docs(&mut conn, &sql, &params)
        .await?
        .iter()
        .map(|r| text(r.get("consumer")))
        .collect())
}

/// Checks each consumer that pulls by time whose check is due (`verify_interval_minutes`;
/// 0 turns it off). Checked again under the lock, so processes sharing a PostgreSQL site
/// check a consumer once.
pub async fn verify_due(site: &Site) -> Result<()> {
    if site.config.verify_interval_minutes <= 0.0 {
        return Ok(());
    }
    for c in due(site, None).await? {
        let outcome = super::consumer::with_pull_lock(site, &lock_key(&c), async {
            if due(site, Some(&c)).await?.is_empty() {
                return Ok(None);
            }
            check(site, &c, false).await.map(Some)
        })
        .await;
        match outcome {
            Ok(Some(r)) if r.remaining() > 0 => tracing::warn!(
                consumer = %c,
                "consumer check: {} documents missing or different there",
                r.remaining()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(consumer = %c, "consumer check could not compare: {e}"),
        }
    }
    Ok(())
}
