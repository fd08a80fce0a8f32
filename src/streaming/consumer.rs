//! The consumer side: the Event Producer handshake, sending later edits, and pulling.

use super::apply::{
    apply_batch, stored_checkpoint, Checkpoint, Incoming, PageBounds, ProducerInfo,
};
use super::remote::{PullAsk, RemoteSite};
use crate::error::{Error, Result};
use crate::service::documents::load_doc;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Conn, Doc, Param};
use crate::streaming::Streaming;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

fn text(v: Option<&Value>) -> String {
    super::producer::value_text(v)
}

/// The mapping a producer row uses, checked: its name and remote type (None without one).
pub async fn mapping_of(conn: &mut Conn, row: &Value) -> Result<Option<(String, String)>> {
    if row.get("has_mapping").and_then(Value::as_i64) != Some(1) {
        return Ok(None);
    }
    let local = text(row.get("ref_doctype"));
    let name = text(row.get("mapping"));
    if name.is_empty() {
        return Err(Error::Validation(format!(
            "{local}: Has Mapping is set but no Mapping is chosen"
        )));
    }
    let rows = store::fetch_docs(
        conn,
        r#"SELECT local_doctype, remote_doctype FROM "tabDocument Type Mapping" WHERE name = $1"#,
        &[Param::Text(Some(name.clone()))],
    )
    .await?;
    let r = rows.first().ok_or_else(|| {
        Error::Validation(format!(
            "{local}: Document Type Mapping {name} does not exist"
        ))
    })?;
    let maps = text(r.get("local_doctype"));
    if maps != local {
        return Err(Error::Validation(format!(
            "{local}: Document Type Mapping {name} makes {maps} documents, not {local}"
        )));
    }
    Ok(Some((name, text(r.get("remote_doctype")))))
}

/// The type each producer row asks the producer for (its mapping's remote type, or its own).
pub async fn remote_types(conn: &mut Conn, rows: &[Value]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(match mapping_of(conn, r).await? {
            Some((_, remote)) => remote,
            None => text(r.get("ref_doctype")),
        });
    }
    Ok(out)
}

