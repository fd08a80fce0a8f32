//! Verification: whether a consumer holds what its producer sent it, proved by exchanging
//! digests (`digest.rs`), not documents.
//!
//! The producer's half ([`answer`], method `docstream.streaming.verify_digests`) says what the
//! consumer should hold of one type as of the consumer's checkpoint: per approved row, the
//! documents that pass its condition (those it was sent) or, without one, every document
//! (Sync Existing) or those changed since the approval; documents with logs after the
//! checkpoint are in flight and left out on both sides. It answers bucket digests first and
//! the documents of the buckets asked for.
//!
//! The consumer's half ([`verify`]) runs under the pull lock, compares, lists each difference
//! (missing here, different, only here, edited here since received) with the fields and both
//! values, repairs what it may through the ordinary apply path (`apply::repair`), and records
//! the result on the producer's Event Producer Last Update, where the dashboard reads it.
//! Must not delete or overwrite what is only here or edited here (unless the row says the
//! producer wins).

use super::apply::{ProducerInfo, SubscribedType};
use super::digest::{self, FieldSpec};
use super::remote::RemoteSite;
use crate::error::{Error, Result};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Param};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// The most documents in flight a producer lists: a consumer further behind catches up first.
const MAX_IN_FLIGHT: usize = 10_000;

/// The most differences whose fields are fetched and shown one by one.
const MAX_DETAILED: usize = 200;

// ---------- the producer's half ----------

/// What a consumer asks the producer.
#[derive(Debug, Clone)]
pub struct Ask {
    pub consumer: String,
    pub doctype: String,
    pub fields: FieldSpec,
    pub as_of: i64,
    /// Buckets whose documents are wanted; none: the bucket digests.
    pub buckets: Option<BTreeSet<String>>,
}

/// What a consumer should hold of one type as of its checkpoint `as_of`: the names (in flight
/// and its own left out) and the names in flight (with logs after `as_of`).
pub(super) struct ShouldHold {
    pub wanted: Vec<String>,
    pub in_flight: BTreeSet<String>,
}

/// Per approved row: the documents sent under its condition, or without one every document
/// (Sync Existing) or those changed since the approval; documents whose latest log came from
/// the consumer are its own and left out, as are documents with logs after `as_of`.
pub(super) async fn should_hold(
    conn: &mut Conn,
    site: &Site,
    consumer: &str,
    doctype: &str,
    as_of: i64,
) -> Result<ShouldHold> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT t.condition, t.sync_existing, COALESCE(s.approved_after_seq, 0) AS after
           FROM "tabEvent Consumer Document Type" t
           LEFT JOIN "__consumer_type_state" s ON s.consumer = t.parent AND s.ref_doctype = t.ref_doctype
           WHERE t.parent = $1 AND t.ref_doctype = $2 AND t.status = 'Approved' AND COALESCE(t.unsubscribed, 0) = 0"#,
        &[Param::text(consumer), Param::text(doctype)],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Err(Error::Validation(format!(
            "{doctype} is not an approved type of consumer {consumer} on {}",
            site.config.url
        )));
    };
    let dt = site.meta().get(doctype)?;
    let in_flight: BTreeSet<String> = names(
        conn,
        r#"SELECT DISTINCT docname AS n FROM "tabEvent Update Log" WHERE ref_doctype = $1 AND name > $2"#,
        &[Param::text(doctype), Param::Int(Some(as_of))],
    )
    .await?
    .into_iter()
    .collect();
    if in_flight.len() > MAX_IN_FLIGHT {
        return Err(Error::Validation(format!(
            "{} has more than {MAX_IN_FLIGHT} documents of {doctype} changed after seq {as_of}: verify once the consumer has caught up",
            site.config.url
        )));
    }
    let condition = text(row.get("condition"));
    let should = if !condition.trim().is_empty() {
        names(
            conn,
            r#"SELECT docname AS n FROM "__consumer_sent" WHERE consumer = $1 AND ref_doctype = $2 AND unsent_seq IS NULL"#,
            &[Param::text(consumer), Param::text(doctype)],
        )
        .await?
    } else if row.get("sync_existing").and_then(Value::as_i64) == Some(1) {
        names(
            conn,
            &format!("SELECT name AS n FROM {}", store::q(&dt.table())),
            &[],
        )
        .await?
    } else {
        names(
            conn,
            r#"SELECT DISTINCT docname AS n FROM "tabEvent Update Log" WHERE ref_doctype = $1 AND name > $2
                 AND (for_consumer IS NULL OR for_consumer = $3)"#,
            &[
                Param::text(doctype),
                Param::Int(row.get("after").and_then(Value::as_i64)),
                Param::text(consumer),
            ],
        )
        .await?
    };
    // Documents that came from the consumer are its own: they are never sent back to it.
    let theirs: BTreeSet<String> = names(
        conn,
        r#"SELECT l.docname AS n FROM "tabEvent Update Log" l JOIN
             (SELECT MAX(name) AS last FROM "tabEvent Update Log" WHERE ref_doctype = $1 AND for_consumer IS NULL GROUP BY docname) x
             ON l.name = x.last WHERE l.origin = $2"#,
        &[Param::text(doctype), Param::text(consumer)],
    )
    .await?
    .into_iter()
    .collect();
    let wanted = should
        .into_iter()
        .filter(|n| !in_flight.contains(n) && !theirs.contains(n))
        .collect();
    Ok(ShouldHold { wanted, in_flight })
}

