//! Applying pulled update logs on the consumer: strictly in order, each batch in one
//! transaction with its sync logs and checkpoint; a failure is isolated in a savepoint.

use super::remote::RemoteSite;
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry};
use crate::service::documents::{load_doc, name_text, WriteFlags};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Doc, Param};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Connection};

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// One subscribed type of an Event Producer.
#[derive(Debug, Clone)]
pub struct SubscribedType {
    pub local_type: String,
    pub remote_type: String,
    pub use_same_name: bool,
    pub unsubscribed: bool,
    /// The Document Type Mapping that turns remote documents into local ones.
    pub mapping: Option<super::mapping::Mapping>,
}

/// What the consumer knows of one producer while applying.
#[derive(Debug, Clone)]
pub struct ProducerInfo {
    pub url: String,
    pub user: String,
    pub types: Vec<SubscribedType>,
}

impl ProducerInfo {
    /// Reads the Event Producer.
    pub async fn load(site: &Site, url: &str) -> Result<ProducerInfo> {
        let reg = site.meta();
        let mut conn = site.store.conn().await?;
        let doc = load_doc(&mut conn, &reg, &*reg.get("Event Producer")?, url)
            .await?
            .ok_or_else(|| Error::DoesNotExist(format!("Event Producer {url} not found")))?;
        let mut types = Vec::new();
        for r in doc
            .get("producer_doctypes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mapping = match super::consumer::mapping_of(&mut conn, r).await? {
                Some((name, _)) => Some(super::mapping::load(&mut conn, &name).await?),
                None => None,
            };
            types.push(SubscribedType {
                local_type: text(r.get("ref_doctype")),
                remote_type: mapping
                    .as_ref()
                    .map(|m| m.remote_doctype.clone())
                    .unwrap_or_else(|| text(r.get("ref_doctype"))),
                use_same_name: r.get("use_same_name").and_then(Value::as_i64) == Some(1),
                unsubscribed: r.get("unsubscribe").and_then(Value::as_i64) == Some(1),
                mapping,
            });
        }
        Ok(ProducerInfo {
            url: url.into(),
            user: text(doc.get("user")),
            types,
        })
    }

    /// The remote types to ask for.
    pub fn remote_types(&self) -> Vec<String> {
        self.types
            .iter()
            .filter(|t| !t.unsubscribed)
            .map(|t| t.remote_type.clone())
            .collect()
    }

    fn for_remote(&self, remote_type: &str) -> Option<&SubscribedType> {
        self.types
            .iter()
            .find(|t| t.remote_type == remote_type && !t.unsubscribed)
    }

    /// The subscription of a type kept here under local names, if it is one.
    fn renamed(&self, local_type: &str) -> Option<&SubscribedType> {
        self.types
            .iter()
            .find(|t| t.local_type == local_type && !t.use_same_name && !t.unsubscribed)
    }

    fn for_local(&self, local_type: &str) -> Option<&SubscribedType> {
        self.types
            .iter()
            .find(|t| t.local_type == local_type && !t.unsubscribed)
    }
}

/// One incoming update.
#[derive(Debug, Clone)]
struct Incoming {
    update_type: String,
    remote_type: String,
    docname: String,
    data: Value,
    raw_data: Value,
    seq: Option<i64>,
    origin: String,
}

impl Incoming {
    fn from_log(log: &Value) -> Incoming {
        let raw = log.get("data").cloned().unwrap_or(Value::Null);
        let data = match &raw {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        Incoming {
            update_type: text(log.get("update_type")),
            remote_type: text(log.get("ref_doctype")),
            docname: text(log.get("docname")),
            data,
            raw_data: raw,
            seq: log.get("seq").and_then(Value::as_i64),
            origin: text(log.get("origin")),
        }
    }
}

/// Applies a page of logs and moves the checkpoint to `cursor`, all in one transaction.
pub async fn apply_batch(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Value],
    cursor: Option<i64>,
) -> Result<usize> {
    // Missing dependencies are fetched before the write transaction opens, in parallel.
    let reg = site.meta();
    let fetched = prefetch_dependencies(site, &reg, info, remote, logs).await;
    if let Some(n) = apply_page(site, info, remote, logs, cursor, fetched, false).await? {
        return Ok(n);
    }
    // An update failed: apply the page again, isolating each update in a savepoint.
    Ok(
        apply_page(site, info, remote, logs, cursor, Default::default(), true)
            .await?
            .unwrap_or(0),
    )
}

/// One attempt at a page; None when an optimistic attempt hit a failure and rolled back.
async fn apply_page(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Value],
    cursor: Option<i64>,
    fetched: std::collections::HashMap<(String, String), Value>,
    careful: bool,
) -> Result<Option<usize>> {
    let reg = site.meta();
    let caller = site.caller_for(&info.user).await?;
    let mut tx = site.store.begin().await?;
    // Read the checkpoint under the write lock: another process may have applied this page.
    let (stored_seq, _) = {
        let rows = store::fetch_docs(
            &mut tx,
            r#"SELECT last_seq, last_update FROM "tabEvent Producer Last Update" WHERE name = $1"#,
            &[Param::Text(Some(info.url.clone()))],
        )
        .await?;
        let r = rows
            .first()
            .ok_or_else(|| Error::DoesNotExist(format!("no checkpoint for {}", info.url)))?;
        (
            r.get("last_seq").and_then(Value::as_i64),
            text(r.get("last_update")),
        )
    };
    let mut batch = BatchState::load(&mut tx, &info.url).await?;
    batch.known.fetched = fetched;
    batch.careful = careful;
    batch.known.absent = absent_at_start(&mut tx, &reg, info, logs).await?;
    let mut applied = 0;
    let mut last_creation = None;
    let mut wrote_logs = false;
    for log in logs {
        let inc = Incoming::from_log(log);
        if let (Some(stored), Some(seq)) = (stored_seq, inc.seq) {
            if seq <= stored {
                continue;
            }
        }
        last_creation = Some(text(log.get("creation")));
        if inc.origin == site.config.url {
            continue;
        }
        let Some(sub) = info.for_remote(&inc.remote_type) else {
            continue;
        };
        applied += 1;
        wrote_logs |= apply_and_log(
            site, &mut tx, &reg, info, sub, &caller, remote, &inc, None, &mut batch,
        )
        .await?;
        if batch.dirty {
            tx.rollback().await?;
            return Ok(None);
        }
    }
    batch.known.flush_sync_logs(&mut tx).await?;
    let new_seq = match (stored_seq, cursor) {
        (Some(s), Some(c)) => Some(s.max(c)),
        (s, _) => s,
    };
    let mut sets = vec![];
    let mut params = vec![];
    if let Some(s) = new_seq {
        params.push(Param::Int(Some(s)));
        sets.push(format!("last_seq = ${}", params.len()));
    }
    if let Some(c) = last_creation.filter(|c| !c.is_empty()) {
        params.push(Param::Text(Some(c)));
        sets.push(format!("last_update = ${}", params.len()));
    }
    if !sets.is_empty() {
        params.push(Param::Text(Some(info.url.clone())));
        store::execute(
            &mut tx,
            &format!(
                r#"UPDATE "tabEvent Producer Last Update" SET {} WHERE name = ${}"#,
                sets.join(", "),
                params.len()
            ),
            &params,
        )
        .await?;
    }
    tx.commit().await?;
    if wrote_logs {
        if let Some(me) = site.arc() {
            super::producer::notify_consumers(me);
        }
    }
    Ok(Some(applied))
}

