//! Applying pulled update logs on the consumer: strictly in order, each batch in one
//! transaction with its sync logs and checkpoint; a failure is isolated in a savepoint.

use super::remote::RemoteSite;
use crate::error::{Error, Result};
use crate::meta::{DocType, Registry};
use crate::service::documents;
use crate::service::documents::{load_doc, load_doc_for_update, name_text, WriteFlags};
use crate::service::hooks::Write;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::Streaming;
use serde_json::{json, Value};

mod dependencies;
mod files;
mod local_names;
mod mapped;
mod resync;
mod story;
mod sync_log;

use dependencies::*;
use local_names::*;
use mapped::*;
pub use resync::{resync, retry_due};
use sync_log::*;

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
    /// The client with the stored keys, made at the first pull that needs it: the keys and
    /// the connection mode are the Event Producer's fields, so its stamp covers them.
    remote: tokio::sync::OnceCell<RemoteSite>,
    /// The stamp it was read at (see [`PRODUCER_STAMP`]; empty when read without one): a page
    /// applied under it checks, in its transaction, that the producer has not changed since.
    stamp: Vec<Value>,
    /// The producer has sent pages bound to their request: an unbound one is refused.
    pub binds: bool,
}

/// What [`ProducerInfo::current`] compares to know that a producer it read is unchanged (the
/// first four columns): its Event Producer's `modified`, the newest `modified` and number of
/// Document Type Mappings (every save, of the rows too, moves its parent's `modified`) and
/// whether it binds its pages; then the checkpoint, which every pull needs too (one read where
/// it was two).
const PRODUCER_STAMP: &str = r#"SELECT (SELECT modified FROM "tabEvent Producer" WHERE name = $1),
    (SELECT MAX(modified) FROM "tabDocument Type Mapping"),
    (SELECT COUNT(*) FROM "tabDocument Type Mapping"),
    (SELECT value FROM "__settings" WHERE key = $2),
    (SELECT COUNT(*) FROM "tabEvent Producer Last Update" WHERE name = $1),
    (SELECT last_seq FROM "tabEvent Producer Last Update" WHERE name = $1),
    (SELECT last_update FROM "tabEvent Producer Last Update" WHERE name = $1)"#;
/// The columns of [`PRODUCER_STAMP`] that are the stamp.
const STAMP_COLUMNS: usize = 4;

/// The internal setting that says a producer binds its pages (see `streaming::page`).
fn binds_key(url: &str) -> String {
    format!("bound_pages:{url}")
}

/// A consumer's checkpoint with a producer: `last_seq` (docstream producers) and `last_update`.
pub type Checkpoint = (Option<i64>, String);

/// The checkpoint, or the error of a producer that has none.
pub fn stored_checkpoint(checkpoint: Option<Checkpoint>, url: &str) -> Result<Checkpoint> {
    checkpoint.ok_or_else(|| Error::DoesNotExist(format!("no checkpoint for producer {url}")))
}

/// Producers as pulls last read them (with the stamp they were read at), by URL.
#[derive(Debug, Default)]
pub struct ProducerInfos(
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<ProducerInfo>>>,
);

/// A producer's stamp and checkpoint, read in one statement on `conn`.
async fn read_stamp(conn: &mut Conn, url: &str) -> Result<(Vec<Value>, Option<Checkpoint>)> {
    let params = [Param::text(url), Param::text(&binds_key(url))];
    let mut stamp = store::fetch_values(conn, PRODUCER_STAMP, &params)
        .await?
        .pop()
        .unwrap_or_default();
    let found = stamp
        .get(STAMP_COLUMNS)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0;
    let last_update = stamp.pop().map(|v| text(Some(&v))).unwrap_or_default();
    let last_seq = stamp.pop().and_then(|v| v.as_i64());
    stamp.truncate(STAMP_COLUMNS);
    Ok((stamp, found.then_some((last_seq, last_update))))
}