/// Answers a consumer's verification question about one type.
pub async fn answer(site: &Site, caller: &Caller, ask: &Ask) -> Result<Value> {
    let reg = site.meta();
    let mut conn = site.store.conn().await?;
    super::producer::check_consumer(&mut conn, site, caller, &ask.consumer).await?;
    let should = should_hold(&mut conn, site, &ask.consumer, &ask.doctype, ask.as_of).await?;
    let dt = reg.get(&ask.doctype)?;
    let mut spec = digest::narrow(&reg, &dt, &ask.fields);
    // What is not sent to this consumer is its own.
    for f in super::producer::left_out_for(&mut conn, &ask.consumer, &ask.doctype).await? {
        spec.remove(&f);
    }
    let wanted: Vec<String> = should
        .wanted
        .into_iter()
        .filter(|n| {
            ask.buckets
                .as_ref()
                .is_none_or(|b| b.contains(&digest::bucket_of(n)))
        })
        .collect();
    let digests = digest::digests(&mut conn, &reg, &dt, &spec, &wanted).await?;
    let mut out = json!({
        "fields": spec,
        "in_flight": should.in_flight,
        "count": digests.len(),
    });
    match ask.buckets {
        Some(_) => out["docs"] = json!(digests),
        None => out["buckets"] = json!(digest::buckets(&digests)),
    }
    Ok(out)
}

async fn names(conn: &mut Conn, sql: &str, params: &[Param]) -> Result<Vec<String>> {
    Ok(store::fetch_docs(conn, sql, params)
        .await?
        .iter()
        .map(|r| crate::service::documents::name_text(r.get("n").unwrap_or(&Value::Null)))
        .collect())
}

// ---------- the consumer's half ----------

/// One document that differs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub doctype: String,
    pub name: String,
    /// `missing here`, `different`, `only here` or `edited here`.
    pub kind: &'static str,
    /// Each differing field with this site's value (`here`) and the producer's (`there`).
    pub fields: Vec<Value>,
    /// What a repair did, or why none was made.
    pub repair: Option<String>,
}