/// Applies one update in a savepoint and writes (or, for `retry_of`, updates) its sync log.
/// Returns true when the change wrote update logs of its own (re-published).
#[allow(clippy::too_many_arguments)]
async fn apply_and_log(
    site: &Site,
    tx: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    inc: &Incoming,
    retry_of: Option<&Doc>,
    batch: &mut BatchState,
) -> Result<bool> {
    let key = (sub.local_type.clone(), inc.docname.clone());
    let blocker = if retry_of.is_none() {
        batch.failed.get(&key).cloned()
    } else {
        None
    };
    let outcome = match blocker {
        Some(b) => Err(Error::Validation(format!("waiting on {b}"))),
        None => {
            let known = &mut batch.known;
            let mut attempt = async |conn: &mut AnyConnection| {
                apply_one(site, conn, reg, info, sub, caller, remote, inc, known).await
            };
            if batch.careful {
                let mut sp = tx.begin().await?;
                match attempt(&mut sp).await {
                    Ok(local) => {
                        sp.commit().await?;
                        Ok(local)
                    }
                    Err(e) => {
                        sp.rollback().await?;
                        Err(e)
                    }
                }
            } else {
                // Optimistic: no savepoint. A failure leaves the transaction dirty, so the
                // page is rolled back and applied again with one savepoint per update.
                match attempt(tx).await {
                    Ok(local) => Ok(local),
                    Err(_) => {
                        batch.dirty = true;
                        return Ok(false);
                    }
                }
            }
        }
    };
    let wrote = outcome.is_ok() && batch.streamed.contains(&sub.local_type);
    let failed = outcome.is_err();
    let name = write_sync_log(
        site,
        tx,
        info,
        sub,
        inc,
        outcome,
        retry_of,
        &mut batch.known,
    )
    .await?;
    if failed && !batch.failed.contains_key(&key) {
        batch.failed.insert(key, name);
    }
    Ok(wrote)
}

/// What a batch knows without asking the database for every log.
#[derive(Debug, Default)]
pub struct BatchState {
    /// Each update in its own savepoint (after an optimistic attempt failed, and for retries).
    careful: bool,
    /// An optimistic attempt failed: the transaction must be rolled back.
    dirty: bool,
    /// Unresolved Failed sync logs by (local type, producer's name).
    failed: std::collections::HashMap<(String, String), String>,
    /// Local types with consumers of their own (applying them writes update logs).
    streamed: std::collections::HashSet<String>,
    /// Documents known to exist here before this batch touched them (dependency checks).
    known: Known,
}

/// What a batch knows about linked documents.
#[derive(Debug, Default)]
pub struct Known {
    /// (type, name) of documents that existed here before the batch touched them.
    present: std::collections::HashSet<(String, String)>,
    /// Missing documents already fetched from the producer (before the transaction).
    fetched: std::collections::HashMap<(String, String), Value>,
    /// Field names of the producer's mapped types (None: the producer would not say).
    remote_fields: std::collections::HashMap<String, Option<std::collections::HashSet<String>>>,
    /// (local type, name) of same-name Creates of the page whose document was not here when
    /// the page began (spares a lookup each).
    absent: std::collections::HashSet<(String, String)>,
    /// New sync log rows, written together before the checkpoint moves.
    sync_logs: Vec<Vec<Param>>,
    /// (local type, producer name) of documents synced in this batch.
    synced: std::collections::HashSet<(String, String)>,
}

const SYNC_LOG_COLUMNS: &str = "name, owner, creation, modified, modified_by, docstatus, idx, update_type, ref_doctype, status, event_producer, producer_doc, docname, use_same_name, data, error, seq, retries, next_retry";

impl Known {
    /// Writes the buffered sync logs, many rows per statement.
    async fn flush_sync_logs(&mut self, conn: &mut AnyConnection) -> Result<()> {
        let rows = std::mem::take(&mut self.sync_logs);
        for chunk in rows.chunks(200) {
            let mut params = Vec::with_capacity(chunk.len() * 15);
            let mut values = Vec::with_capacity(chunk.len());
            for row in chunk {
                let base = params.len();
                let p = |i: usize| format!("${}", base + i);
                values.push(format!(
                    "({}, {}, {}, {}, {}, 0, 0, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 0, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(3),
                    p(2),
                    p(4),
                    p(5),
                    p(6),
                    p(7),
                    p(8),
                    p(9),
                    p(10),
                    p(11),
                    p(12),
                    p(13),
                    p(14)
                ));
                params.extend(row.iter().cloned());
            }
            store::execute(
                conn,
                &format!(
                    r#"INSERT INTO "tabEvent Sync Log" ({SYNC_LOG_COLUMNS}) VALUES {}"#,
                    values.join(", ")
                ),
                &params,
            )
            .await?;
        }
        Ok(())
    }
}