fn producer_rows(doc: &Doc) -> Vec<Value> {
    doc.get("producer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// What the producer answered to `register_consumer`.
#[derive(Debug, Clone)]
pub struct Registration {
    pub producer_url: String,
    pub last_update: String,
    pub last_seq: Option<i64>,
    pub remote: RemoteSite,
}

/// The consumer's own keys for `user`, which the producer will use to call back.
async fn own_keys(site: &Site, user: &str) -> Result<(String, String)> {
    let (key, secret) = super::stored_keys(site, "User", user).await?;
    if key.is_empty() || secret.is_empty() {
        return Err(Error::Validation(format!(
            "{user} has no API keys on this site ({}): generate keys for that user first",
            site.config.url
        )));
    }
    Ok((key, secret))
}

fn consumer_doctypes(doc: &Doc, remote: &[String]) -> Vec<Value> {
    producer_rows(doc)
        .iter()
        .zip(remote)
        .map(|(r, t)| {
            json!({"doctype": t, "condition": r.get("condition").cloned().unwrap_or(Value::Null),
                   "sync_existing": r.get("sync_existing").and_then(Value::as_i64).unwrap_or(1)})
        })
        .collect()
}

/// Before an Event Producer is stored: checks the producer and the keys, and registers there.
/// Fills the row statuses from the producer's reply into `doc`. A producer that connects
/// cannot be called: the same checks are made, and the handshake waits for its first
/// connection (`None`).
pub async fn register(site: &Site, doc: &mut Doc) -> Result<Option<Registration>> {
    if super::tunnel::producer_connects(doc) {
        defer_registration(site, doc).await?;
        return Ok(None);
    }
    let (url, remote) = check_new(site, doc).await?;
    register_with(site, doc, &url, remote).await.map(Some)
}

/// The local types of subscription rows (those not made through a mapping) follow the
/// producer's definitions (`streaming::definitions`): made when missing, extended with the
/// producer's fields. A type that is not here and cannot be made is refused with the reason.
pub async fn follow_rows(site: &Site, remote: &RemoteSite, rows: &[Value]) -> Result<()> {
    for r in rows {
        if r.get("has_mapping").and_then(Value::as_i64) == Some(1) {
            continue;
        }
        let doctype = text(r.get("ref_doctype"));
        if doctype.is_empty() {
            continue;
        }
        let here = site.meta().exists(&doctype);
        if !site.config.follow_producer_types {
            if !here {
                return Err(Error::Validation(format!(
                    "{doctype} is not a document type of this site (follow_producer_types is off: make it first)"
                )));
            }
            continue;
        }
        match super::definitions::follow(site, remote, &doctype).await {
            Ok(_) => {}
            Err(e) if here => {
                tracing::warn!(producer = %remote.url, %doctype, "could not follow the producer's definition (the type stays as it is): {e}");
            }
            Err(e) => {
                return Err(Error::Validation(format!(
                    "{doctype} is not a document type of this site, and it could not be made from {}'s definition: {}",
                    remote.url,
                    e.message()
                )))
            }
        }
    }
    Ok(())
}

/// A row's condition reads the producer's document: checked against the local type where it
/// is the producer's (not mapped; it holds the producer's fields once they are followed), so
/// that a Frappe producer's condition with an unknown field is refused at Save as a docstream
/// producer refuses it.
fn check_conditions(site: &Site, rows: &[Value]) -> Result<()> {
    let reg = site.meta();
    for r in rows {
        let condition = text(r.get("condition"));
        if condition.trim().is_empty() || r.get("has_mapping").and_then(Value::as_i64) == Some(1) {
            continue;
        }
        let doctype = text(r.get("ref_doctype"));
        if let Ok(dt) = reg.get(&doctype) {
            super::condition::check_for(&dt, &condition)
                .map_err(|e| Error::Validation(format!("{doctype}: {e}")))?;
        }
    }
    Ok(())
}

/// Before an Event Producer whose producer connects is stored: the same checks, without
/// calling the producer; its rows wait as Pending.
async fn defer_registration(site: &Site, doc: &mut Doc) -> Result<()> {
    check_new(site, doc).await?;
    let user = text(doc.get("user"));
    {
        let mut conn = site.store.conn().await?;
        let taken = store::fetch_values(
            &mut conn,
            r#"SELECT name FROM "tabEvent Producer" WHERE "user" = $1 AND connection = $2"#,
            &[
                Param::text(&user),
                Param::text(super::tunnel::PRODUCER_CONNECTS),
            ],
        )
        .await?;
        if let Some(other) = taken.first().and_then(|r| r.first()) {
            // A connecting producer is known by the user whose keys it holds: two sharing one
            // could each take the other's place.
            return Err(Error::Validation(format!(
                "{user} is already the Event Subscriber of the producer {} that connects: give each such producer a user of its own",
                text(Some(other))
            )));
        }
    }
    own_keys(site, &user).await?;
    if let Some(rows) = doc
        .get_mut("producer_doctypes")
        .and_then(Value::as_array_mut)
    {
        for r in rows.iter_mut() {
            r["status"] = json!("Pending");
        }
    }
    doc.insert(
        "connection_status".into(),
        json!("Waiting for the producer to connect"),
    );
    Ok(())
}

/// The handshake of a stored Event Producer whose producer connects, over its connection:
/// registers there, then stores the checkpoint and the row statuses in one transaction.
pub async fn register_stored(site: &Site, url: &str) -> Result<()> {
    let reg = site.meta();
    let dt = reg.get("Event Producer")?;
    let mut doc = {
        let mut conn = site.store.conn().await?;
        load_doc(&mut conn, &reg, &dt, url)
            .await?
            .ok_or_else(|| Error::DoesNotExist(format!("Event Producer {url} not found")))?
    };
    let remote = remote_for(site, url).await?;
    let registration = register_with(site, &mut doc, url, remote).await?;
    let mut tx = site.store.begin().await?;
    for r in producer_rows(&doc) {
        store::execute(
            &mut tx,
            r#"UPDATE "tabEvent Producer Document Type" SET status = $1 WHERE name = $2 AND parent = $3"#,
            &[Param::text(&text(r.get("status"))), Param::text(&text(r.get("name"))), Param::text(url)],
        )
        .await?;
    }
    let meta_changed = store_registration(site, &mut tx, &doc, &registration).await?;
    tx.commit().await?;
    if meta_changed {
        site.reload_meta().await?;
    }
    Ok(())
}

/// The checks of a new Event Producer that need no call to the producer; returns its URL and
/// a client for it.
async fn check_new(site: &Site, doc: &mut Doc) -> Result<(String, RemoteSite)> {
    let url = text(doc.get("producer_url"))
        .trim_end_matches('/')
        .to_string();
    if url.is_empty() {
        return Err(Error::Mandatory(
            "[Event Producer]: Value missing for Producer URL (producer_url)".into(),
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Validation(format!(
            "Producer URL must start with http:// or https://, not {url:?}"
        )));
    }
    if url == site.config.url {
        return Err(Error::Validation(
            "A site cannot be its own producer".into(),
        ));
    }
    doc.insert("producer_url".into(), Value::String(url.clone()));
    doc.insert("name".into(), Value::String(url.clone()));
    {
        let mut conn = site.store.conn().await?;
        if !store::fetch_docs(
            &mut conn,
            r#"SELECT name FROM "tabEvent Producer" WHERE name = $1"#,
            &[Param::Text(Some(url.clone()))],
        )
        .await?
        .is_empty()
        {
            return Err(Error::DuplicateEntry(format!(
                "Event Producer {url} already exists"
            )));
        }
        // Checks the mappings.
        remote_types(&mut conn, &producer_rows(doc)).await?;
    }
    let user = text(doc.get("user"));
    let key = text(doc.get("api_key"));
    let secret = text(doc.get("api_secret"));
    if user.is_empty() || key.is_empty() || secret.is_empty() || secret.chars().all(|c| c == '*') {
        return Err(Error::Mandatory("[Event Producer]: Value missing for Event Subscriber (user), API Key (api_key) or API Secret (api_secret)".into()));
    }
    Ok((
        url.clone(),
        RemoteSite::new(
            site.http.clone(),
            &url,
            &key,
            &secret,
            site.config.max_answer_bytes(),
        ),
    ))
}

/// The handshake: checks the producer and the keys, and registers there; fills the row
/// statuses from the producer's reply into `doc`.
async fn register_with(
    site: &Site,
    doc: &mut Doc,
    url: &str,
    remote: RemoteSite,
) -> Result<Registration> {
    let user = text(doc.get("user"));
    let remote_types = {
        let mut conn = site.store.conn().await?;
        remote_types(&mut conn, &producer_rows(doc)).await?
    };
    remote.ping(3).await?;
    let who = remote
        .call("frappe.auth.get_logged_user", &[])
        .await
        .map_err(|e| {
            Error::Validation(format!("the producer refused the API key of {user}: {e}"))
        })?;
    if text(Some(&who)) != user {
        return Err(Error::Validation(format!(
            "the API key belongs to {} on the producer, not to the Event Subscriber {user}",
            text(Some(&who))
        )));
    }
    follow_rows(site, &remote, &producer_rows(doc)).await?;
    check_conditions(site, &producer_rows(doc))?;
    let (own_key, own_secret) = own_keys(site, &user).await?;
    let data = json!({"event_consumer": site.config.url, "consumer_doctypes": serde_json::to_string(&consumer_doctypes(doc, &remote_types))?, "user": user, "api_key": own_key, "api_secret": own_secret});
    let reply = remote
        .call(
            "frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer",
            &[("data", data.to_string())],
        )
        .await
        .map_err(|e| {
            Error::Validation(format!("the producer {url} refused the registration: {e}"))
        })?;
    let reply: Value = match reply {
        Value::String(s) => serde_json::from_str(&s).map_err(|_| Error::Validation(format!("the producer {url} answered register_consumer with something that is not JSON")))?,
        Value::Object(m) => Value::Object(m),
        _ => return Err(Error::Validation(format!("the producer {url} did not register this consumer (empty answer: it may be registered already)"))),
    };
    let producer_says = text(reply.get("producer_url"));
    if !producer_says.is_empty() && producer_says.trim_end_matches('/') != url {
        let _ = remote.delete_doc("Event Consumer", &site.config.url).await;
        return Err(Error::Validation(format!(
            "the producer calls itself {producer_says}: use that URL as the Producer URL"
        )));
    }
    let statuses = reply
        .get("consumer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(rows) = doc
        .get_mut("producer_doctypes")
        .and_then(Value::as_array_mut)
    {
        for (r, t) in rows.iter_mut().zip(&remote_types) {
            let status = statuses
                .iter()
                .find(|s| text(s.get("doctype")) == *t)
                .map(|s| text(s.get("status")))
                .unwrap_or_else(|| "Pending".into());
            r["status"] = Value::String(status);
        }
    }
    Ok(Registration {
        producer_url: url.to_string(),
        last_update: text(reply.get("last_update")),
        last_seq: reply.get("last_seq").and_then(Value::as_i64),
        remote,
    })
}

/// In the Event Producer's insert transaction: the checkpoint and the remote-name fields.
pub async fn store_registration(
    site: &Site,
    conn: &mut crate::store::Conn,
    doc: &Doc,
    reg_info: &Registration,
) -> Result<bool> {
    let now = site.clock.now();
    store::execute(
        conn,
        r#"INSERT INTO "tabEvent Producer Last Update" (name, owner, creation, modified, modified_by, docstatus, idx, event_producer, last_update, last_seq)
           VALUES ($1, 'Administrator', $2, $2, 'Administrator', 0, 0, $1, $3, $4)"#,
        &[Param::Text(Some(reg_info.producer_url.clone())), Param::Text(Some(now)), Param::Text(Some(reg_info.last_update.clone())), Param::Int(reg_info.last_seq)],
    )
    .await?;
    add_remote_name_fields(site, conn, doc).await
}

/// Adds `remote_docname` and `remote_site_name` to local types whose rows do not use the same name.
pub async fn add_remote_name_fields(
    site: &Site,
    conn: &mut crate::store::Conn,
    doc: &Doc,
) -> Result<bool> {
    let reg = site.meta();
    let mut added = false;
    let mut types = Vec::new();
    for r in producer_rows(doc) {
        if r.get("use_same_name").and_then(Value::as_i64) != Some(1) {
            types.push(text(r.get("ref_doctype")));
        }
        // Documents made by a mapping's Document rows are found again by their producer name.
        if let Some((name, _)) = mapping_of(conn, &r).await? {
            let mut stack = vec![super::mapping::load(conn, &name).await?];
            while let Some(m) = stack.pop() {
                for row in m.document_rows() {
                    if let super::mapping::RowKind::Document { mapping, .. } = &row.kind {
                        types.push(mapping.local_doctype.clone());
                        stack.push((**mapping).clone());
                    }
                }
            }
        }
    }
    types.dedup();
    for t in types {
        let dt = reg.get(&t)?;
        for (f, label) in [
            ("remote_docname", "Remote Document Name"),
            ("remote_site_name", "Remote Site Name"),
        ] {
            if dt.field(f).is_some() {
                continue;
            }
            let name = format!("{t}-{f}");
            let exists = !store::fetch_docs(
                conn,
                r#"SELECT name FROM "tabCustom Field" WHERE name = $1"#,
                &[Param::Text(Some(name.clone()))],
            )
            .await?
            .is_empty();
            if exists {
                continue;
            }
            let now = site.clock.now();
            store::execute(
                conn,
                r#"INSERT INTO "tabCustom Field" (name, owner, creation, modified, modified_by, docstatus, idx, dt, fieldname, label, fieldtype, read_only)
                   VALUES ($1, 'Administrator', $2, $2, 'Administrator', 0, 0, $3, $4, $5, 'Data', 1)"#,
                &[Param::Text(Some(name)), Param::Text(Some(now)), Param::Text(Some(t.clone())), Param::Text(Some(f.into())), Param::Text(Some(label.into()))],
            )
            .await?;
            let field: crate::meta::DocField = serde_json::from_value(
                json!({"fieldname": f, "label": label, "fieldtype": "Data", "read_only": 1}),
            )?;
            store::add_column(conn, site.store.dialect(), &dt, &field).await?;
            added = true;
        }
    }
    Ok(added)
}

/// A client for a stored Event Producer, with its decrypted keys.
pub async fn remote_for(site: &Site, producer_url: &str) -> Result<RemoteSite> {
    super::remote_with_stored_keys(site, "Event Producer", producer_url).await
}

/// Sends a local edit of the Event Producer's rows to the producer's Event Consumer.
pub async fn send_update(site: &Site, producer_url: &str) -> Result<()> {
    let reg = site.meta();
    let mut conn = site.store.conn().await?;
    let Some(doc) = load_doc(&mut conn, &reg, &*reg.get("Event Producer")?, producer_url).await?
    else {
        return Ok(());
    };
    let remote_types = remote_types(&mut conn, &producer_rows(&doc)).await?;
    drop(conn);
    let remote = remote_for(site, producer_url).await?;
    let consumer = remote.get_doc("Event Consumer", &site.config.url).await?;
    let old_rows = consumer
        .get("consumer_doctypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Value> = producer_rows(&doc)
        .iter()
        .zip(&remote_types)
        .map(|(r, t)| {
            let old = old_rows.iter().find(|o| text(o.get("ref_doctype")) == *t);
            let mut row = json!({"ref_doctype": t, "condition": r.get("condition").cloned().unwrap_or(Value::Null),
                "unsubscribed": r.get("unsubscribe").and_then(Value::as_i64).unwrap_or(0),
                "sync_existing": r.get("sync_existing").and_then(Value::as_i64).unwrap_or(1),
                "status": old.map(|o| text(o.get("status"))).unwrap_or_else(|| "Pending".into())});
            if let Some(n) = old.and_then(|o| o.get("name")) {
                row["name"] = n.clone();
            }
            row
        })
        .collect();
    remote
        .update_doc(
            "Event Consumer",
            &site.config.url,
            &json!({"consumer_doctypes": rows, "incoming_change": 1}),
        )
        .await?;
    clear_unsent(site, producer_url).await
}

/// Marks a producer as having an edit that has not reached it yet.
pub async fn mark_unsent(site: &Site, producer_url: &str) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::set_setting(
        &mut tx,
        &format!("unsent_producer_update:{producer_url}"),
        "1",
    )
    .await?;
    tx.commit().await
}

async fn clear_unsent(site: &Site, producer_url: &str) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"DELETE FROM "__settings" WHERE key = $1"#,
        &[Param::Text(Some(format!(
            "unsent_producer_update:{producer_url}"
        )))],
    )
    .await?;
    tx.commit().await
}

/// Producers whose last edit is still to be sent.
pub async fn unsent_updates(site: &Site) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT key FROM "__settings" WHERE key LIKE 'unsent_producer_update:%'"#,
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            text(r.get("key"))
                .trim_start_matches("unsent_producer_update:")
                .to_string()
        })
        .collect())
}

