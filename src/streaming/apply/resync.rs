//! Resync of Failed sync logs, by hand (the `resync` method) or when their retry time comes.
//! Must not retry an update whose earlier updates still fail: it waits on them.

use super::*;

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
    let remote = crate::streaming::consumer::remote_for(site, &producer).await?;
    let status = retry_entry(site, &info, &remote, &entry).await?;
    if status == "Synced" {
        retry_waiting(site, &reg, &info, &remote, sync_log).await?;
    }
    Ok(status)
}

/// Retries, in order, the Failed sync logs waiting on `sync_log`, which no longer fails.
pub(super) async fn retry_waiting(
    site: &Site,
    reg: &Registry,
    info: &ProducerInfo,
    remote: &RemoteSite,
    sync_log: &str,
) -> Result<()> {
    let mut conn = site.store.conn().await?;
    let waiting = store::fetch_docs(
        &mut conn,
        r#"SELECT name FROM "tabEvent Sync Log" WHERE status = 'Failed' AND error = $1 ORDER BY seq, creation"#,
        &[Param::Text(Some(format!("waiting on {sync_log}")))],
    )
    .await?;
    drop(conn);
    for (i, w) in waiting.iter().enumerate() {
        let mut conn = site.store.conn().await?;
        let Some(e) = load_doc(
            &mut conn,
            reg,
            &*reg.get("Event Sync Log")?,
            &text(w.get("name")),
        )
        .await?
        else {
            continue;
        };
        drop(conn);
        if retry_entry(site, info, remote, &e).await? != "Synced" {
            // The rest now wait on this one, so that its resync or resolution retries them.
            let now_blocking = text(w.get("name"));
            let mut tx = site.store.begin().await?;
            for rest in &waiting[i + 1..] {
                store::execute(
                    &mut tx,
                    r#"UPDATE "tabEvent Sync Log" SET error = $1 WHERE name = $2 AND status = 'Failed'"#,
                    &[
                        Param::Text(Some(format!("waiting on {now_blocking}"))),
                        Param::Text(Some(text(rest.get("name")))),
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            break;
        }
    }
    Ok(())
}

pub(super) async fn retry_entry(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    entry: &Doc,
) -> Result<String> {
    let local_type = text(entry.get("ref_doctype"));
    let sub = info
        .for_entry(&local_type, &text(entry.get("mapping")))
        .cloned()
        .ok_or_else(|| {
            Error::Validation(format!(
                "{local_type} is no longer subscribed from {}",
                info.url
            ))
        })?;
    let raw = entry.get("data").cloned().unwrap_or(Value::Null);
    let inc = Incoming::from_log(json!({
        "update_type": entry.get("update_type"), "ref_doctype": sub.remote_type, "docname": entry.get("producer_doc"),
        "data": raw, "seq": entry.get("seq"), "origin": info.url,
    }));
    apply_alone(site, info, remote, (&sub, &inc), Some(entry), |_| Ok(())).await
}

/// Applies one update on its own, outside a page (a resync, a repair): the types followed and
/// the files fetched before its transaction, applied with its sync log (updated when it is
/// `retry_of`), the consumers told after the commit, and the terminal told. Returns the new
/// status, or the reason `prepare` gave for not applying it.
pub(super) async fn apply_alone(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    (sub, inc): (&SubscribedType, &Incoming),
    retry_of: Option<&Doc>,
    prepare: impl FnOnce(&mut BatchState) -> std::result::Result<(), String>,
) -> Result<String> {
    let one = std::slice::from_ref(inc);
    super::held::follow_unheld(site, info, remote, one).await;
    // The types as following left them (a resync must not fail on a field just added).
    let reg = &*site.meta();
    // Downloads happen before the transaction, which must not wait on the network.
    let files = super::files::prefetch_files(site, reg, info, remote, one).await;
    // As a page does: the documents it links to that are held here and differ are noted on
    // this entry when it applies (a first attempt that failed noted nothing).
    let (docs, here) = prefetch_dependencies(site, reg, info, remote, one).await;
    let linked_here = super::linked_here::check(site, reg, info, remote, here).await;
    let caller = site.caller_for(&info.user).await?;
    let mut tx = site.store.begin().await?;
    let mut batch = BatchState::load(&mut tx, &info.url).await?;
    let (_, checkpoint) = super::read_stamp(&mut tx, &info.url).await?;
    batch.known.gives_definitions = info.binds || checkpoint.is_some_and(|(seq, _)| seq.is_none());
    if let Err(reason) = prepare(&mut batch) {
        return Ok(reason);
    }
    batch.careful = true;
    batch.known.files = files;
    batch.known.fetched = docs;
    batch.known.linked_here = linked_here;
    let a = Applying {
        site,
        reg,
        info,
        caller: &caller,
        remote,
    };
    let wrote = apply_and_log(&a, &mut tx, sub, inc, retry_of, &mut batch).await?;
    batch.known.flush_sync_logs(&mut tx).await?;
    super::linked_here::mark_noted(&mut tx, &info.url, &batch.known.linked_noted).await?;
    tx.commit().await?;
    if wrote {
        if let Some(me) = site.arc() {
            crate::streaming::notifier::notify_consumers(me);
        }
    }
    let status = match batch.told.last().and_then(|o| o.error.as_ref()) {
        None => "Synced",
        Some(_) => "Failed",
    };
    super::story::resynced(site, &info.url, &sub.local_type, &inc.docname, status);
    Ok(status.to_string())
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