impl BatchState {
    async fn load(conn: &mut AnyConnection, producer: &str) -> Result<BatchState> {
        let mut st = BatchState::default();
        let failed = store::fetch_docs(
            conn,
            r#"SELECT name, ref_doctype, producer_doc FROM "tabEvent Sync Log" WHERE event_producer = $1 AND status = 'Failed' ORDER BY seq DESC, creation DESC"#,
            &[Param::Text(Some(producer.into()))],
        )
        .await?;
        for f in failed {
            st.failed.insert(
                (text(f.get("ref_doctype")), text(f.get("producer_doc"))),
                text(f.get("name")),
            );
        }
        let streamed = store::fetch_docs(
            conn,
            r#"SELECT DISTINCT ref_doctype FROM "tabEvent Consumer Document Type""#,
            &[],
        )
        .await?;
        st.streamed = streamed
            .iter()
            .map(|r| text(r.get("ref_doctype")))
            .collect();
        Ok(st)
    }
}

fn retry_delay(site: &Site, retries: i64) -> f64 {
    (site.config.retry_base_seconds * 2f64.powi(retries.clamp(0, 30) as i32))
        .min(site.config.retry_max_seconds)
}

/// Records an attempt. A retry updates its row at once; a new row is buffered in `known` and
/// written with the page (see [`Known::flush_sync_logs`]).
#[allow(clippy::too_many_arguments)]
async fn write_sync_log(
    site: &Site,
    conn: &mut AnyConnection,
    info: &ProducerInfo,
    sub: &SubscribedType,
    inc: &Incoming,
    outcome: Result<String>,
    retry_of: Option<&Doc>,
    known: &mut Known,
) -> Result<String> {
    let now = site.clock.now();
    let (status, local, error) = match &outcome {
        Ok(local) => ("Synced", local.clone(), None),
        Err(e) => ("Failed", String::new(), Some(e.message())),
    };
    let waiting = error
        .as_deref()
        .is_some_and(|e| e.starts_with("waiting on "));
    let retries = retry_of
        .and_then(|r| r.get("retries"))
        .and_then(Value::as_i64)
        .map(|r| r + 1)
        .unwrap_or(0);
    let next_retry = if status == "Failed" && !waiting && retries < site.config.retry_max_tries {
        Some(
            (site.clock.now_naive()
                + chrono::Duration::milliseconds((retry_delay(site, retries) * 1000.0) as i64))
            .format(crate::time::DATETIME_FORMAT)
            .to_string(),
        )
    } else {
        None
    };
    if let Some(prev) = retry_of {
        store::execute(
            conn,
            r#"UPDATE "tabEvent Sync Log" SET status = $1, error = $2, retries = $3, next_retry = $4, docname = $5, modified = $6 WHERE name = $7"#,
            &[Param::Text(Some(status.into())), Param::Text(error), Param::Int(Some(retries)), Param::Text(next_retry), Param::Text(Some(local).filter(|l| !l.is_empty())), Param::Text(Some(now)), Param::Text(Some(text(prev.get("name"))))],
        )
        .await?;
        return Ok(text(prev.get("name")));
    }
    let name = crate::crypto::random_token(10);
    let data = match &inc.raw_data {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    if status == "Synced" {
        known
            .synced
            .insert((sub.local_type.clone(), inc.docname.clone()));
    }
    known.sync_logs.push(vec![
        Param::Text(Some(name.clone())),
        Param::Text(Some(info.user.clone())),
        Param::Text(Some(now)),
        Param::Text(Some(inc.update_type.clone())),
        Param::Text(Some(sub.local_type.clone())),
        Param::Text(Some(status.into())),
        Param::Text(Some(info.url.clone())),
        Param::Text(Some(inc.docname.clone())),
        Param::Text(Some(local).filter(|l| !l.is_empty())),
        Param::Int(Some(sub.use_same_name as i64)),
        Param::Text(data),
        Param::Text(error),
        Param::Int(inc.seq),
        Param::Text(next_retry),
    ]);
    Ok(name)
}

fn strip_dunder(v: &Value) -> Doc {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.retain(|k, _| !k.starts_with("__"));
    for (_, val) in m.iter_mut() {
        if let Value::Array(rows) = val {
            for r in rows.iter_mut() {
                if let Value::Object(o) = r {
                    o.retain(|k, _| !k.starts_with("__"));
                }
            }
        }
    }
    m
}

/// Finds the local copy of a producer document: by name, or by remote_docname + remote_site_name.
async fn find_local(
    conn: &mut AnyConnection,
    dt: &DocType,
    info: &ProducerInfo,
    sub: &SubscribedType,
    docname: &str,
) -> Result<Option<String>> {
    if sub.use_same_name {
        return Ok(store::row_exists(conn, dt, &Value::String(docname.into()))
            .await?
            .then(|| docname.to_string()));
    }
    if dt.field("remote_docname").is_none() {
        return Ok(None);
    }
    let rows = store::fetch_docs(
        conn,
        &format!(
            r#"SELECT name FROM {} WHERE remote_docname = $1 AND remote_site_name = $2 LIMIT 1"#,
            store::q(&dt.table())
        ),
        &[
            Param::Text(Some(docname.into())),
            Param::Text(Some(info.url.clone())),
        ],
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| name_text(r.get("name").unwrap_or(&Value::Null))))
}

async fn synced_from_producer(
    conn: &mut AnyConnection,
    info: &ProducerInfo,
    sub: &SubscribedType,
    docname: &str,
) -> Result<bool> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT 1 AS hit FROM "tabEvent Sync Log" WHERE event_producer = $1 AND ref_doctype = $2 AND producer_doc = $3 AND status = 'Synced' LIMIT 1"#,
        &[Param::Text(Some(info.url.clone())), Param::Text(Some(sub.local_type.clone())), Param::Text(Some(docname.into()))],
    )
    .await?;
    Ok(!rows.is_empty())
}