/// Pulls every page the producer has and applies it; returns the number of logs applied.
pub async fn pull(site: &Site, producer_url: &str) -> Result<usize> {
    pull_with(site, producer_url, None).await
}

/// A page a long poll brought, the checkpoint it was asked after and the producer as the poll
/// read it.
pub(super) struct Prefetched {
    pub info: std::sync::Arc<ProducerInfo>,
    pub after: i64,
    pub page: ParsedPage,
}

/// Same as [`pull`], beginning with a page already fetched. Its transaction checks that the
/// producer and the checkpoint are still those it was read under (logs another pull applied
/// meanwhile are passed over); if not, the page is dropped and the pull starts anew.
pub(super) async fn pull_with(
    site: &Site,
    producer_url: &str,
    prefetched: Option<Prefetched>,
) -> Result<usize> {
    with_pull_lock(
        site,
        producer_url,
        pull_locked(site, producer_url, prefetched),
    )
    .await
}

/// Runs `work` under the producer's pull lock: one pull (or verification) per producer at a
/// time.
pub(super) async fn with_pull_lock<T>(
    site: &Site,
    producer_url: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let lock = site.streaming().pull_lock(producer_url);
    let _guard = lock.lock().await;
    if site.store.dialect() != store::Dialect::Postgres {
        return work.await;
    }
    // Several processes may serve one PostgreSQL site: a session advisory lock keeps one pull
    // per producer at a time across all of them (the others wait, then pull what is left).
    let key = crate::crypto::lock_key("pull", producer_url);
    let mut conn = site.store.conn().await?;
    let key = [store::Param::Int(Some(key))];
    store::fetch_values(&mut conn, "SELECT pg_advisory_lock($1)", &key).await?;
    let result = work.await;
    if store::fetch_values(&mut conn, "SELECT pg_advisory_unlock($1)", &key)
        .await
        .is_err()
    {
        // A connection that may still hold the lock must not go back to the pool.
        conn.detach();
    }
    result
}

