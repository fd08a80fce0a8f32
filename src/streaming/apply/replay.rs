//! What the consumer does when a producer's history changed (`streaming::history`): the event
//! is recorded on the producer's checkpoint row (the dashboard shows it until a person clears
//! it), and the producer's kept logs are applied again from the start. A log whose seq and
//! data match one already Synced here is passed over; a Create for a document received from
//! this producer before under that name, with other content, is a Failed sync that keeps this
//! site's copy: never overwritten in place.
//! Must not talk to the producer.

use super::*;

/// The internal setting holding the identity of a producer's log at the checkpoint, as
/// `"<seq> <identity>"` (the seq it is the identity at, so that a checkpoint and an identity
/// read apart, while another process moves them, are never sent as a pair).
pub fn history_key(url: &str) -> String {
    format!("history:{url}")
}

/// The internal setting holding the checkpoint a replay runs up to.
fn replay_key(url: &str) -> String {
    format!("replay_until:{url}")
}

/// The identity at checkpoint `after` ("" when none is known for it).
pub async fn stored_history(site: &Site, url: &str, after: i64) -> Result<String> {
    let mut conn = site.store.conn().await?;
    let stored = store::get_setting(&mut conn, &history_key(url)).await?;
    Ok(stored
        .as_deref()
        .and_then(|s| s.split_once(' '))
        .filter(|(seq, _)| seq.parse::<i64>().ok() == Some(after))
        .map(|(_, id)| id.to_string())
        .unwrap_or_default())
}

/// Records that `url`'s history changed and starts the replay, in one transaction.
pub async fn history_changed(
    site: &Site,
    url: &str,
    changed: &crate::streaming::page::HistoryChanged,
    after: i64,
) -> Result<()> {
    let mut tx = site.store.begin().await?;
    let until = replay_until(&mut tx, url).await?.unwrap_or(0).max(after);
    let note = format!(
        "{}: {} (the producer's newest log is {}; this site had applied up to {after}). Its kept update logs are applied again from the start: what matches what was received is passed over, a document it now sends under a name received before with other content is a Failed sync that keeps this site's copy. Clear this field once checked.",
        site.clock.now(),
        changed.reason,
        changed.newest_seq
    );
    // Only from the checkpoint the answer was about: another process may have moved it.
    let moved = store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer Last Update" SET last_seq = 0, history_changed = $1 WHERE name = $2 AND last_seq = $3"#,
        &[
            Param::Text(Some(note)),
            Param::Text(Some(url.into())),
            Param::Int(Some(after)),
        ],
    )
    .await?;
    if moved == 0 {
        tx.rollback().await?;
        return Ok(());
    }
    store::set_setting(&mut tx, &history_key(url), "").await?;
    store::set_setting(&mut tx, &replay_key(url), &until.to_string()).await?;
    tx.commit().await?;
    tracing::warn!(producer = url, after, reason = %changed.reason, "the producer's history changed: applying its logs again from the start");
    Ok(())
}

/// The checkpoint a replay of `url` runs up to, if one runs.
pub(super) async fn replay_until(conn: &mut Conn, url: &str) -> Result<Option<i64>> {
    Ok(store::get_setting(conn, &replay_key(url))
        .await?
        .and_then(|v| v.parse().ok())
        .filter(|v: &i64| *v > 0))
}

/// Ends the replay once the checkpoint reached where it ran to.
pub(super) async fn end_replay(conn: &mut Conn, url: &str) -> Result<()> {
    store::set_setting(conn, &replay_key(url), "0").await?;
    // What the replay could not tell apart is found by verification, due now.
    crate::streaming::verify::due_now(conn, url).await
}

/// True when the log at this seq was applied here before with the same data.
pub(super) async fn applied_before(conn: &mut Conn, url: &str, inc: &Incoming) -> Result<bool> {
    let Some(seq) = inc.seq else { return Ok(false) };
    let rows = store::fetch_docs(
        conn,
        r#"SELECT data FROM "tabEvent Sync Log" WHERE event_producer = $1 AND seq = $2 AND status = 'Synced' LIMIT 1"#,
        &[Param::Text(Some(url.into())), Param::Int(Some(seq))],
    )
    .await?;
    let data = match &inc.raw_data {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(rows.first().is_some_and(|r| text(r.get("data")) == data))
}

/// During a replay: refuses a Create whose document differs from the copy received before
/// under that name (the producer gave the name out again).
pub(super) async fn check_same_document(
    a: &Applying<'_>,
    conn: &mut Conn,
    dt: &DocType,
    local: &str,
    incoming: &Doc,
) -> Result<()> {
    let Some(current) = load_doc(conn, a.reg, dt, local).await? else {
        return Ok(());
    };
    let differ: Vec<String> = dt
        .fields
        .iter()
        .filter(|f| f.has_column())
        .filter(|f| match incoming.get(&f.fieldname) {
            None => false,
            Some(v) => {
                let w = current.get(&f.fieldname).unwrap_or(&Value::Null);
                !(super::echo::same_value(v, w)
                    || (super::echo::is_empty(v) && super::echo::is_empty(w)))
            }
        })
        .map(|f| f.fieldname.clone())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::Validation(format!(
        "{HISTORY_CONFLICT}{} sends {} {local} again as another document ({} differ); this site's copy is kept and is not retried automatically: compare both, then Resync to take the producer's version over it, or rename this site's copy first to keep both",
        a.info.url,
        dt.name,
        differ.join(", ")
    )))
}