#[allow(clippy::too_many_arguments)]
async fn apply_one(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    inc: &Incoming,
    known: &mut Known,
) -> Result<String> {
    let dt = reg.get(&sub.local_type)?;
    let origin = if inc.origin.is_empty() {
        info.url.clone()
    } else {
        inc.origin.clone()
    };
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: sub.use_same_name,
        keep_timestamps: false,
        ignore_links: false,
        origin: Some(origin),
    };
    match inc.update_type.as_str() {
        "Create" => {
            let doc = to_local(
                site,
                conn,
                reg,
                info,
                sub,
                caller,
                remote,
                known,
                &strip_dunder(&inc.data),
            )
            .await?;
            upsert(
                site,
                conn,
                reg,
                &dt,
                info,
                sub,
                caller,
                remote,
                known,
                &flags,
                &inc.docname,
                doc,
            )
            .await
        }
        "Update" => {
            let old_name = inc
                .data
                .get("old_name")
                .map(|v| text(Some(v)))
                .filter(|s| !s.is_empty());
            let lookup = old_name.clone().unwrap_or_else(|| inc.docname.clone());
            let Some(local) = find_local(conn, &dt, info, sub, &lookup).await? else {
                if old_name.is_some()
                    && find_local(conn, &dt, info, sub, &inc.docname)
                        .await?
                        .is_some()
                {
                    return Ok(inc.docname.clone());
                }
                let whole = remote.get_doc(&inc.remote_type, &inc.docname).await?;
                let doc = to_local(
                    site,
                    conn,
                    reg,
                    info,
                    sub,
                    caller,
                    remote,
                    known,
                    &strip_dunder(&whole),
                )
                .await?;
                return upsert(
                    site,
                    conn,
                    reg,
                    &dt,
                    info,
                    sub,
                    caller,
                    remote,
                    known,
                    &flags,
                    &inc.docname,
                    doc,
                )
                .await;
            };
            let mut local = local;
            if let Some(old) = old_name {
                if sub.use_same_name {
                    known.present.remove(&(dt.name.clone(), old.clone()));
                    known.absent.remove(&(dt.name.clone(), inc.docname.clone()));
                    site.rename_in(conn, reg, caller, &dt, &old, &inc.docname, &flags)
                        .await?;
                    local = inc.docname.clone();
                } else {
                    let mut p = Doc::new();
                    p.insert("remote_docname".into(), json!(inc.docname));
                    store::update_columns(conn, &dt, &Value::String(local.clone()), &p).await?;
                }
            }
            let current = load_doc(conn, reg, &dt, &local)
                .await?
                .ok_or_else(|| Error::DoesNotExist(format!("{} {local} vanished", dt.name)))?;
            let mut diff = match &sub.mapping {
                None => inc.data.clone(),
                Some(m) => m.map_diff(reg, &inc.data)?,
            };
            // Only what the producer sent carries producer names; the rest is local already.
            let incoming = incoming_part(reg, &dt, &current, &diff);
            sync_dependencies(site, conn, reg, info, caller, remote, known, &dt, &incoming).await?;
            let names = local_names(conn, reg, info, &dt, &incoming).await?;
            rename_links_in_diff(reg, &dt, &mut diff, &names);
            let mut patch = patch_from_diff(&dt, &current, &diff);
            if let Some(m) = &sub.mapping {
                if m.document_rows().any(|r| m.diff_touches(r, &inc.data)) {
                    // The rows' filters read fields the diff does not carry.
                    let whole =
                        strip_dunder(&remote.get_doc(&inc.remote_type, &inc.docname).await?);
                    let mut links = Doc::new();
                    resolve_document_rows(
                        site, conn, reg, info, caller, remote, known, m, &whole, &mut links,
                    )
                    .await?;
                    patch.extend(links);
                }
            }
            if !patch.is_empty() {
                // Every link target exists now (the producer validated the rest).
                let f = WriteFlags {
                    ignore_links: true,
                    ..flags.clone()
                };
                site.update_loaded(conn, reg, caller, &dt, current, patch, &f)
                    .await?;
            }
            Ok(local)
        }
        "Delete" => match find_local(conn, &dt, info, sub, &inc.docname).await? {
            Some(local) => {
                let d = load_doc(conn, reg, &dt, &local).await?.unwrap_or_default();
                if d.get("docstatus").and_then(Value::as_i64) == Some(1) {
                    let mut p = Doc::new();
                    p.insert("docstatus".into(), json!(2));
                    site.update_in(conn, reg, caller, &dt, &local, p, &flags)
                        .await?;
                }
                site.delete_in(conn, reg, caller, &dt, &local, &flags)
                    .await?;
                known.present.remove(&(dt.name.clone(), local.clone()));
                Ok(local)
            }
            None => Ok(inc.docname.clone()),
        },
        other => Err(Error::Validation(format!("unknown update_type {other:?}"))),
    }
}

/// The local form of a whole producer document: mapped when the row has a mapping.
#[allow(clippy::too_many_arguments)]
async fn to_local(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    known: &mut Known,
    remote_doc: &Doc,
) -> Result<Doc> {
    let Some(m) = &sub.mapping else {
        return Ok(remote_doc.clone());
    };
    let fields = remote_fields(remote, known, &m.remote_doctype).await;
    let mut local = m.map_doc(reg, remote_doc, fields.as_ref())?;
    resolve_document_rows(
        site, conn, reg, info, caller, remote, known, m, remote_doc, &mut local,
    )
    .await?;
    Ok(local)
}

async fn remote_fields(
    remote: &RemoteSite,
    known: &mut Known,
    doctype: &str,
) -> Option<std::collections::HashSet<String>> {
    if let Some(f) = known.remote_fields.get(doctype) {
        return f.clone();
    }
    let f = remote.field_names(doctype).await;
    known.remote_fields.insert(doctype.to_string(), f.clone());
    f
}

