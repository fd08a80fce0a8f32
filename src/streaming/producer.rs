//! The producer side: `register_consumer`, the pull method, approval bookkeeping and snapshots
//! (push notifications are in `notifier.rs`).

use super::update_log::{current_seq, first_seq_after, newest, NewLog};
use crate::error::{Error, Result};
use crate::service::documents;
use crate::service::documents::{load_doc, load_doc_for_update, WriteFlags};
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::Streaming;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Most logs one pull examines.
pub const MAX_PULL_LIMIT: u64 = 5000;

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn parse_json_arg(v: &Value, what: &str) -> Result<Value> {
    match v {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| Error::BadRequest(format!("{what} is not valid JSON: {e}"))),
        other => Ok(other.clone()),
    }
}

/// Handles `register_consumer`: creates or updates the Event Consumer named by the consumer's URL.
pub async fn register_consumer(site: &Site, caller: &Caller, data: &Value) -> Result<String> {
    if !caller.is_system_manager() {
        return Err(Error::Permission(format!(
            "{} must be a System Manager on {} to register a consumer",
            caller.user, site.config.url
        )));
    }
    let data = parse_json_arg(data, "data")?;
    let url = text(data.get("event_consumer"))
        .trim_end_matches('/')
        .to_string();
    let user = text(data.get("user"));
    let (key, secret) = (text(data.get("api_key")), text(data.get("api_secret")));
    if url.is_empty() || user.is_empty() || key.is_empty() || secret.is_empty() {
        return Err(Error::Mandatory(
            "register_consumer needs event_consumer, user, api_key and api_secret".into(),
        ));
    }
    let wanted = parse_json_arg(
        data.get("consumer_doctypes").unwrap_or(&Value::Null),
        "consumer_doctypes",
    )?;
    let wanted = wanted
        .as_array()
        .cloned()
        .ok_or_else(|| Error::BadRequest("consumer_doctypes must be a JSON list".into()))?;
    let reg = site.meta();
    {
        let mut conn = site.store.conn().await?;
        let users = reg.get("User")?;
        if !store::row_exists(&mut conn, &users, &Value::String(user.clone())).await? {
            return Err(Error::Validation(format!(
                "User {user} not found on the producer site"
            )));
        }
    }
    let dt = reg.get("Event Consumer")?;
    let admin = Caller::administrator();
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: true,
        ..Default::default()
    };
    let mut tx = site.store.begin().await?;
    let existing = load_doc_for_update(&mut tx, &reg, &dt, &url).await?;
    let old_rows: Vec<Value> = existing
        .as_ref()
        .and_then(|d| d.get("consumer_doctypes"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    for w in &wanted {
        let doctype = text(w.get("doctype"));
        reg.get(&doctype).map_err(|_| {
            Error::Validation(format!(
                "{} has no document type {doctype}",
                site.config.url
            ))
        })?;
        let old = old_rows
            .iter()
            .find(|r| text(r.get("ref_doctype")) == doctype);
        let status = old
            .map(|r| text(r.get("status")))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Pending".into());
        let sync_existing = w
            .get("sync_existing")
            .and_then(|v| v.as_i64().or_else(|| v.as_bool().map(i64::from)))
            .unwrap_or(0);
        let mut row = json!({"ref_doctype": doctype, "status": status, "condition": w.get("condition").cloned().unwrap_or(Value::Null), "sync_existing": sync_existing, "unsubscribed": 0});
        if let Some(n) = old.and_then(|r| r.get("name")) {
            row["name"] = n.clone();
        }
        rows.push(row);
    }
    let doc = store::doc_from(
        json!({"name": url, "callback_url": url, "user": user, "api_key": key, "api_secret": secret, "consumer_doctypes": rows, "incoming_change": 1}),
    );
    let saved = if let Some(existing) = existing {
        documents::update_loaded(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &dt,
            },
            &mut tx,
            existing,
            doc,
            &flags,
        )
        .await?
        .0
    } else {
        documents::insert_in(
            &Write {
                site,
                reg: &reg,
                caller: &admin,
                dt: &dt,
            },
            &mut tx,
            doc,
            &flags,
        )
        .await?
        .0
    };
    let (last_seq, newest_creation) = newest(&mut tx).await?;
    tx.commit().await?;
    let last_update = newest_creation.unwrap_or_else(|| site.clock.now());
    let statuses: Vec<Value> = saved["consumer_doctypes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"doctype": r["ref_doctype"], "status": r["status"]}))
        .collect();
    let reply = json!({"last_update": last_update, "last_seq": last_seq, "producer_url": site.config.url, "consumer_doctypes": statuses});
    Ok(reply.to_string())
}

/// What one pull returns.
#[derive(Debug)]
pub struct Pulled {
    pub logs: Vec<Value>,
    pub last_seq: i64,
    pub has_more: bool,
    /// Asked with `after_seq`: the self-checking page body (`streaming::page`), which holds
    /// the logs instead of `logs`.
    pub page: Option<Arc<str>>,
}

/// Per-consumer view of its subscription: approved types and where each approval began.
struct Subscription {
    url: String,
    approved: std::collections::HashMap<String, i64>,
    /// Conditions of approved rows that have one, by type.
    conditions: std::collections::HashMap<String, String>,
    /// Fields not sent to this consumer, by type (`leave_out.rs`).
    left_out: std::collections::HashMap<String, Vec<String>>,
}

/// Refuses a pull for a consumer that does not exist here, or that the caller may not pull for
/// (the approvals that judge a page are read after its logs).
pub(super) async fn check_consumer(
    conn: &mut Conn,
    site: &Site,
    caller: &Caller,
    consumer_url: &str,
) -> Result<()> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT name, "user" FROM "tabEvent Consumer" WHERE name = $1"#,
        &[Param::Text(Some(consumer_url.into()))],
    )
    .await?;
    let Some(c) = rows.first() else {
        return Err(Error::DoesNotExist(format!(
            "Event Consumer {consumer_url} not found on {}",
            site.config.url
        )));
    };
    if !caller.is_system_manager() && text(c.get("user")) != caller.user {
        return Err(Error::Permission(format!(
            "{} may not pull for consumer {consumer_url}",
            caller.user
        )));
    }
    Ok(())
}