/// Times a pull starts anew after a page was read under a producer or a checkpoint that
/// changed before it could be applied (the Event Producer being edited during the pull).
const STALE_RETRIES: usize = 3;

async fn pull_locked(
    site: &Site,
    producer_url: &str,
    mut prefetched: Option<Prefetched>,
) -> Result<usize> {
    let mut applied = 0;
    for _ in 0..STALE_RETRIES {
        let (n, stale) = pull_pages(site, producer_url, prefetched.take()).await?;
        applied += n;
        if !stale {
            return Ok(applied);
        }
    }
    Err(Error::Internal(format!(
        "the Event Producer {producer_url} kept changing while it was pulled; it is pulled again on the next round"
    )))
}

/// Fetches and applies pages; the updates applied, and true when a page was read under a
/// producer or a checkpoint that has changed since (it was not applied).
async fn pull_pages(
    site: &Site,
    producer_url: &str,
    prefetched: Option<Prefetched>,
) -> Result<(usize, bool)> {
    let (info, (mut last_seq, last_update), first) = match prefetched {
        Some(p) => (p.info, (Some(p.after), String::new()), Some(p.page)),
        None => {
            let (info, checkpoint) = ProducerInfo::current(site, producer_url).await?;
            if info.remote_types().is_empty() {
                return Ok((0, false));
            }
            (info, stored_checkpoint(checkpoint, producer_url)?, None)
        }
    };
    let remote = info.remote(site).await?;
    let types = info.remote_types();
    if types.is_empty() {
        return Ok((0, false));
    }
    // The identity at the checkpoint, for a page fetched here (a long poll's page was asked
    // with it already).
    let history = match (&first, last_seq) {
        (None, Some(after)) => Some(super::apply::stored_history(site, producer_url, after).await?),
        _ => None,
    };
    // `acked` is what is committed here: the producer may forget logs up to it, never beyond.
    // A page is fetched and parsed in a task of its own, so that work runs on another core
    // while the previous page is applied.
    let must_bind = info.binds;
    let fetch = |after: Option<i64>, acked: Option<i64>, history: Option<String>| {
        let (remote, me, types, last_update) = (
            remote.clone(),
            site.config.url.clone(),
            types.clone(),
            last_update.clone(),
        );
        tokio::spawn(async move {
            let ask = PullAsk {
                consumer_url: &me,
                doctypes: &types,
                after_seq: after,
                last_update: &last_update,
                limit: PAGE_SIZE,
                acked_seq: acked,
                wait: None,
                must_bind,
                history: history.as_deref(),
            };
            Ok::<_, Error>(ParsedPage::from(remote.pull(&ask).await?))
        })
    };
    let joined = |r: std::result::Result<Result<ParsedPage>, tokio::task::JoinError>| {
        r.map_err(|e| Error::Internal(format!("page fetch stopped: {e}")))?
    };
    let mut page = match first {
        Some(page) => page,
        None => joined(fetch(last_seq, last_seq, history).await)?,
    };
    let mut applied = 0;
    let mut pages = 0;
    loop {
        if let Some(changed) = &page.history_changed {
            super::apply::history_changed(site, producer_url, changed, last_seq.unwrap_or(0))
                .await?;
            // Pulled anew from the checkpoint the change left.
            return Ok((applied, true));
        }
        let cursor = match (last_seq, page.last_seq) {
            (Some(_), Some(s)) => Some(s),
            (Some(s), None) => page.logs.last().and_then(Incoming::seq).or(Some(s)),
            (None, _) => None,
        };
        if page.logs.is_empty() && cursor == last_seq {
            return Ok((applied, false));
        }
        // Frappe's last_update form is one page per pull; docstream pages are pipelined: the
        // next page travels while this one is applied.
        let more = page.has_more && last_seq.is_some();
        let next = more.then(|| fetch(cursor, last_seq, page.history.clone()));
        if next.is_some() {
            // Tokio puts a task spawned from a worker in that worker's LIFO slot, which other
            // workers cannot steal: without this yield the fetch would not start before the
            // page below, which never yields while it applies, had been applied.
            tokio::task::yield_now().await;
        }
        let bounds = PageBounds {
            after: last_seq,
            cursor,
            bound: page.bound,
            history: page.history.clone(),
        };
        let Some(n) = apply_batch(site, &info, &remote, &page.logs, bounds).await? else {
            return Ok((applied, true));
        };
        applied += n;
        // A backlog of several pages shows its progress (a bar on a terminal).
        let label = || format!("{} catching up from {producer_url}", site.name);
        if more || pages > 0 {
            pages += 1;
            crate::progress::report(&label(), applied as u64, None);
            if !more {
                crate::progress::finish(&label(), &format!("{applied} updates in {pages} pages"));
            }
        }
        match next {
            Some(next) => {
                let applied_page = std::mem::replace(&mut page, joined(next.await)?);
                // Freeing 500 parsed documents takes milliseconds (3.5 ms for invoices): not
                // on the path of the next page.
                tokio::task::spawn_blocking(move || drop(applied_page));
                last_seq = cursor;
            }
            None => return Ok((applied, false)),
        }
    }
}