/// Fills the Document rows of a mapping: each finds exactly one producer document with its
/// filters, maps it with the row's mapping, inserts it here if it is not here yet and links it.
#[allow(clippy::too_many_arguments)]
fn resolve_document_rows<'a>(
    site: &'a Site,
    conn: &'a mut AnyConnection,
    reg: &'a Registry,
    info: &'a ProducerInfo,
    caller: &'a Caller,
    remote: &'a RemoteSite,
    known: &'a mut Known,
    m: &'a super::mapping::Mapping,
    remote_doc: &'a Doc,
    local: &'a mut Doc,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    use super::mapping::RowKind;
    Box::pin(async move {
        let dt = reg.get(&m.local_doctype)?;
        for row in m.document_rows() {
            let RowKind::Document {
                mapping: inner,
                filters,
            } = &row.kind
            else {
                continue;
            };
            let at = row.label(m);
            let fields = remote_fields(remote, known, &m.remote_doctype).await;
            let mut wanted = serde_json::Map::new();
            for (k, v) in filters {
                let value = match v.as_str() {
                    Some(s) if s.starts_with("eval:") => {
                        let expr = &s["eval:".len()..];
                        let now = site.clock.now();
                        crate::service::sandbox_db::run_script(|| {
                            crate::sandbox::eval_expression(
                                expr,
                                &[],
                                &crate::service::sandbox_db::SiteDb::new(site),
                                &now,
                                &crate::sandbox::Limits::default(),
                            )
                        })
                        .map_err(|e| Error::Validation(format!("{at}: filter {k} ({s}): {e}")))?
                    }
                    Some(s)
                        if remote_doc.contains_key(s)
                            || fields.as_ref().is_some_and(|f| f.contains(s)) =>
                    {
                        remote_doc.get(s).cloned().unwrap_or(Value::Null)
                    }
                    _ => v.clone(),
                };
                wanted.insert(k.clone(), value);
            }
            let wanted = Value::Object(wanted);
            let names = remote
                .find_names(&inner.remote_doctype, &wanted, 2)
                .await
                .map_err(|e| Error::Validation(format!("{at}: {}", e.message())))?;
            if names.len() != 1 {
                return Err(Error::Validation(format!(
                    "{at}: {} {} documents on {} match the filters {wanted}; exactly one must",
                    if names.is_empty() { "no" } else { "several" },
                    inner.remote_doctype,
                    info.url
                )));
            }
            let source_name = names[0].clone();
            let source = strip_dunder(&remote.get_doc(&inner.remote_doctype, &source_name).await?);
            let inner_fields = remote_fields(remote, known, &inner.remote_doctype).await;
            let mut made = inner.map_doc(reg, &source, inner_fields.as_ref())?;
            resolve_document_rows(
                site, conn, reg, info, caller, remote, known, inner, &source, &mut made,
            )
            .await?;
            let local_name =
                made_locally(site, conn, reg, info, caller, inner, &source_name, made).await?;
            local.insert(row.local.clone(), Value::String(local_name));
            if let Some(df) = dt.field(&row.local) {
                if df.fieldtype == crate::meta::FieldType::DynamicLink {
                    local.insert(
                        df.options.clone(),
                        Value::String(inner.local_doctype.clone()),
                    );
                }
            }
        }
        Ok(())
    })
}

/// The local copy of a document made by a Document row: found by its producer name, or
/// inserted (with `remote_docname` when the type has it, else under the producer's name).
#[allow(clippy::too_many_arguments)]
async fn made_locally(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    caller: &Caller,
    m: &super::mapping::Mapping,
    source_name: &str,
    mut doc: Doc,
) -> Result<String> {
    let dt = reg.get(&m.local_doctype)?;
    let by_remote_name = dt.field("remote_docname").is_some();
    let sub = SubscribedType {
        local_type: m.local_doctype.clone(),
        remote_type: m.remote_doctype.clone(),
        use_same_name: !by_remote_name,
        unsubscribed: false,
        mapping: None,
    };
    if let Some(found) = find_local(conn, &dt, info, &sub, source_name).await? {
        return Ok(found);
    }
    doc.remove("name");
    if by_remote_name {
        doc.insert("remote_docname".into(), json!(source_name));
        doc.insert("remote_site_name".into(), json!(info.url));
    } else {
        doc.insert("name".into(), json!(source_name));
    }
    let flags = WriteFlags {
        ignore_permissions: true,
        set_read_only: true,
        keep_name: !by_remote_name,
        keep_timestamps: false,
        ignore_links: false,
        origin: Some(info.url.clone()),
    };
    insert_as_on_producer(site, conn, reg, caller, &dt, doc, &flags).await
}

/// Inserts a producer document, or updates the local copy to match it when it was synced before.
#[allow(clippy::too_many_arguments)]
async fn upsert(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    dt: &DocType,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    known: &mut Known,
    flags: &WriteFlags,
    docname: &str,
    mut doc: Doc,
) -> Result<String> {
    sync_dependencies(site, conn, reg, info, caller, remote, known, dt, &doc).await?;
    let names = local_names(conn, reg, info, dt, &doc).await?;
    rename_links(reg, dt, &mut doc, &names);
    // Every link target exists now (the producer validated the rest).
    let flags = &WriteFlags {
        ignore_links: true,
        ..flags.clone()
    };
    let key = (dt.name.clone(), docname.to_string());
    let here = if sub.use_same_name && known.absent.contains(&key) {
        None
    } else {
        find_local(conn, dt, info, sub, docname).await?
    };
    if let Some(local) = here {
        if sub.use_same_name
            && !known
                .synced
                .contains(&(sub.local_type.clone(), docname.to_string()))
            && !synced_from_producer(conn, info, sub, docname).await?
        {
            return Err(Error::DuplicateEntry(format!(
                "name clash: a local {} named {docname} exists that did not come from {}; rename or delete it, then resync",
                dt.name, info.url
            )));
        }
        for k in [
            "name",
            "owner",
            "creation",
            "modified",
            "modified_by",
            "doctype",
            "idx",
        ] {
            doc.remove(k);
        }
        let mut f = flags.clone();
        f.keep_timestamps = false;
        site.update_in(conn, reg, caller, dt, &local, doc, &f)
            .await?;
        return Ok(local);
    }
    if !sub.use_same_name {
        doc.remove("name");
        doc.insert("remote_docname".into(), json!(docname));
        doc.insert("remote_site_name".into(), json!(info.url));
    }
    known.absent.remove(&key);
    insert_as_on_producer(site, conn, reg, caller, dt, doc, flags).await
}

/// Inserts a document as the producer has it, owned and stamped by this site. A new document
/// cannot start cancelled, so a cancelled one is inserted submitted and then cancelled.
/// Returns its local name.
async fn insert_as_on_producer(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    caller: &Caller,
    dt: &DocType,
    mut doc: Doc,
    flags: &WriteFlags,
) -> Result<String> {
    for k in ["owner", "creation", "modified", "modified_by", "doctype"] {
        doc.remove(k);
    }
    let cancelled = doc.get("docstatus").and_then(Value::as_i64) == Some(2);
    if cancelled {
        doc.insert("docstatus".into(), json!(1));
    }
    let (saved, _) = site.insert_in(conn, reg, caller, dt, doc, flags).await?;
    let local = name_text(&saved["name"]);
    if cancelled {
        let mut p = Doc::new();
        p.insert("docstatus".into(), json!(2));
        site.update_loaded(conn, reg, caller, dt, saved, p, flags)
            .await?;
    }
    Ok(local)
}