/// A consumer's approved types and where each approval began.
async fn load_subscription(conn: &mut Conn, consumer_url: &str) -> Result<Subscription> {
    let types = store::fetch_docs(
        conn,
        r#"SELECT t.ref_doctype, t.condition, t.leave_out, COALESCE(s.approved_after_seq, 0) AS after FROM "tabEvent Consumer Document Type" t
           LEFT JOIN "__consumer_type_state" s ON s.consumer = t.parent AND s.ref_doctype = t.ref_doctype
           WHERE t.parent = $1 AND t.status = 'Approved' AND COALESCE(t.unsubscribed, 0) = 0"#,
        &[Param::Text(Some(consumer_url.into()))],
    )
    .await?;
    let approved = types
        .iter()
        .map(|r| {
            (
                text(r.get("ref_doctype")),
                r.get("after").and_then(Value::as_i64).unwrap_or(0),
            )
        })
        .collect();
    let conditions = types
        .iter()
        .map(|r| (text(r.get("ref_doctype")), text(r.get("condition"))))
        .filter(|(_, c)| !c.trim().is_empty())
        .collect();
    let left_out = types
        .iter()
        .map(|r| {
            let fields = super::leave_out::fields(&text(r.get("leave_out")));
            (text(r.get("ref_doctype")), fields)
        })
        .filter(|(_, f)| !f.is_empty())
        .collect();
    Ok(Subscription {
        url: consumer_url.into(),
        approved,
        conditions,
        left_out,
    })
}