/// Logs asked for in one pull.
pub(super) const PAGE_SIZE: usize = 500;

/// A page of logs, parsed.
pub(super) struct ParsedPage {
    logs: Vec<Incoming>,
    last_seq: Option<i64>,
    has_more: bool,
    bound: bool,
    history: Option<String>,
    history_changed: Option<super::page::HistoryChanged>,
}

impl From<super::remote::LogPage> for ParsedPage {
    fn from(page: super::remote::LogPage) -> ParsedPage {
        ParsedPage {
            logs: page.logs.into_iter().map(Incoming::from_log).collect(),
            last_seq: page.last_seq,
            has_more: page.has_more,
            bound: page.bound,
            history: page.history,
            history_changed: page.history_changed,
        }
    }
}

/// The stored checkpoint: (`last_seq` for docstream producers, `last_update`).
pub async fn checkpoint(site: &Site, producer_url: &str) -> Result<Checkpoint> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT last_seq, last_update FROM "tabEvent Producer Last Update" WHERE name = $1"#,
        &[Param::Text(Some(producer_url.into()))],
    )
    .await?;
    let found = rows.first().map(|r| {
        (
            r.get("last_seq").and_then(Value::as_i64),
            text(r.get("last_update")),
        )
    });
    stored_checkpoint(found, producer_url)
}