/// The part of an update that comes from the producer: changed fields and changed or added
/// child rows (a Dynamic Link's type taken from the current document when it did not change).
fn incoming_part(reg: &Registry, dt: &DocType, current: &Doc, diff: &Value) -> Doc {
    let mut out = diff
        .get("changed")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for f in &dt.fields {
        if f.fieldtype == crate::meta::FieldType::DynamicLink
            && out.contains_key(&f.fieldname)
            && !out.contains_key(&f.options)
        {
            if let Some(t) = current.get(&f.options) {
                out.insert(f.options.clone(), t.clone());
            }
        }
    }
    for tf in dt.table_fields() {
        let rows: Vec<Value> = ["added", "row_changed"]
            .iter()
            .filter_map(|k| diff.get(k)?.get(&tf.fieldname)?.as_array())
            .flatten()
            .cloned()
            .collect();
        if !rows.is_empty() && reg.get(&tf.options).is_ok() {
            out.insert(tf.fieldname.clone(), Value::Array(rows));
        }
    }
    out
}

type LocalNames = std::collections::HashMap<(String, String), String>;

/// For links to types this consumer keeps under local names (`use_same_name` off): the
/// producer's name of each linked document and its local name.
async fn local_names(
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    dt: &DocType,
    doc: &Doc,
) -> Result<LocalNames> {
    let mut names = LocalNames::new();
    if info.types.iter().all(|t| t.use_same_name || t.unsubscribed) {
        return Ok(names);
    }
    for (_, target, value) in crate::service::documents::links_of(reg, dt, doc).unwrap_or_default()
    {
        let Some(sub) = info.renamed(&target) else {
            continue;
        };
        let key = (target.clone(), value.clone());
        if names.contains_key(&key) {
            continue;
        }
        let tdt = reg.get(&target)?;
        if let Some(local) = find_local(conn, &tdt, info, sub, &value).await? {
            names.insert(key, local);
        }
    }
    Ok(names)
}