fn passes(sub: &Subscription, wanted: &HashSet<String>, log: &Doc) -> bool {
    let doctype = text(log.get("ref_doctype"));
    let seq = log.get("seq").and_then(Value::as_i64).unwrap_or(0);
    let origin = text(log.get("origin"));
    let for_consumer = text(log.get("for_consumer"));
    match sub.approved.get(&doctype) {
        Some(after) => {
            wanted.contains(&doctype)
                && origin != sub.url
                && (for_consumer.is_empty() || for_consumer == sub.url)
                // Logs written before approval are passed over; the snapshot stands for them.
                && (seq > *after || for_consumer == sub.url)
        }
        None => false,
    }
}

fn wire(log: &Doc) -> Value {
    json!({
        "name": log.get("name").cloned().unwrap_or(Value::Null),
        "update_type": log.get("update_type").cloned().unwrap_or(Value::Null),
        "ref_doctype": log.get("ref_doctype").cloned().unwrap_or(Value::Null),
        "docname": log.get("docname").cloned().unwrap_or(Value::Null),
        "data": log.get("data").cloned().unwrap_or(Value::Null),
        "creation": log.get("creation").cloned().unwrap_or(Value::Null),
        "seq": log.get("seq").cloned().unwrap_or(Value::Null),
        "origin": log.get("origin").cloned().unwrap_or(Value::Null),
    })
}

const LOG_COLUMNS: &str =
    r#"name, update_type, ref_doctype, docname, data, creation, seq, origin, for_consumer"#;

/// What a consumer asks for when it pulls.
pub struct PullArgs<'a> {
    /// JSON list of the types it wants.
    pub doctypes: &'a Value,
    /// docstream's paging: logs after this seq.
    pub after_seq: Option<&'a Value>,
    /// Frappe's form: logs created after this time.
    pub last_update: Option<&'a str>,
    pub limit: Option<u64>,
    /// What the consumer has committed, when it pipelines pulls (else `after_seq`).
    pub acked_seq: Option<u64>,
    /// Long poll: seconds to wait for a log after `after_seq` before answering empty.
    pub wait: Option<&'a str>,
    /// The consumer asked for a page bound to this request (`streaming::page`).
    pub bound: bool,
    /// `event_consumer` as received, for the bound page's echo.
    pub consumer_text: &'a str,
    /// The identity of the consumer's checkpoint, when it asks for history identity
    /// (`streaming::history`; empty before it knows one).
    pub history: Option<&'a str>,
}

/// A JSON argument as its text on the wire (a form value as sent, JSON re-encoded).
fn arg_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The `wait` of a pull, bounded by the site's `max_pull_wait_seconds`.
fn wait_of(site: &Site, wait: Option<&str>) -> Result<Option<std::time::Duration>> {
    let Some(w) = wait.map(str::trim).filter(|w| !w.is_empty()) else {
        return Ok(None);
    };
    let secs = w
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "wait must be a number of seconds (0 or more), not {w:?}"
            ))
        })?;
    let secs = secs.min(site.config.max_pull_wait_seconds.max(0.0));
    Ok((secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs)))
}