impl ProducerInfo {
    /// The Event Producer as [`ProducerInfo::load`] reads it, read again only when its stamp
    /// moved (one statement where reading it is one per row and mapping, on every pull: a
    /// sixth of a one-update pull's CPU), and the checkpoint, read by the same statement (None
    /// when the producer has none).
    pub async fn current(
        site: &Site,
        url: &str,
    ) -> Result<(std::sync::Arc<ProducerInfo>, Option<Checkpoint>)> {
        let (stamp, checkpoint) = read_stamp(&mut site.store.conn().await?, url).await?;
        let infos = &site.streaming().producer_infos.0;
        if let Some(info) = infos.lock().expect("producer infos").get(url) {
            if info.stamp == stamp {
                return Ok((info.clone(), checkpoint));
            }
        }
        // Read after the stamp: what it reads is at least as new, so a change between the two
        // only costs one more read next time.
        let info = std::sync::Arc::new(ProducerInfo {
            binds: stamp.get(STAMP_COLUMNS - 1).is_some_and(|v| !v.is_null()),
            stamp,
            ..ProducerInfo::load(site, url).await?
        });
        infos
            .lock()
            .expect("producer infos")
            .insert(url.to_string(), info.clone());
        Ok((info, checkpoint))
    }

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
            remote: Default::default(),
            stamp: Vec::new(),
            binds: false,
        })
    }

    /// The client for this producer (decrypting its keys costs a twentieth of a pull).
    pub async fn remote(&self, site: &Site) -> Result<RemoteSite> {
        self.remote
            .get_or_try_init(|| super::consumer::remote_for(site, &self.url))
            .await
            .cloned()
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

    /// The subscription a sync log entry came through: two rows may make the same local type,
    /// told apart by the mapping the entry recorded (entries written before docstream recorded
    /// it name none, and take the type's first row).
    fn for_entry(&self, local_type: &str, mapping: &str) -> Option<&SubscribedType> {
        let live = || {
            self.types
                .iter()
                .filter(move |t| t.local_type == local_type && !t.unsubscribed)
        };
        let exact = live().find(|t| t.mapping.as_ref().map_or("", |m| m.name.as_str()) == mapping);
        match exact {
            None if mapping.is_empty() => live().next(),
            found => found,
        }
    }
}

/// One incoming update, its data parsed once.
#[derive(Debug, Clone)]
pub struct Incoming {
    update_type: String,
    remote_type: String,
    docname: String,
    data: Value,
    raw_data: Value,
    seq: Option<i64>,
    origin: String,
    creation: String,
}

impl Incoming {
    /// Reads an Event Update Log as the producer sent it.
    pub fn from_log(mut log: Value) -> Incoming {
        let raw = log.get_mut("data").map(Value::take).unwrap_or(Value::Null);
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
            creation: text(log.get("creation")),
        }
    }

    /// The log's `seq` (none from a Frappe producer).
    pub fn seq(&self) -> Option<i64> {
        self.seq
    }
}

/// Where a page was read from: the checkpoint it was asked after and the logs it holds up to.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    /// The checkpoint the page was asked after (docstream producers).
    pub after: Option<i64>,
    /// Where the checkpoint goes once the page is applied.
    pub cursor: Option<i64>,
    /// The page was bound to its request: from now on the producer's pages must be.
    pub bound: bool,
}

/// Applies a page of logs and moves the checkpoint to its cursor, all in one transaction.
/// None when the page cannot be applied as read: the Event Producer changed since `info` was
/// read, or the checkpoint went back before the page (read both again and pull anew).
pub async fn apply_batch(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
    bounds: PageBounds,
) -> Result<Option<usize>> {
    // Missing dependencies are fetched before the write transaction opens, in parallel.
    let reg = site.meta();
    let fetched = prefetch_dependencies(site, &reg, info, remote, logs).await;
    let mut attached = files::prefetch_files(site, &reg, info, remote, logs).await;
    let attempt = apply_page(
        site,
        info,
        remote,
        logs,
        bounds,
        fetched,
        &mut attached,
        false,
    )
    .await?;
    Ok(match attempt {
        Attempt::Applied(n) => Some(n),
        Attempt::Stale => None,
        // An update failed: apply the page again, isolating each update in a savepoint.
        Attempt::Failed => match apply_page(
            site,
            info,
            remote,
            logs,
            bounds,
            Default::default(),
            &mut attached,
            true,
        )
        .await?
        {
            Attempt::Applied(n) => Some(n),
            Attempt::Stale => None,
            Attempt::Failed => Some(0),
        },
    })
}

/// What one attempt at a page came to.
enum Attempt {
    /// Committed, with this many updates applied.
    Applied(usize),
    /// An optimistic attempt hit a failure and rolled back.
    Failed,
    /// Rolled back: the page was read under a producer or a checkpoint that has changed.
    Stale,
}