/// Replaces producer names by local names in a document's links, child rows included.
fn rename_links(reg: &Registry, dt: &DocType, doc: &mut Doc, names: &LocalNames) {
    if names.is_empty() {
        return;
    }
    for f in &dt.fields {
        match f.fieldtype {
            crate::meta::FieldType::Link | crate::meta::FieldType::DynamicLink => {
                let target = if f.fieldtype == crate::meta::FieldType::Link {
                    f.options.clone()
                } else {
                    text(doc.get(&f.options))
                };
                let value = text(doc.get(&f.fieldname));
                if let Some(local) = names.get(&(target, value)) {
                    doc.insert(f.fieldname.clone(), Value::String(local.clone()));
                }
            }
            crate::meta::FieldType::Table | crate::meta::FieldType::TableMultiSelect => {
                let Ok(child) = reg.get(&f.options) else {
                    continue;
                };
                if let Some(rows) = doc.get_mut(&f.fieldname).and_then(Value::as_array_mut) {
                    for r in rows.iter_mut() {
                        if let Some(r) = r.as_object_mut() {
                            rename_links(reg, &child, r, names);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// [`rename_links`] on the parts of a Frappe diff that carry producer values.
fn rename_links_in_diff(reg: &Registry, dt: &DocType, diff: &mut Value, names: &LocalNames) {
    if names.is_empty() {
        return;
    }
    if let Some(changed) = diff.get_mut("changed").and_then(Value::as_object_mut) {
        rename_links(reg, dt, changed, names);
    }
    for part in ["added", "row_changed"] {
        let Some(tables) = diff.get_mut(part).and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, rows) in tables.iter_mut() {
            let Some(child) = dt.field(field).and_then(|f| reg.get(&f.options).ok()) else {
                continue;
            };
            for r in rows.as_array_mut().into_iter().flatten() {
                if let Some(r) = r.as_object_mut() {
                    rename_links(reg, &child, r, names);
                }
            }
        }
    }
}

/// Turns Frappe's diff into a patch of the local document (child tables given whole).
fn patch_from_diff(dt: &DocType, current: &Doc, diff: &Value) -> Doc {
    let mut patch = Doc::new();
    if let Some(changed) = diff.get("changed").and_then(Value::as_object) {
        for (k, v) in changed {
            if k != "name" {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    for tf in dt.table_fields() {
        let f = &tf.fieldname;
        let part = |key: &str| {
            diff.get(key)
                .and_then(|p| p.get(f))
                .and_then(Value::as_array)
                .cloned()
        };
        let (added, removed, changed) = (part("added"), part("removed"), part("row_changed"));
        if added.is_none() && removed.is_none() && changed.is_none() {
            continue;
        }
        let mut rows: Vec<Value> = current
            .get(f)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let name_of = |r: &Value| r.get("name").map(name_text).unwrap_or_default();
        if let Some(removed) = removed {
            let gone: Vec<String> = removed.iter().map(|v| text(Some(v))).collect();
            rows.retain(|r| !gone.contains(&name_of(r)));
        }
        for c in changed
            .into_iter()
            .flatten()
            .chain(added.into_iter().flatten())
        {
            let c = Value::Object(strip_dunder(&c));
            match rows.iter_mut().find(|r| name_of(r) == name_of(&c)) {
                Some(r) => {
                    if let (Some(r), Some(c)) = (r.as_object_mut(), c.as_object()) {
                        for (k, v) in c {
                            r.insert(k.clone(), v.clone());
                        }
                    }
                }
                None => rows.push(c),
            }
        }
        rows.sort_by_key(|r| r.get("idx").and_then(Value::as_i64).unwrap_or(i64::MAX));
        patch.insert(f.clone(), Value::Array(rows));
    }
    patch
}

/// Retries a Failed sync log (and then those waiting on it); returns its new status.
pub async fn resync(site: &Site, sync_log: &str) -> Result<String> {
    let reg = site.meta();
    let mut conn = site.store.conn().await?;
    let entry = load_doc(&mut conn, &reg, &*reg.get("Event Sync Log")?, sync_log)
        .await?
        .ok_or_else(|| Error::DoesNotExist(format!("Event Sync Log {sync_log} not found")))?;
    drop(conn);
    if text(entry.get("status")) != "Failed" {
        return Ok(text(entry.get("status")));
    }
    let producer = text(entry.get("event_producer"));
    let info = ProducerInfo::load(site, &producer).await?;
    let remote = super::consumer::remote_for(site, &producer).await?;
    let status = retry_entry(site, &reg, &info, &remote, &entry).await?;
    if status == "Synced" {
        let mut conn = site.store.conn().await?;
        let waiting = store::fetch_docs(
            &mut conn,
            r#"SELECT name FROM "tabEvent Sync Log" WHERE status = 'Failed' AND error = $1 ORDER BY seq, creation"#,
            &[Param::Text(Some(format!("waiting on {sync_log}")))],
        )
        .await?;
        drop(conn);
        for w in waiting {
            let mut conn = site.store.conn().await?;
            let Some(e) = load_doc(
                &mut conn,
                &reg,
                &*reg.get("Event Sync Log")?,
                &text(w.get("name")),
            )
            .await?
            else {
                continue;
            };
            drop(conn);
            if retry_entry(site, &reg, &info, &remote, &e).await? != "Synced" {
                break;
            }
        }
    }
    Ok(status)
}

async fn retry_entry(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    entry: &Doc,
) -> Result<String> {
    let local_type = text(entry.get("ref_doctype"));
    let sub = info.for_local(&local_type).cloned().ok_or_else(|| {
        Error::Validation(format!(
            "{local_type} is no longer subscribed from {}",
            info.url
        ))
    })?;
    let raw = entry.get("data").cloned().unwrap_or(Value::Null);
    let inc = Incoming::from_log(&json!({
        "update_type": entry.get("update_type"), "ref_doctype": sub.remote_type, "docname": entry.get("producer_doc"),
        "data": raw, "seq": entry.get("seq"), "origin": info.url,
    }));
    let caller = site.caller_for(&info.user).await?;
    let mut tx = site.store.begin().await?;
    let mut batch = BatchState::load(&mut tx, &info.url).await?;
    batch.careful = true;
    let wrote = apply_and_log(
        site,
        &mut tx,
        reg,
        info,
        &sub,
        &caller,
        remote,
        &inc,
        Some(entry),
        &mut batch,
    )
    .await?;
    batch.known.flush_sync_logs(&mut tx).await?;
    let status = store::fetch_docs(
        &mut tx,
        r#"SELECT status FROM "tabEvent Sync Log" WHERE name = $1"#,
        &[Param::Text(Some(text(entry.get("name"))))],
    )
    .await?;
    tx.commit().await?;
    if wrote {
        if let Some(me) = site.arc() {
            super::producer::notify_consumers(me);
        }
    }
    Ok(status
        .first()
        .map(|r| text(r.get("status")))
        .unwrap_or_default())
}

/// Retries Failed entries whose `next_retry` has come.
pub async fn retry_due(site: &Site) -> Result<()> {
    let mut conn = site.store.conn().await?;
    let due = store::fetch_docs(
        &mut conn,
        r#"SELECT name FROM "tabEvent Sync Log" WHERE status = 'Failed' AND next_retry IS NOT NULL AND next_retry <= $1 ORDER BY seq LIMIT 100"#,
        &[Param::Text(Some(site.clock.now()))],
    )
    .await?;
    drop(conn);
    for d in due {
        let name = text(d.get("name"));
        if let Err(e) = resync(site, &name).await {
            tracing::warn!(sync_log = %name, "automatic retry failed: {e}");
        }
    }
    Ok(())
}

/// Inserts, before `doc`, every document it links to that is missing here, fetched from the
/// producer with the same name, depth-first; each dependency writes a Synced sync log so it
/// counts as synced from that producer. A link back to a document still being fetched (a
/// cycle) is left empty at insert and set once that document exists.
#[allow(clippy::too_many_arguments)]
async fn sync_dependencies(
    site: &Site,
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    caller: &Caller,
    remote: &RemoteSite,
    known: &mut Known,
    dt: &DocType,
    doc: &Doc,
) -> Result<()> {
    let mut visiting = vec![(dt.name.clone(), text(doc.get("name")))];
    let mut deferred = Vec::new();
    fetch_missing(
        site,
        conn,
        reg,
        info,
        caller,
        remote,
        known,
        dt,
        doc,
        &mut visiting,
        &mut deferred,
    )
    .await?;
    for (doctype, name, field, value) in deferred {
        let tdt = reg.get(&doctype)?;
        let mut p = Doc::new();
        p.insert(field, Value::String(value));
        store::update_columns(conn, &tdt, &Value::String(name), &p).await?;
    }
    Ok(())
}

type Deferred = Vec<(String, String, String, String)>;

#[allow(clippy::too_many_arguments)]
fn fetch_missing<'a>(
    site: &'a Site,
    conn: &'a mut AnyConnection,
    reg: &'a Registry,
    info: &'a ProducerInfo,
    caller: &'a Caller,
    remote: &'a RemoteSite,
    known: &'a mut Known,
    dt: &'a DocType,
    doc: &'a Doc,
    visiting: &'a mut Vec<(String, String)>,
    deferred: &'a mut Deferred,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
    Box::pin(async move {
        // Links with an empty Dynamic Link type are the document's own problem, found at save.
        let Ok(links) = crate::service::documents::links_of(reg, dt, doc) else {
            return Ok(());
        };
        for (_, target, value) in links {
            let Ok(tdt) = reg.get(&target) else { continue };
            if target == "DocType" || tdt.issingle || tdt.istable {
                continue;
            }
            let key = (target.clone(), value.clone());
            if visiting.contains(&key) || known.present.contains(&key) {
                continue;
            }
            // A type kept under local names is found by the producer's name it came with.
            let renamed = info.renamed(&target);
            let here = match renamed {
                Some(sub) => find_local(conn, &tdt, info, sub, &value).await?.is_some(),
                None => store::row_exists(conn, &tdt, &Value::String(value.clone())).await?,
            };
            if here {
                known.present.insert(key);
                continue;
            }
            let fetched = match known.fetched.remove(&key) {
                Some(doc) => doc,
                None => remote.get_doc(&target, &value).await.map_err(|e| {
                    Error::LinkValidation(format!(
                        "dependency {target} {value} could not be fetched from {}: {}",
                        info.url,
                        e.message()
                    ))
                })?,
            };
            let mut dep = strip_dunder(&fetched);
            visiting.push((target.clone(), value.clone()));
            fetch_missing(
                site, conn, reg, info, caller, remote, known, &tdt, &dep, visiting, deferred,
            )
            .await?;
            // Fields pointing at documents still being fetched wait until those exist.
            for f in tdt
                .fields
                .iter()
                .filter(|f| f.fieldtype == crate::meta::FieldType::Link)
            {
                let v = text(dep.get(&f.fieldname));
                if !v.is_empty()
                    && visiting.iter().any(|(t, n)| *t == f.options && *n == v)
                    && !(f.options == target && v == value)
                {
                    deferred.push((target.clone(), value.clone(), f.fieldname.clone(), v));
                    dep.insert(f.fieldname.clone(), Value::Null);
                }
            }
            let names = local_names(conn, reg, info, &tdt, &dep).await?;
            rename_links(reg, &tdt, &mut dep, &names);
            if renamed.is_some() {
                dep.remove("name");
                dep.insert("remote_docname".into(), json!(value));
                dep.insert("remote_site_name".into(), json!(info.url));
            }
            let flags = WriteFlags {
                ignore_permissions: true,
                set_read_only: true,
                keep_name: renamed.is_none(),
                keep_timestamps: false,
                ignore_links: false,
                origin: Some(info.url.clone()),
            };
            insert_as_on_producer(site, conn, reg, caller, &tdt, dep, &flags)
                .await
                .map_err(|e| {
                    Error::LinkValidation(format!(
                        "dependency {target} {value} from {} could not be saved: {}",
                        info.url,
                        e.message()
                    ))
                })?;
            visiting.pop();
            known.absent.remove(&(target.clone(), value.clone()));
            let sub = SubscribedType {
                local_type: target.clone(),
                remote_type: target.clone(),
                use_same_name: true,
                unsubscribed: false,
                mapping: None,
            };
            let inc = Incoming {
                update_type: "Create".into(),
                remote_type: target.clone(),
                docname: value.clone(),
                raw_data: Value::String(fetched.to_string()),
                data: fetched,
                seq: None,
                origin: info.url.clone(),
            };
            write_sync_log(site, conn, info, &sub, &inc, Ok(value.clone()), None, known).await?;
        }
        Ok(())
    })
}

/// Fetches, in parallel and each once, the linked documents of a page that are missing here,
/// following their own links a few levels deep. Best effort: what is not fetched here is fetched
/// (or reported) when the document is applied.
async fn prefetch_dependencies(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Value],
) -> std::collections::HashMap<(String, String), Value> {
    use futures_util::stream::{self, StreamExt};
    let mut fetched = std::collections::HashMap::new();
    let mut docs: Vec<(String, Doc)> = logs
        .iter()
        .filter_map(|log| {
            let inc = Incoming::from_log(log);
            let sub = info.for_remote(&inc.remote_type)?;
            if sub.mapping.is_some() {
                // Mapped documents are in the producer's shape; their links are resolved as
                // they are mapped.
                return None;
            }
            let doc = match inc.update_type.as_str() {
                "Create" => strip_dunder(&inc.data),
                "Update" => inc
                    .data
                    .get("changed")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                _ => return None,
            };
            Some((sub.local_type.clone(), doc))
        })
        .collect();
    for _depth in 0..4 {
        let mut wanted: Vec<(String, String)> = Vec::new();
        for (doctype, doc) in &docs {
            let Ok(dt) = reg.get(doctype) else { continue };
            let Ok(links) = crate::service::documents::links_of(reg, &dt, doc) else {
                continue;
            };
            for (_, target, value) in links {
                let key = (target, value);
                if !wanted.contains(&key) && !fetched.contains_key(&key) {
                    wanted.push(key);
                }
            }
        }
        let missing = missing_locally(site, reg, wanted).await;
        if missing.is_empty() {
            break;
        }
        let results: Vec<((String, String), Option<Value>)> = stream::iter(missing)
            .map(|(t, n)| async move {
                let doc = remote.get_doc(&t, &n).await.ok();
                ((t, n), doc)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        docs.clear();
        for (key, doc) in results {
            if let Some(doc) = doc.filter(|d| d.is_object()) {
                docs.push((key.0.clone(), strip_dunder(&doc)));
                fetched.insert(key, doc);
            }
        }
    }
    fetched
}

/// Same-name Creates of a page whose documents are not here yet (one query per type).
async fn absent_at_start(
    conn: &mut AnyConnection,
    reg: &Registry,
    info: &ProducerInfo,
    logs: &[Value],
) -> Result<std::collections::HashSet<(String, String)>> {
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for log in logs {
        let inc = Incoming::from_log(log);
        if inc.update_type != "Create" {
            continue;
        }
        if let Some(sub) = info.for_remote(&inc.remote_type) {
            if sub.use_same_name {
                by_type
                    .entry(sub.local_type.clone())
                    .or_default()
                    .push(inc.docname);
            }
        }
    }
    let mut absent = std::collections::HashSet::new();
    for (t, names) in by_type {
        let dt = reg.get(&t)?;
        for chunk in names.chunks(500) {
            let ph: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT name FROM {} WHERE name IN ({})",
                store::q(&dt.table()),
                ph.join(", ")
            );
            let params: Vec<Param> = chunk.iter().map(|n| Param::Text(Some(n.clone()))).collect();
            let found: std::collections::HashSet<String> = store::fetch_docs(conn, &sql, &params)
                .await?
                .iter()
                .map(|r| text(r.get("name")))
                .collect();
            absent.extend(
                chunk
                    .iter()
                    .filter(|n| !found.contains(*n))
                    .map(|n| (t.clone(), n.clone())),
            );
        }
    }
    Ok(absent)
}

/// The (type, name) pairs that do not exist here (one query per type).
async fn missing_locally(
    site: &Site,
    reg: &Registry,
    wanted: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (t, n) in wanted {
        let Ok(dt) = reg.get(&t) else { continue };
        if t == "DocType" || dt.issingle || dt.istable {
            continue;
        }
        by_type.entry(t).or_default().push(n);
    }
    let mut missing = Vec::new();
    let Ok(mut conn) = site.store.conn().await else {
        return missing;
    };
    for (t, names) in by_type {
        let Ok(dt) = reg.get(&t) else { continue };
        let ph: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT name FROM {} WHERE name IN ({})",
            store::q(&dt.table()),
            ph.join(", ")
        );
        let params: Vec<Param> = names.iter().map(|n| Param::Text(Some(n.clone()))).collect();
        let Ok(found) = store::fetch_docs(&mut conn, &sql, &params).await else {
            continue;
        };
        let found: Vec<String> = found.iter().map(|r| text(r.get("name"))).collect();
        missing.extend(
            names
                .into_iter()
                .filter(|n| !found.contains(n))
                .map(|n| (t.clone(), n)),
        );
    }
    missing
}