/// Handles `get_update_logs_for_consumer`.
pub async fn get_update_logs(
    site: &Site,
    caller: &Caller,
    consumer_url: &str,
    args: PullArgs<'_>,
) -> Result<Pulled> {
    let PullArgs {
        doctypes,
        after_seq,
        last_update,
        limit,
        acked_seq,
        wait,
        bound,
        consumer_text,
        history,
    } = args;
    let (after_text, doctypes_text) = (arg_text(after_seq), arg_text(Some(doctypes)));
    let echo = bound.then_some(super::page::Echo {
        after_seq: &after_text,
        consumer: consumer_text,
        doctypes: &doctypes_text,
    });
    let wait = wait_of(site, wait)?;
    let wanted: HashSet<String> = match parse_json_arg(doctypes, "doctypes")? {
        Value::Array(a) => a.iter().map(|d| text(Some(d))).collect(),
        _ => {
            return Err(Error::BadRequest(
                "doctypes must be a JSON list of document types".into(),
            ))
        }
    };
    let after_seq =
        match after_seq {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                Error::BadRequest("after_seq must be a non-negative integer".into())
            })?),
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "after_seq must be a non-negative integer, not {s:?}"
                        ))
                    })?,
            ),
            Some(_) => {
                return Err(Error::BadRequest(
                    "after_seq must be a non-negative integer".into(),
                ))
            }
        };
    let mut conn = site.store.conn().await?;
    check_consumer(&mut conn, site, caller, consumer_url).await?;
    site.streaming().notifier.pulled(consumer_url);
    match after_seq {
        Some(after) => {
            // This database's restore, for a consumer that asks for history identities.
            let restored = match history {
                Some(_) => super::history::Restored::of(site).await?,
                None => Default::default(),
            };
            if let Some(given) = history {
                if let Some(reason) =
                    super::history::changed(&mut conn, after, given, &restored).await?
                {
                    let high = current_seq(&mut conn).await?;
                    tracing::warn!(consumer = consumer_url, after, "history changed: {reason}");
                    // An empty page that says so, bound to its request like any page (a
                    // request changed on the way must not pass for a changed history).
                    let body = super::history::changed_page(after, &reason, high);
                    let body = match &echo {
                        Some(echo) => super::page::bind(&body, echo),
                        None => body,
                    };
                    return Ok(Pulled {
                        logs: Vec::new(),
                        page: Some(Arc::from(body)),
                        last_seq: after,
                        has_more: false,
                    });
                }
            }
            drop(conn);
            let epoch = restored.id;
            // The identity at `from`, as the consumer sent it (checked above).
            let mut known_id = history.unwrap_or_default().to_string();
            let limit = limit.unwrap_or(500).clamp(1, MAX_PULL_LIMIT) as i64;
            let until = wait.map(|w| tokio::time::Instant::now() + w);
            // A consumer that pipelines its pulls says what it has committed (`acked_seq`).
            let acked = acked_seq.map_or(after, |a| (a as i64).min(after));
            site.streaming().acks.note(consumer_url, acked);
            let mut from = after;
            loop {
                // The wait comes before the page is read, holding no connection.
                if let Some(until) = until {
                    site.streaming()
                        .log_watch
                        .wait_past(site, consumer_url, from, until)
                        .await?;
                }
                let mut conn = site.store.conn().await?;
                let high = current_seq(&mut conn).await?;
                // Read after `high`: an approval whose logs the page holds has committed
                // before, so they are judged under it (read before, they would be judged
                // unapproved, left out, and passed over for good).
                let sub = load_subscription(&mut conn, consumer_url).await?;
                let upto = (from + limit).min(high).max(from);
                let rows = match site.streaming().pages.rows(from, upto) {
                    Some(rows) => rows,
                    None => {
                        let rows = Arc::new(store::fetch_docs(
                            &mut conn,
                            &format!(r#"SELECT {LOG_COLUMNS} FROM "tabEvent Update Log" WHERE name > $1 AND name <= $2 ORDER BY name"#),
                            &[Param::Int(Some(from)), Param::Int(Some(upto))],
                        )
                        .await?);
                        site.streaming().pages.keep_rows(from, upto, rows.clone());
                        rows
                    }
                };
                drop(conn);
                let has_more = upto < high;
                let rewrites = rows.iter().any(|l| {
                    let doctype = text(l.get("ref_doctype"));
                    passes(&sub, &wanted, l)
                        && (sub.conditions.contains_key(&doctype)
                            || sub.left_out.contains_key(&doctype))
                });
                let max_bytes = site.config.page_bytes();
                let page = if rewrites {
                    // A condition may leave a log out or stand a Create in for it, a row
                    // may leave fields out: this consumer's page is its own.
                    let logs = judged(site, &sub, &wanted, &rows).await?;
                    super::page::encode_bounded(logs, upto, has_more, max_bytes, bound)
                } else {
                    let passing: Vec<&Doc> =
                        rows.iter().filter(|l| passes(&sub, &wanted, l)).collect();
                    let seqs = passing
                        .iter()
                        .map(|l| l.get("seq").and_then(Value::as_i64).unwrap_or(0))
                        .collect();
                    site.streaming()
                        .pages
                        .body(upto, has_more, bound, seqs, || {
                            let logs = passing.iter().map(|l| wire(l));
                            super::page::encode_bounded(logs, upto, has_more, max_bytes, bound)
                        })
                };
                // Logs this consumer does not get (its own, other types, failed conditions)
                // do not end a long poll: it waits on past them, and the page says so.
                let time_left = until.is_some_and(|u| tokio::time::Instant::now() < u);
                if page.count == 0 && !page.has_more && upto > from && time_left {
                    known_id = super::history::identity_in(&rows, upto, &epoch).unwrap_or(known_id);
                    from = upto;
                    continue;
                }
                let body = match history {
                    Some(_) => {
                        let id = super::history::identity_in(&rows, page.last_seq, &epoch)
                            .unwrap_or(known_id);
                        Arc::from(super::history::with_history(&page.body, &id))
                    }
                    None => page.body,
                };
                let body = match &echo {
                    Some(echo) => Arc::from(super::page::bind(&body, echo)),
                    None => body,
                };
                return Ok(Pulled {
                    logs: Vec::new(),
                    page: Some(body),
                    last_seq: page.last_seq,
                    has_more: page.has_more,
                });
            }
        }
        None => {
            let since = last_update.map(str::to_string).unwrap_or_default();
            let first = first_seq_after(&mut conn, &since).await?;
            // A consumer that pulls by time (Frappe) has received every log created up to
            // `since`: acknowledged as a seq, so its lag, pruning and verification know.
            let acked = match first {
                Some(f) => f - 1,
                None => current_seq(&mut conn).await?,
            };
            site.streaming().acks.note_by_time(consumer_url, acked);
            let rows = match first {
                None => Vec::new(),
                Some(first) => {
                    let mut sql = format!(
                        r#"SELECT {LOG_COLUMNS} FROM "tabEvent Update Log" WHERE name >= $1 AND creation > $2 ORDER BY name"#
                    );
                    if let Some(l) = limit {
                        sql.push_str(&format!(" LIMIT {}", l.max(1)));
                    }
                    let params = [Param::Int(Some(first)), Param::Text(Some(since))];
                    store::fetch_docs(&mut conn, &sql, &params).await?
                }
            };
            let last_seq = rows
                .last()
                .and_then(|r| r.get("seq"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            // After the logs, for the reason given above.
            let sub = load_subscription(&mut conn, consumer_url).await?;
            drop(conn);
            let logs =
                renames_as_delete_and_create(site, judged(site, &sub, &wanted, &rows).await?)
                    .await?;
            Ok(Pulled {
                logs,
                page: None,
                last_seq,
                has_more: false,
            })
        }
    }
}

/// Rewrites each rename for a consumer that pulls by `last_update` (Frappe's form) as a
/// Delete of the old name and then a Create of the document as renamed. Frappe does not stream
/// renames: its consumer would look for the new name, find nothing, and log the sync Synced
/// with the document lost. Delete first, so that a Create refused (say by a unique field) never
/// leaves the consumer without the document under either name.
async fn renames_as_delete_and_create(site: &Site, logs: Vec<Value>) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(logs.len());
    for log in logs {
        let data: Option<Value> = match (&log["update_type"], &log["data"]) {
            (Value::String(t), Value::String(d)) if t == "Update" && d.contains("\"old_name\"") => {
                serde_json::from_str(d).ok()
            }
            _ => None,
        };
        let Some(old) = data
            .as_ref()
            .and_then(|d| d.get("old_name"))
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
        else {
            out.push(log);
            continue;
        };
        let doc = match data
            .as_ref()
            .and_then(|d| d.get("doc"))
            .and_then(Value::as_object)
        {
            Some(d) => Some(d.clone()),
            // Logs written before renames carried their document: its state now.
            None => {
                let reg = site.meta();
                let dt = reg.get(&text(log.get("ref_doctype")))?;
                let mut conn = site.store.conn().await?;
                load_doc(&mut conn, &reg, &dt, &text(log.get("docname"))).await?
            }
        };
        let mut delete = log.clone();
        delete["update_type"] = json!("Delete");
        delete["docname"] = json!(old);
        delete["data"] = Value::Null;
        out.push(delete);
        if let Some(doc) = doc {
            let mut create = log;
            create["update_type"] = json!("Create");
            create["data"] = json!(crate::service::diff::create_payload_json(&doc));
            out.push(create);
        }
    }
    Ok(out)
}

/// The logs a consumer may have, with its conditions applied, as sent on the wire.
async fn judged(
    site: &Site,
    sub: &Subscription,
    wanted: &HashSet<String>,
    rows: &[Doc],
) -> Result<Vec<Value>> {
    let rows: Vec<Doc> = rows
        .iter()
        .filter(|l| passes(sub, wanted, l))
        .cloned()
        .collect();
    let rows = super::condition::Judge::new(site, &sub.url, &sub.conditions)
        .filter(rows)
        .await?;
    Ok(rows
        .iter()
        .map(|l| {
            let mut log = wire(l);
            if let Some(fields) = sub.left_out.get(&text(l.get("ref_doctype"))) {
                let kind = text(l.get("update_type"));
                log["data"] = super::leave_out::strip(&kind, &log["data"], fields);
            }
            log
        })
        .collect())
}

/// The fields of `doctype` not sent to `consumer` (its row's Leave Out).
pub(super) async fn left_out_for(
    conn: &mut Conn,
    consumer: &str,
    doctype: &str,
) -> Result<Vec<String>> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT leave_out FROM "tabEvent Consumer Document Type" WHERE parent = $1 AND ref_doctype = $2"#,
        &[Param::text(consumer), Param::text(doctype)],
    )
    .await?;
    Ok(rows
        .iter()
        .flat_map(|r| super::leave_out::fields(&text(r.get("leave_out"))))
        .collect())
}