impl Difference {
    /// A difference of `doctype` `name`, not repaired yet.
    pub fn new(doctype: &str, name: &str, kind: &'static str, fields: Vec<Value>) -> Difference {
        Difference {
            doctype: doctype.to_string(),
            name: name.to_string(),
            kind,
            fields,
            repair: None,
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub producer: String,
    /// The consumer, when the producer checked what a consumer holds (`verify_consumer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The consumer's checkpoint it compared as of.
    pub as_of: i64,
    /// The same as a person reads it: "seq N", or the time of the last log applied from a
    /// producer pulled by time.
    pub position: String,
    /// Documents the producer says this site should hold (in flight left out).
    pub documents: usize,
    pub differences: Vec<Difference>,
    /// Differences a repair removed.
    pub repaired: usize,
    /// Rows not compared, and why.
    pub skipped: Vec<String>,
    /// Bytes of the questions' arguments and of the answers' JSON, this site's side of the
    /// wire (headers left out).
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

impl Report {
    /// An empty report on `producer`'s documents as of `as_of` (`position` as a person reads it).
    pub fn new(producer: &str, as_of: i64, position: String) -> Report {
        Report {
            producer: producer.to_string(),
            consumer: None,
            as_of,
            position,
            documents: 0,
            differences: vec![],
            repaired: 0,
            skipped: vec![],
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Differences left after repairs.
    pub fn remaining(&self) -> usize {
        self.differences.len() - self.repaired
    }

    /// The report as a person reads it, one line per difference.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![];
        for d in &self.differences {
            let fields: Vec<String> = d
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{} (here {}, there {})",
                        text(f.get("field")),
                        f["here"],
                        f["there"]
                    )
                })
                .collect();
            let mut line = format!("{} {} {}", d.kind, d.doctype, d.name);
            if !fields.is_empty() {
                line.push_str(&format!(": {}", fields.join(", ")));
            }
            if let Some(r) = &d.repair {
                line.push_str(&format!(" [{r}]"));
            }
            out.push(line);
        }
        for s in &self.skipped {
            out.push(format!("not compared: {s}"));
        }
        out
    }
}

/// What a verification is asked to do besides comparing.
#[derive(Debug, Clone, Copy, Default)]
pub struct How {
    /// Fetch and apply what is missing or different here.
    pub repair: bool,
    /// Against a producer without digests: compare whole documents, each fetched (digests
    /// compare whole documents always).
    pub deep: bool,
}

/// Verifies what this site holds from `producer`, repairing when asked; the report is also
/// recorded on the producer's Event Producer Last Update. An error means it could not compare.
pub async fn verify(site: &Site, producer: &str, how: How) -> Result<Report> {
    super::consumer::with_pull_lock(site, producer, async {
        let report = compare(site, producer, how).await?;
        record(site, &report).await?;
        Ok(report)
    })
    .await
}

/// The producers (or `producer` only) whose verification is due.
async fn due(site: &Site, conn: &mut Conn, producer: Option<&str>) -> Result<Vec<String>> {
    let minutes = site.config.verify_interval_minutes;
    // Never verified: an interval after the producer was added (its first pages are in flight
    // until then).
    let (cutoff, test) = if minutes > 0.0 {
        let cutoff =
            site.clock.now_naive() - chrono::Duration::milliseconds((minutes * 60_000.0) as i64);
        (
            cutoff.format(crate::time::DATETIME_FORMAT).to_string(),
            "COALESCE(last_verified, creation) < $1",
        )
    } else {
        (DUE_NOW.to_string(), "last_verified = $1")
    };
    let mut params = vec![Param::Text(Some(cutoff))];
    // A producer pulled by time (Frappe) sends nothing that existed before the subscription:
    // one verification with repairs, once it was approved, fetches what Sync Existing asks
    // for. Later ones are on demand (each reads every name of the types).
    let mut sql = format!(
        r#"SELECT name AS n FROM "tabEvent Producer Last Update" u WHERE ((last_seq IS NOT NULL AND {test})
             OR (last_seq IS NULL AND last_verified IS NULL AND EXISTS (SELECT 1 FROM "tabEvent Producer Document Type" r
                 WHERE r.parent = u.name AND r.status = 'Approved' AND COALESCE(r.sync_existing, 0) = 1
                   AND COALESCE(r.unsubscribe, 0) = 0 AND COALESCE(r.has_mapping, 0) = 0)))"#
    );
    if let Some(p) = producer {
        params.push(Param::text(p));
        sql.push_str(" AND name = $2");
    }
    names(conn, &sql, &params).await
}

/// The `last_verified` of a producer whose verification is due now: before every cutoff.
pub const DUE_NOW: &str = "1970-01-01 00:00:00.000000";

