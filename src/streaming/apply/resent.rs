//! What a producer that pulls by time (Frappe) sends again, and what it sends anew. Frappe
//! re-sends a document's unread logs with a later one (two changes of a document in one pull
//! come back with its older logs), and applying them again rolled the document back and
//! forward, and raised false conflicts over this site's own edits: a log not newer than the
//! last one applied here for its document is passed over, its sync log says so. A Create
//! newer than that, for a document held here from that producer, means the producer's history
//! changed (restored from an older backup, its database reset): with other content it is a
//! conflict, never written over the copy held here.
//! Must not apply anything: `document.rs` does.

use super::*;

/// How the sync log of a log passed over begins.
pub(super) const SENT_AGAIN: &str = "sent again by the producer";

/// The creation of the newest log of `inc`'s document applied here from its producer (this
/// page's included); None when none was.
async fn applied_up_to(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    known: &Known,
) -> Result<Option<String>> {
    let in_page = known
        .synced
        .get(&(sub.local_type.clone(), inc.docname.clone()))
        .filter(|at| !at.is_empty())
        .cloned();
    let stored = store::fetch_docs(
        conn,
        r#"SELECT MAX(log_creation) AS at FROM "tabEvent Sync Log" WHERE event_producer = $1 AND ref_doctype = $2 AND producer_doc = $3 AND status IN ('Synced', 'Resolved')"#,
        &[Param::text(&a.info.url), Param::text(&sub.local_type), Param::text(&inc.docname)],
    )
    .await?
    .first()
    .map(|r| text(r.get("at")))
    .filter(|t| !t.is_empty());
    Ok(in_page.into_iter().chain(stored).max())
}

/// Whether `inc` is a producer's log this site has applied before: by-time producers only,
/// not a repair (which applies the producer's current version on purpose).
pub(super) async fn sent_again(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    known: &Known,
) -> Result<Option<String>> {
    if inc.seq.is_some() || inc.creation.is_empty() || known.repair.is_some() {
        return Ok(None);
    }
    let Some(applied) = applied_up_to(a, conn, sub, inc, known).await? else {
        return Ok(None);
    };
    Ok((inc.creation <= applied).then(|| {
        format!(
            "{SENT_AGAIN}: its log of {} is not newer than the one applied here ({applied}); passed over",
            inc.creation
        )
    }))
}

/// A by-time producer's Create for `local`, a document held here that came from it: the
/// fields its earlier Create had and this one lacks are empty now (Frappe leaves empty fields
/// out of a Create), so `whole` gets them as empty.
pub(super) async fn with_emptied(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    docname: &str,
    whole: &mut Doc,
) -> Result<()> {
    let rows = store::fetch_docs(
        conn,
        r#"SELECT data FROM "tabEvent Sync Log" WHERE event_producer = $1 AND ref_doctype = $2 AND producer_doc = $3 AND update_type = 'Create' AND status IN ('Synced', 'Resolved') ORDER BY creation DESC LIMIT 1"#,
        &[Param::text(&a.info.url), Param::text(&sub.local_type), Param::text(docname)],
    )
    .await?;
    let before: Doc = rows
        .first()
        .and_then(|r| serde_json::from_str(&text(r.get("data"))).ok())
        .unwrap_or_default();
    for k in before.keys() {
        if crate::streaming::definitions::is_field_key(k) && !whole.contains_key(k) {
            whole.insert(k.clone(), Value::Null);
        }
    }
    Ok(())
}