/// The consumers that have received a log: acknowledged it and were sent it under their
/// subscription (computed, so writing a log costs the same for any number of consumers).
pub async fn consumers_of(conn: &mut Conn, log: &Doc) -> Result<Vec<Value>> {
    let seq = log.get("seq").and_then(Value::as_i64).unwrap_or(i64::MAX);
    let rows = store::fetch_docs(
        conn,
        r#"SELECT consumer FROM "__consumer_progress" WHERE acked_seq >= $1 ORDER BY consumer"#,
        &[Param::Int(Some(seq))],
    )
    .await?;
    let wanted: HashSet<String> = [text(log.get("ref_doctype"))].into_iter().collect();
    let mut out = Vec::new();
    for r in rows {
        let url = text(r.get("consumer"));
        let sub = load_subscription(conn, &url).await?;
        if passes(&sub, &wanted, log)
            && (!sub.conditions.contains_key(&text(log.get("ref_doctype")))
                || delivered_under_condition(conn, &url, seq).await?)
        {
            out.push(json!({"doctype": "Event Update Log Consumer", "consumer": url}));
        }
    }
    Ok(out)
}

async fn delivered_under_condition(conn: &mut Conn, consumer: &str, seq: i64) -> Result<bool> {
    Ok(!store::fetch_docs(
        conn,
        r#"SELECT 1 AS hit FROM "__condition_deliveries" WHERE consumer = $1 AND seq = $2"#,
        &[Param::Text(Some(consumer.into())), Param::Int(Some(seq))],
    )
    .await?
    .is_empty())
}