/// One attempt at a page.
#[allow(clippy::too_many_arguments)]
async fn apply_page(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    logs: &[Incoming],
    bounds: PageBounds,
    fetched: std::collections::HashMap<(String, String), Value>,
    attached: &mut files::Attached,
    careful: bool,
) -> Result<Attempt> {
    let reg = site.meta();
    let cursor = bounds.cursor;
    let mut tx = site.store.begin().await?;
    // The stamp and the checkpoint, read under the write lock (and cheaply: the writer's
    // cache is warm): another process may have applied this page, and the producer may have
    // changed since `info` was read.
    let (stamp, checkpoint) = read_stamp(&mut tx, &info.url).await?;
    let (stored_seq, _) = stored_checkpoint(checkpoint, &info.url)?;
    let went_back = matches!((stored_seq, bounds.after), (Some(s), Some(a)) if s < a);
    if went_back || (!info.stamp.is_empty() && info.stamp != stamp) {
        return Ok(Attempt::Stale);
    }
    let caller = crate::service::auth::caller_in(&mut tx, &info.user).await?;
    let mut batch = BatchState::load(&mut tx, &info.url).await?;
    batch.known.fetched = fetched;
    batch.known.files = std::mem::take(attached);
    batch.careful = careful;
    batch.known.absent = absent_at_start(&mut tx, &reg, info, logs).await?;
    let mut applied = 0;
    let mut last_creation = None;
    let mut wrote_logs = false;
    for inc in logs {
        if let (Some(stored), Some(seq)) = (stored_seq, inc.seq) {
            if seq <= stored {
                continue;
            }
        }
        last_creation = Some(inc.creation.clone());
        if inc.origin == site.config.url {
            continue;
        }
        let Some(sub) = info.for_remote(&inc.remote_type) else {
            continue;
        };
        applied += 1;
        wrote_logs |= apply_and_log(
            site, &mut tx, &reg, info, sub, &caller, remote, inc, None, &mut batch,
        )
        .await?;
        if batch.dirty {
            tx.rollback().await?;
            // The careful attempt needs the downloaded files again.
            *attached = std::mem::take(&mut batch.known.files);
            return Ok(Attempt::Failed);
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
    if bounds.bound && !info.binds {
        // Written with the page, so that no later page is applied unbound.
        store::set_setting(&mut tx, &binds_key(&info.url), "1").await?;
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
    story::page_applied(site, &info.url, &batch.told);
    if wrote_logs {
        if let Some(me) = site.arc() {
            super::notifier::notify_consumers(me);
        }
    }
    Ok(Attempt::Applied(applied))
}

/// Applies one update in a savepoint and writes (or, for `retry_of`, updates) its sync log.
/// Returns true when the change wrote update logs of its own (re-published).
#[allow(clippy::too_many_arguments)]
async fn apply_and_log(
    site: &Site,
    tx: &mut Conn,
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
            let mut attempt = async |conn: &mut Conn| {
                let local =
                    apply_one(site, conn, reg, info, sub, caller, remote, inc, known).await?;
                files::store_files(site, conn, reg, sub, caller, inc, &local, known).await?;
                Ok(local)
            };
            if batch.careful {
                store::in_savepoint(tx, attempt).await?
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
    batch.told.push(story::Outcome {
        doctype: sub.local_type.clone(),
        docname: inc.docname.clone(),
        update_type: inc.update_type.clone(),
        error: outcome.as_ref().err().map(|e| e.message()),
    });
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
    /// What became of each update, for the terminal once the page commits.
    told: Vec<story::Outcome>,
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
    /// Files the page's documents attach, downloaded before the transaction, by URL.
    files: files::Attached,
}

impl BatchState {
    async fn load(conn: &mut Conn, producer: &str) -> Result<BatchState> {
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
    conn: &mut Conn,
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
    conn: &mut Conn,
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
    conn: &mut Conn,
    reg: &Registry,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    inc: &Incoming,
    known: &mut Known,
) -> Result<String> {
    if let Some(bytes) = inc.data.get("__too_large").and_then(Value::as_u64) {
        return Err(Error::TooLarge(format!(
            "update log {} ({} {}, {} {bytes} bytes) is larger than {}'s page bound and was not sent: raise max_body_bytes or max_file_bytes there",
            inc.seq.map(|s| s.to_string()).unwrap_or_default(),
            inc.remote_type,
            inc.docname,
            inc.update_type,
            info.url
        )));
    }
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
        mapped: sub.mapping.is_some(),
    };
    match inc.update_type.as_str() {
        "Create" => {
            let whole = strip_dunder(&inc.data);
            apply_whole(
                site, conn, reg, &dt, info, sub, caller, remote, known, &flags, inc, whole,
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
            // The usual Update (same name, no rename) reads its document once: the read that
            // locks it also tells that it is here.
            let plain = old_name.is_none() && sub.use_same_name;
            let mut loaded = match plain {
                true => load_doc_for_update(conn, reg, &dt, &lookup).await?,
                false => None,
            };
            let found = match (&loaded, plain) {
                (Some(_), _) => Some(lookup.clone()),
                (None, true) => None,
                (None, false) => find_local(conn, &dt, info, sub, &lookup).await?,
            };
            let Some(local) = found else {
                if old_name.is_some()
                    && find_local(conn, &dt, info, sub, &inc.docname)
                        .await?
                        .is_some()
                {
                    return Ok(inc.docname.clone());
                }
                let whole = strip_dunder(&remote.get_doc(&inc.remote_type, &inc.docname).await?);
                return apply_whole(
                    site, conn, reg, &dt, info, sub, caller, remote, known, &flags, inc, whole,
                )
                .await;
            };
            let mut local = local;
            if let Some(old) = old_name {
                if sub.use_same_name {
                    known.present.remove(&(dt.name.clone(), old.clone()));
                    known.absent.remove(&(dt.name.clone(), inc.docname.clone()));
                    documents::rename_in(
                        &Write {
                            site,
                            reg,
                            caller,
                            dt: &dt,
                        },
                        conn,
                        &old,
                        &inc.docname,
                        &flags,
                    )
                    .await?;
                    local = inc.docname.clone();
                } else {
                    let mut p = Doc::new();
                    p.insert("remote_docname".into(), json!(inc.docname));
                    store::update_columns(conn, &dt, &Value::String(local.clone()), &p).await?;
                }
            }
            let current = match loaded.take() {
                Some(doc) => doc,
                None => load_doc_for_update(conn, reg, &dt, &local)
                    .await?
                    .ok_or_else(|| Error::DoesNotExist(format!("{} {local} vanished", dt.name)))?,
            };
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
                documents::update_loaded(
                    &Write {
                        site,
                        reg,
                        caller,
                        dt: &dt,
                    },
                    conn,
                    current,
                    patch,
                    &f,
                )
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
                    documents::update_in(
                        &Write {
                            site,
                            reg,
                            caller,
                            dt: &dt,
                        },
                        conn,
                        &local,
                        p,
                        &flags,
                    )
                    .await?;
                }
                documents::delete_in(
                    &Write {
                        site,
                        reg,
                        caller,
                        dt: &dt,
                    },
                    conn,
                    &local,
                    &flags,
                )
                .await?;
                known.present.remove(&(dt.name.clone(), local.clone()));
                Ok(local)
            }
            None => Ok(inc.docname.clone()),
        },
        other => Err(Error::Validation(format!("unknown update_type {other:?}"))),
    }
}

/// Applies a whole producer document (a Create, or an Update of a document missing here):
/// mapped if the row has a mapping, then inserted or matched to its local copy.
#[allow(clippy::too_many_arguments)]
async fn apply_whole(
    site: &Site,
    conn: &mut Conn,
    reg: &Registry,
    dt: &DocType,
    info: &ProducerInfo,
    sub: &SubscribedType,
    caller: &Caller,
    remote: &RemoteSite,
    known: &mut Known,
    flags: &WriteFlags,
    inc: &Incoming,
    whole: Doc,
) -> Result<String> {
    let doc = to_local(site, conn, reg, info, sub, caller, remote, known, whole).await?;
    upsert(
        site,
        conn,
        reg,
        dt,
        info,
        sub,
        caller,
        remote,
        known,
        flags,
        &inc.docname,
        doc,
    )
    .await
}

/// Inserts a producer document, or updates the local copy to match it when it was synced before.
#[allow(clippy::too_many_arguments)]
async fn upsert(
    site: &Site,
    conn: &mut Conn,
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
        documents::update_in(
            &Write {
                site,
                reg,
                caller,
                dt,
            },
            conn,
            &local,
            doc,
            &f,
        )
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
    conn: &mut Conn,
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
    let (saved, _) = documents::insert_in(
        &Write {
            site,
            reg,
            caller,
            dt,
        },
        conn,
        doc,
        flags,
    )
    .await?;
    let local = name_text(&saved["name"]);
    if cancelled {
        let mut p = Doc::new();
        p.insert("docstatus".into(), json!(2));
        documents::update_loaded(
            &Write {
                site,
                reg,
                caller,
                dt,
            },
            conn,
            saved,
            p,
            flags,
        )
        .await?;
    }
    Ok(local)
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