/// Makes a producer's verification due at the worker's next round (after a history change,
/// a condition saved).
pub async fn due_now(conn: &mut Conn, producer: &str) -> Result<()> {
    store::execute(
        conn,
        r#"UPDATE "tabEvent Producer Last Update" SET last_verified = $1 WHERE name = $2"#,
        &[Param::text(DUE_NOW), Param::text(producer)],
    )
    .await?;
    Ok(())
}

/// Verifies, with repairs, each docstream producer whose verification is due (never verified,
/// made due, or older than `verify_interval_minutes`). Checked again under the pull lock, so
/// that processes sharing a PostgreSQL site verify a producer once.
pub async fn verify_due(site: &Site) -> Result<()> {
    let mut conn = site.store.conn().await?;
    let candidates = due(site, &mut conn, None).await?;
    drop(conn);
    for p in candidates {
        let outcome = super::consumer::with_pull_lock(site, &p, async {
            let mut conn = site.store.conn().await?;
            if due(site, &mut conn, Some(&p)).await?.is_empty() {
                return Ok(None);
            }
            drop(conn);
            let how = How {
                repair: true,
                deep: false,
            };
            match compare(site, &p, how).await {
                Ok(report) => {
                    record(site, &report).await?;
                    Ok(Some(report))
                }
                Err(e) => {
                    // Tried: due again after the interval, not at every round.
                    record_failure(site, &p, &e).await?;
                    Err(e)
                }
            }
        })
        .await;
        match outcome {
            Ok(Some(r)) if r.remaining() > 0 => tracing::warn!(
                producer = %p,
                "verification: {} differences left ({} repaired)",
                r.remaining(),
                r.repaired
            ),
            Ok(Some(r)) => tracing::info!(
                producer = %p,
                "verification: in step, {} documents ({} repaired)",
                r.documents,
                r.repaired
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(producer = %p, "verification could not compare: {e}"),
        }
    }
    Ok(())
}

async fn compare(site: &Site, producer: &str, how: How) -> Result<Report> {
    let info = ProducerInfo::load(site, producer).await?;
    // A producer pulled by time (Frappe) keeps no seq: its lists are compared instead.
    let (as_of, last_update) = super::consumer::checkpoint(site, producer)
        .await
        .map_err(|e| match e {
            Error::DoesNotExist(_) => Error::Validation(format!(
                "{producer} was never pulled from: verification compares once it has been"
            )),
            e => e,
        })?;
    let mut by_list = as_of.is_none();
    let position = match as_of {
        Some(n) => format!("seq {n}"),
        None => format!("its log of {last_update}"),
    };
    let as_of = as_of.unwrap_or(0);
    let remote = info.remote(site).await?;
    let mut report = Report::new(producer, as_of, position);
    // Documents and links kept here under local names are compared under the producer's.
    let back = {
        let mut conn = site.store.conn().await?;
        super::apply::producer_names(&mut conn, &site.meta(), &info).await?
    };
    let mut window = None;
    for sub in info.types.iter().filter(|t| !t.unsubscribed) {
        if !by_list {
            match compare_type(site, (&info, &back), &remote, sub, &mut report).await {
                // docstream before 0.2 pulls by seq but has no digests.
                Err(Error::DoesNotExist(m)) if m.contains("verify_digests") => by_list = true,
                done => {
                    done?;
                    continue;
                }
            }
        }
        if window.is_none() {
            window = Some(super::verify_by_list::window(site, &info, &last_update).await?);
        }
        let window = window.as_ref().expect("just read");
        if sub.mapping.is_some() {
            super::verify_by_list::compare_mapped(site, (&info, window), &remote, sub, &mut report)
                .await?;
            continue;
        }
        if !sub.use_same_name {
            report.skipped.push(format!(
                "{}: a row without Use Same Name is verified only against a producer with digests (docstream 0.2 or later)",
                sub.local_type
            ));
            continue;
        }
        super::verify_by_list::compare_type(
            site,
            (&info, window),
            &remote,
            sub,
            how.deep,
            &mut report,
        )
        .await?;
    }
    if how.repair {
        for d in report.differences.iter_mut() {
            let sub = info
                .types
                .iter()
                .find(|t| t.local_type == d.doctype && !t.unsubscribed);
            let may = match d.kind {
                "missing here" | "different" => true,
                "edited here" => sub.is_some_and(|s| s.producer_wins),
                _ => false,
            };
            if !may {
                d.repair = Some("left for a person: never overwritten nor deleted".into());
                continue;
            }
            let status =
                super::apply::repair(site, &info, &remote, &d.doctype, &d.name, d.kind).await;
            d.repair = Some(match status {
                Ok(s) if s == "Synced" => {
                    report.repaired += 1;
                    "repaired".into()
                }
                Ok(s) if s == "Failed" => "repair failed: see its Event Sync Log".into(),
                Ok(s) => s,
                Err(e) => format!("repair failed: {}", e.message()),
            });
        }
    }
    Ok(report)
}

/// Compares one subscribed type.
async fn compare_type(
    site: &Site,
    (info, back): (&ProducerInfo, &super::apply::LocalNames),
    remote: &RemoteSite,
    sub: &SubscribedType,
    report: &mut Report,
) -> Result<()> {
    let reg = site.meta();
    let dt = reg.get(&sub.local_type)?;
    let as_of = report.as_of;
    let ask = |buckets: Option<&BTreeSet<String>>, spec: &FieldSpec| {
        let mut args = vec![
            ("event_consumer", site.config.url.clone()),
            ("doctype", sub.remote_type.clone()),
            ("fields", json!(spec).to_string()),
            ("as_of", as_of.to_string()),
        ];
        if let Some(b) = buckets {
            args.push(("buckets", json!(b).to_string()));
        }
        let sent: usize = args.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        async move {
            let answer = remote
                .call("docstream.streaming.verify_digests", &args)
                .await?;
            let received = answer.to_string().len();
            Ok::<_, Error>((answer, sent, received))
        }
    };
    // A mapped row's documents are what its mapping made of the producer's: which of them
    // are held is compared (digests over no field), not their content.
    let presence = sub.mapping.is_some();
    let asked = match presence {
        true => FieldSpec::new(),
        false => digest::spec_of(&reg, &dt),
    };
    let (first, up, down) = ask(None, &asked).await?;
    if presence {
        report.skipped.push(content_not_compared(&sub.local_type));
    }
    report.bytes_sent += up;
    report.bytes_received += down;
    let spec: FieldSpec = serde_json::from_value(first["fields"].clone()).map_err(|e| {
        Error::Validation(format!(
            "{}'s verification answer is not understood: {e}",
            info.url
        ))
    })?;
    let in_flight: BTreeSet<String> =
        serde_json::from_value(first["in_flight"].clone()).unwrap_or_default();
    let theirs_buckets: BTreeMap<String, String> =
        serde_json::from_value(first["buckets"].clone()).unwrap_or_default();
    report.documents += first["count"].as_u64().unwrap_or(0) as usize;
    let mut conn = site.store.conn().await?;
    // Documents kept beside this site's own (a conflict resolved by keeping both) are here
    // under another name.
    let mut local_of: BTreeMap<String, String> = store::fetch_docs(
        &mut conn,
        r#"SELECT remote_name, local_name FROM "__kept_both" WHERE producer = $1 AND ref_doctype = $2"#,
        &[Param::text(&info.url), Param::text(&sub.local_type)],
    )
    .await?
    .iter()
    .map(|r| (text(r.get("remote_name")), text(r.get("local_name"))))
    .collect();
    if !sub.use_same_name {
        local_of.extend(
            back.iter()
                .filter(|((t, _), _)| *t == sub.local_type)
                .map(|((_, local), remote)| (remote.clone(), local.clone())),
        );
    }
    let local = |n: &String| local_of.get(n).cloned().unwrap_or_else(|| n.clone());
    let as_producer =
        |d: &mut serde_json::Map<String, Value>| super::apply::rename_links(&reg, &dt, d, back);
    let ours: BTreeMap<String, String> = if presence {
        let held = digest::digest_of(&serde_json::Map::new(), &spec);
        held_mapped(&mut conn, info, sub, &dt)
            .await?
            .into_iter()
            .filter(|n| !in_flight.contains(n))
            .map(|n| (n, held.clone()))
            .collect()
    } else {
        let received: Vec<String> = received(&mut conn, info, &sub.local_type)
            .await?
            .into_iter()
            .filter(|n| !in_flight.contains(n))
            .collect();
        let remote_of: BTreeMap<String, String> =
            received.iter().map(|n| (local(n), n.clone())).collect();
        let locals: Vec<String> = remote_of.keys().cloned().collect();
        digest::digests_as(&mut conn, &reg, &dt, &spec, &locals, &as_producer)
            .await?
            .into_iter()
            .map(|(l, d)| (remote_of.get(&l).cloned().unwrap_or(l), d))
            .collect()
    };
    let our_buckets = digest::buckets(&ours);
    let differing: BTreeSet<String> = our_buckets
        .keys()
        .chain(theirs_buckets.keys())
        .filter(|b| our_buckets.get(*b) != theirs_buckets.get(*b))
        .cloned()
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    let (second, up, down) = ask(Some(&differing), &spec).await?;
    report.bytes_sent += up;
    report.bytes_received += down;
    let theirs: BTreeMap<String, String> =
        serde_json::from_value(second["docs"].clone()).unwrap_or_default();
    let ours: BTreeMap<&String, &String> = ours
        .iter()
        .filter(|(n, _)| differing.contains(&digest::bucket_of(n)))
        .collect();
    let names: BTreeSet<&String> = ours.keys().copied().chain(theirs.keys()).collect();
    for name in names {
        let kind = match (ours.get(name), theirs.get(name)) {
            (Some(a), Some(b)) if **a == *b => continue,
            (Some(_), Some(_)) => {
                let edits =
                    super::local_edits::of(&mut conn, &sub.local_type, &local(name)).await?;
                if edits.is_empty() {
                    "different"
                } else {
                    "edited here"
                }
            }
            (None, Some(_)) => "missing here",
            (Some(_), None) => "only here",
            (None, None) => continue,
        };
        let fields = if matches!(kind, "different" | "edited here")
            && report.differences.len() < MAX_DETAILED
        {
            let names = (name.as_str(), local(name));
            field_differences(
                &mut conn,
                (&reg, &dt, &spec),
                remote,
                sub,
                (names.0, &names.1),
                &as_producer,
            )
            .await
        } else {
            vec![]
        };
        report
            .differences
            .push(Difference::new(&sub.local_type, name, kind, fields));
    }
    Ok(())
}

/// Why a mapped row's documents are compared by presence only.
pub(super) fn content_not_compared(local_type: &str) -> String {
    format!(
        "the content of {local_type} (its row has a mapping; which documents are held is compared)"
    )
}

/// The producer's names of the documents a mapped row made here that this site still holds.
pub(super) async fn held_mapped(
    conn: &mut Conn,
    info: &ProducerInfo,
    sub: &SubscribedType,
    dt: &crate::meta::DocType,
) -> Result<Vec<String>> {
    let mapping = sub
        .mapping
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    names(
        conn,
        &format!(
            r#"SELECT DISTINCT l.producer_doc AS n FROM "tabEvent Sync Log" l JOIN {} t ON t.name = l.docname
               WHERE l.event_producer = $1 AND l.ref_doctype = $2 AND l.mapping = $3
                 AND l.status IN ('Synced', 'Resolved') AND l.producer_doc IS NOT NULL"#,
            store::q(&dt.table())
        ),
        &[Param::text(&info.url), Param::text(&sub.local_type), Param::text(&mapping)],
    )
    .await
}

/// The documents this site received from the producer that it still holds.
async fn received(conn: &mut Conn, info: &ProducerInfo, doctype: &str) -> Result<Vec<String>> {
    names(
        conn,
        r#"SELECT DISTINCT producer_doc AS n FROM "tabEvent Sync Log"
           WHERE event_producer = $1 AND ref_doctype = $2 AND status IN ('Synced', 'Resolved') AND producer_doc IS NOT NULL"#,
        &[Param::text(&info.url), Param::text(doctype)],
    )
    .await
}

/// The fields of a document that differ from the producer's copy (best effort: none when the
/// producer's copy cannot be read).
async fn field_differences(
    conn: &mut Conn,
    (reg, dt, spec): (&crate::meta::Registry, &crate::meta::DocType, &FieldSpec),
    remote: &RemoteSite,
    sub: &SubscribedType,
    (name, local): (&str, &str),
    as_producer: &(dyn Fn(&mut serde_json::Map<String, Value>) + Sync),
) -> Vec<Value> {
    let Ok(theirs) = remote.get_doc(&sub.remote_type, name).await else {
        return vec![];
    };
    let Ok(Some(mut ours)) = crate::service::documents::load_doc(conn, reg, dt, local).await else {
        return vec![];
    };
    as_producer(&mut ours);
    let Some(theirs) = theirs.as_object() else {
        return vec![];
    };
    differing_fields(&ours, theirs, spec)
}

/// Each field of `spec` whose value differs between this site's copy and the producer's, with
/// both values; in a child table, each differing column of each row (`items[2].rate`), or the
/// row itself (its compared columns) where only one side has it.
pub(super) fn differing_fields(
    ours: &serde_json::Map<String, Value>,
    theirs: &serde_json::Map<String, Value>,
    spec: &FieldSpec,
) -> Vec<Value> {
    let (ours, theirs) = (&padded_times(ours), &padded_times(theirs));
    let mut out = vec![];
    for (f, cols) in spec {
        let mut one = FieldSpec::new();
        one.insert(f.clone(), cols.clone());
        if digest::canonical_text(ours, &one) == digest::canonical_text(theirs, &one) {
            continue;
        }
        let Some(cols) = cols else {
            out.push(
                json!({"field": f, "here": ours.get(f).cloned().unwrap_or(Value::Null),
                            "there": theirs.get(f).cloned().unwrap_or(Value::Null)}),
            );
            continue;
        };
        let (a, b) = (rows_by_idx(ours, f), rows_by_idx(theirs, f));
        let only = |r: Option<&serde_json::Map<String, Value>>| match r {
            Some(r) => Value::Object(
                cols.iter()
                    .filter_map(|c| {
                        r.get(c)
                            .filter(|v| !v.is_null())
                            .map(|v| (c.clone(), v.clone()))
                    })
                    .collect(),
            ),
            None => Value::Null,
        };
        for i in 0..a.len().max(b.len()) {
            let (x, y) = (a.get(i).copied(), b.get(i).copied());
            match (x, y) {
                (Some(x), Some(y)) => {
                    for c in cols {
                        let mut col = FieldSpec::new();
                        col.insert(c.clone(), None);
                        if digest::canonical_text(x, &col) != digest::canonical_text(y, &col) {
                            out.push(json!({"field": format!("{f}[{}].{c}", i + 1),
                                            "here": x.get(c).cloned().unwrap_or(Value::Null),
                                            "there": y.get(c).cloned().unwrap_or(Value::Null)}));
                        }
                    }
                }
                _ => out.push(
                    json!({"field": format!("{f}[{}]", i + 1), "here": only(x), "there": only(y)}),
                ),
            }
        }
    }
    out
}

/// `doc` with its times written in one way: Frappe's REST answers a Time as Python prints a
/// timedelta (`3:53:1.64742`, `4:34:5e-05`), docstream as stored (`03:53:01.647420`); the
/// same value, written `HH:MM:SS.ffffff` here.
fn padded_times(doc: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    fn pad(s: &str) -> Option<String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [h, m, sec] = parts.as_slice() else {
            return None;
        };
        let digits = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        let number = sec
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
        let seconds: f64 = sec.parse().ok().filter(|_| number)?;
        if !(digits(h) && digits(m) && (0.0..61.0).contains(&seconds)) {
            return None;
        }
        let micros = (seconds * 1e6).round() as u64;
        Some(format!(
            "{h:0>2}:{m:0>2}:{:02}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        ))
    }
    doc.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => pad(s).map(Value::String).unwrap_or_else(|| v.clone()),
                Value::Array(rows) => Value::Array(
                    rows.iter()
                        .map(|r| match r.as_object() {
                            Some(r) => Value::Object(padded_times(r)),
                            None => r.clone(),
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A document's rows of a table field, in `idx` order.
fn rows_by_idx<'a>(
    doc: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Vec<&'a serde_json::Map<String, Value>> {
    let mut rows: Vec<&serde_json::Map<String, Value>> = doc
        .get(field)
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    rows.sort_by_key(|r| r.get("idx").and_then(Value::as_i64).unwrap_or(0));
    rows
}

/// Records that an automatic verification could not compare (the counts are unknown).
async fn record_failure(site: &Site, producer: &str, e: &Error) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer Last Update" SET last_verified = $1, verified_documents = NULL,
             verify_differences = NULL, verify_report = $2 WHERE name = $3"#,
        &[
            Param::text(&site.clock.now()),
            Param::Text(Some(format!("could not compare: {}", e.message()))),
            Param::text(producer),
        ],
    )
    .await?;
    tx.commit().await
}

/// Writes the result where the dashboard reads it.
async fn record(site: &Site, report: &Report) -> Result<()> {
    let mut tx = site.store.begin().await?;
    let summary = match report.remaining() {
        0 => format!(
            "in step: {} documents as of {}",
            report.documents, report.position
        ),
        n => format!(
            "{n} differences as of {}:\n{}",
            report.position,
            report.lines().join("\n")
        ),
    };
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer Last Update" SET last_verified = $1, verified_documents = $2,
             verify_differences = $3, verify_report = $4,
             last_in_step = CASE WHEN $3 = 0 THEN $1 ELSE last_in_step END WHERE name = $5"#,
        &[
            Param::text(&site.clock.now()),
            Param::Int(Some(report.documents as i64)),
            Param::Int(Some(report.remaining() as i64)),
            Param::Text(Some(summary)),
            Param::text(&report.producer),
        ],
    )
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_rows_difference_names_its_row_and_column() {
        let mut spec = FieldSpec::new();
        spec.insert("description".into(), None);
        spec.insert(
            "item_defaults".into(),
            Some(vec!["company".into(), "income_account".into()]),
        );
        let ours = json!({"description": "Box", "item_defaults": [
            {"idx": 1, "company": "HO", "income_account": null, "owner": "a", "modified": "x"}]});
        let theirs = json!({"description": "Box", "item_defaults": [
            {"idx": 2, "company": "BR", "income_account": "Sales - BR"},
            {"idx": 1, "company": "HO", "income_account": "Sales - HO", "owner": "b", "modified": "y"}]});
        let found = differing_fields(
            ours.as_object().unwrap(),
            theirs.as_object().unwrap(),
            &spec,
        );
        assert_eq!(
            found,
            vec![
                json!({"field": "item_defaults[1].income_account", "here": null, "there": "Sales - HO"}),
                json!({"field": "item_defaults[2]", "here": null,
                       "there": {"company": "BR", "income_account": "Sales - BR"}}),
            ]
        );
    }

    /// Frappe answers a Time unpadded (`3:53:1.641432`): the same time is no difference, a
    /// later one is.
    #[test]
    fn a_time_written_two_ways_is_one_value() {
        let mut spec = FieldSpec::new();
        spec.insert("posting_time".into(), None);
        let ours = json!({"posting_time": "03:53:01.641430"});
        let ours = ours.as_object().unwrap();
        for same in ["3:53:1.641430", "3:53:01.64143"] {
            let same = json!({ "posting_time": same });
            assert!(differing_fields(ours, same.as_object().unwrap(), &spec).is_empty());
        }
        let tiny = json!({"posting_time": "04:34:00.000050"});
        let python = json!({"posting_time": "4:34:5e-05"});
        let (tiny, python) = (tiny.as_object().unwrap(), python.as_object().unwrap());
        assert!(differing_fields(tiny, python, &spec).is_empty());
        let later = json!({"posting_time": "3:53:2.64143"});
        assert_eq!(
            differing_fields(ours, later.as_object().unwrap(), &spec),
            vec![
                json!({"field": "posting_time", "here": "03:53:01.641430", "there": "03:53:02.641430"})
            ]
        );
    }
}