/// In the approving transaction: records where each newly approved type starts and writes the
/// snapshot of existing documents for rows that asked for it.
pub async fn on_consumer_saved(
    site: &Site,
    conn: &mut Conn,
    doc: &Doc,
    old: Option<&Doc>,
) -> Result<bool> {
    let url = text(doc.get("name"));
    let status_of = |d: Option<&Doc>, t: &str| -> String {
        d.and_then(|d| d.get("consumer_doctypes"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| text(r.get("ref_doctype")) == t)
            .map(|r| {
                if r.get("unsubscribed").and_then(Value::as_i64) == Some(1) {
                    "Unsubscribed".to_string()
                } else {
                    text(r.get("status"))
                }
            })
            .unwrap_or_default()
    };
    let mut changed = false;
    let reg = site.meta();
    for row in doc
        .get("consumer_doctypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let t = text(row.get("ref_doctype"));
        let now = status_of(Some(doc), &t);
        let before = status_of(old, &t);
        if now != before {
            changed = true;
        }
        if now == "Approved"
            && before == "Approved"
            && condition_of(old, &t) != condition_of(Some(doc), &t)
        {
            // A corrected condition judges again what the old one raised on.
            resend_held_back(site, conn, &reg, &t, &url).await?;
        }
        if now != "Approved" || before == "Approved" {
            continue;
        }
        let seq = current_seq(conn).await?;
        store::execute(
            conn,
            r#"INSERT INTO "__consumer_type_state" (consumer, ref_doctype, approved_after_seq) VALUES ($1, $2, $3)
               ON CONFLICT (consumer, ref_doctype) DO UPDATE SET approved_after_seq = excluded.approved_after_seq"#,
            &[Param::Text(Some(url.clone())), Param::Text(Some(t.clone())), Param::Int(Some(seq))],
        )
        .await?;
        if row
            .get("sync_existing")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 1
        {
            write_snapshot(site, conn, &reg, &t, &url).await?;
        }
    }
    Ok(changed)
}

/// `docstream.streaming.condition_failures`: per type, the documents a consumer's condition
/// raised on at its last judging (asked by that consumer, or a System Manager).
pub async fn condition_failures(
    site: &Site,
    caller: &Caller,
    consumer: &str,
) -> Result<Vec<Value>> {
    let mut conn = site.store.conn().await?;
    check_consumer(&mut conn, site, caller, consumer).await?;
    super::condition::failures(&mut conn, consumer).await
}

/// The condition of a consumer's row for `doctype`.
fn condition_of(d: Option<&Doc>, doctype: &str) -> String {
    d.and_then(|d| d.get("consumer_doctypes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| text(r.get("ref_doctype")) == doctype)
        .map(|r| text(r.get("condition")))
        .unwrap_or_default()
}

/// Logs, for `consumer` only, a Create of each document its condition raised on: its next
/// pull judges them under the condition as it is now.
async fn resend_held_back(
    site: &Site,
    conn: &mut Conn,
    reg: &crate::meta::Registry,
    doctype: &str,
    consumer: &str,
) -> Result<()> {
    let dt = reg.get(doctype)?;
    for name in super::condition::take_failed(conn, consumer, doctype).await? {
        log_create_for(site, conn, (reg, &dt), &name, None, consumer).await?;
    }
    Ok(())
}

/// Logs, for `consumer` only, a Create of the document `name` as it is now (nothing when it
/// is gone).
async fn log_create_for(
    site: &Site,
    conn: &mut Conn,
    (reg, dt): (&crate::meta::Registry, &crate::meta::DocType),
    name: &str,
    origin: Option<String>,
    consumer: &str,
) -> Result<()> {
    let Some(doc) = load_doc(conn, reg, dt, name).await? else {
        return Ok(());
    };
    let log = NewLog {
        update_type: "Create",
        ref_doctype: &dt.name,
        docname: name,
        data: Some(crate::service::diff::create_payload_json(&doc)),
        origin,
        for_consumer: Some(consumer.into()),
    };
    super::update_log::insert(site, conn, log).await
}

async fn write_snapshot(
    site: &Site,
    conn: &mut Conn,
    reg: &crate::meta::Registry,
    doctype: &str,
    consumer: &str,
) -> Result<()> {
    let dt = reg.get(doctype)?;
    let names = store::fetch_docs(
        conn,
        &format!(
            "SELECT name FROM {} ORDER BY creation, name",
            store::q(&dt.table())
        ),
        &[],
    )
    .await?;
    // Each document's origin: that of its latest log, when it came from another site (one
    // grouped pass over the log, which has no index by document).
    let origins: std::collections::HashMap<String, String> = store::fetch_docs(
        conn,
        r#"SELECT l.docname, l.origin FROM "tabEvent Update Log" l JOIN
             (SELECT MAX(name) AS last FROM "tabEvent Update Log" WHERE ref_doctype = $1 AND for_consumer IS NULL GROUP BY docname) x
             ON l.name = x.last WHERE l.origin IS NOT NULL AND l.origin <> ''"#,
        &[Param::text(doctype)],
    )
    .await?
    .iter()
    .map(|r| (text(r.get("docname")), text(r.get("origin"))))
    .collect();
    for n in names {
        let name = text(n.get("name"));
        let origin = origins.get(&name).cloned();
        if origin.as_deref() == Some(consumer) {
            continue;
        }
        log_create_for(site, conn, (reg, &dt), &name, origin, consumer).await?;
    }
    Ok(())
}

/// Approves every row of a consumer's subscription, as a System Manager would in the desk
/// (the demo and the benchmark wire sites with it).
pub async fn approve_all(site: &Site, consumer_url: &str) -> Result<()> {
    let admin = Caller::administrator();
    let ec = site.get_doc(&admin, "Event Consumer", consumer_url).await?;
    let mut rows = ec
        .get("consumer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in rows.iter_mut() {
        r["status"] = json!("Approved");
    }
    site.update_doc(
        &admin,
        "Event Consumer",
        consumer_url,
        store::doc_from(json!({ "consumer_doctypes": rows })),
        &WriteFlags::default(),
    )
    .await?;
    Ok(())
}

/// After an approval commit: sets the row statuses on the consumer's Event Producer.
pub async fn tell_consumer_statuses(site: &Site, consumer_url: &str) -> Result<()> {
    let reg = site.meta();
    let mut conn = site.store.conn().await?;
    let Some(doc) = load_doc(&mut conn, &reg, &*reg.get("Event Consumer")?, consumer_url).await?
    else {
        return Ok(());
    };
    drop(conn);
    let remote = super::remote_with_stored_keys(site, "Event Consumer", consumer_url).await?;
    let mut producer_doc = remote.get_doc("Event Producer", &site.config.url).await?;
    let rows = doc
        .get("consumer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(prows) = producer_doc
        .get_mut("producer_doctypes")
        .and_then(Value::as_array_mut)
    {
        for p in prows.iter_mut() {
            let local_type = text(p.get("ref_doctype"));
            // A mapped row asks for its mapping's remote type, which only the consumer knows.
            let remote_type = if p.get("has_mapping").and_then(Value::as_i64) == Some(1) {
                let mapping = text(p.get("mapping"));
                remote
                    .get_doc("Document Type Mapping", &mapping)
                    .await
                    .map(|m| text(m.get("remote_doctype")))
                    .unwrap_or_default()
            } else {
                local_type.clone()
            };
            // Two rows may make one local type (one through a mapping): match on the type
            // sent, and on the local type only when the mapping could not be read.
            let sent = if remote_type.is_empty() {
                &local_type
            } else {
                &remote_type
            };
            if let Some(r) = rows.iter().find(|r| text(r.get("ref_doctype")) == *sent) {
                p["status"] = r.get("status").cloned().unwrap_or(Value::Null);
            }
        }
    }
    let patch = json!({"producer_doctypes": producer_doc.get("producer_doctypes").cloned().unwrap_or(json!([])), "incoming_change": 1});
    remote
        .update_doc("Event Producer", &site.config.url, &patch)
        .await?;
    Ok(())
}

/// Name text of a JSON value (re-exported for the consumer side).
pub fn value_text(v: Option<&Value>) -> String {
    text(v).trim().to_string()
}