/// Producers the worker pulls at once.
const PARALLEL_PULLS: usize = 8;

/// Background work of a site: pulls on start, on notification and on the interval; retries.
pub async fn run_worker(site: std::sync::Arc<Site>) {
    let interval = Duration::from_secs_f64(site.config.pull_interval.max(0.05));
    let rt = site.streaming();
    loop {
        for url in unsent_updates(&site).await.unwrap_or_default() {
            if send_update(&site, &url).await.is_ok() {
                tracing::info!(producer = %url, "sent the queued Event Producer edit");
            }
        }
        let producers = producer_urls(&site).await.unwrap_or_default();
        for p in &producers {
            super::long_poll::keep_open(&site, p);
        }
        // Producers are pulled side by side (each by one pull at a time): a head office
        // with many branches fetches the next pages while it applies one.
        futures_util::stream::iter(producers)
            .for_each_concurrent(PARALLEL_PULLS, |p| {
                let site = &site;
                async move {
                    // A producer that connects and is away now is pulled when it comes back.
                    if super::tunnel::is_producer_connects(site, &p)
                        .await
                        .unwrap_or(false)
                        && !site.streaming().tunnels.is_connected(&p)
                    {
                        return;
                    }
                    let outcome = pull(site, &p).await;
                    if let Err(e) = &outcome {
                        tracing::warn!(producer = %p, "pull failed: {e}");
                    }
                    after_pull(site, &p, outcome.is_ok()).await;
                }
            })
            .await;
        if let Err(e) = super::apply::retry_due(&site).await {
            tracing::warn!("retrying failed syncs: {e}");
        }
        if let Err(e) = super::verify::verify_due(&site).await {
            tracing::warn!("verifying producers: {e}");
        }
        if let Err(e) = super::verify_consumer::verify_due(&site).await {
            tracing::warn!("checking consumers: {e}");
        }
        if let Err(e) = super::tunnel::mark_away(&site).await {
            tracing::warn!("marking producers away: {e}");
        }
        if let Err(e) = super::update_log::prune(&site).await {
            tracing::warn!("pruning update logs: {e}");
        }
        tokio::select! {
            _ = rt.pull_wakeup.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Remembers since when a producer's pulls fail; once one succeeds after more than
/// `pull_interval` of failures, its verification is due (what happened meanwhile is found).
async fn after_pull(site: &Site, producer: &str, ok: bool) {
    let rt = site.streaming();
    let since = {
        let mut map = rt.unreachable_since.lock().expect("unreachable lock");
        if !ok {
            map.entry(producer.to_string())
                .or_insert_with(std::time::Instant::now);
            return;
        }
        map.remove(producer)
    };
    let Some(since) = since else { return };
    if since.elapsed().as_secs_f64() <= site.config.pull_interval {
        return;
    }
    let due = async {
        let mut tx = site.store.begin().await?;
        super::verify::due_now(&mut tx, producer).await?;
        tx.commit().await
    };
    if let Err(e) = due.await {
        tracing::warn!(producer = %producer, "could not make its verification due: {e}");
    }
}

/// Every Event Producer of the site.
pub async fn producer_urls(site: &Site) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT name FROM "tabEvent Producer" ORDER BY name"#,
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| text(r.get("name"))).collect())
}

/// `pull_from_node`: pulls now (waiting for a pull already running) until the producer is drained.
pub async fn pull_from_node(site: &Site, caller: &Caller, producer_url: &str) -> Result<usize> {
    if !caller.is_system_manager() {
        return Err(Error::Permission(
            "Only a System Manager may pull from a producer".into(),
        ));
    }
    pull(site, producer_url.trim_end_matches('/')).await
}
