//! Event Sync Log rows: new ones buffered per page and written together before it commits; retries
//! update their row at once.
//! Must not decide an outcome: it records the one it is given.

use super::*;

/// How a replay's refusal begins: a person decides it, never an automatic retry (a retry would
/// take the producer's version over this site's copy).
pub(super) const HISTORY_CONFLICT: &str = "history changed: ";

/// How the note of a dependency's sync log begins.
pub(super) const FETCHED_AS_DEPENDENCY: &str = "fetched as a dependency";
/// How the note of a repair verification asked for begins.
pub(super) const REPAIRED: &str = "repair:";
/// How the note of the producer's version applied after a person's choice begins.
pub(super) const PRODUCERS_VERSION_APPLIED: &str = "the producer's current version applied";

/// How the note of a sync log begins when this site fetched the document itself (a
/// dependency, a repair, a person's choice after a conflict) rather than applying a log of the
/// producer's: its log_creation is the document's `modified`, not a time of the producer's log,
/// so verification by lists leaves it out of where the producer's log began for this site.
pub const FETCHED_NOTES: [&str; 3] = [FETCHED_AS_DEPENDENCY, REPAIRED, PRODUCERS_VERSION_APPLIED];

/// The fields of a new Event Sync Log row after the standard columns, in the order
/// `write_sync_log` buffers them.
const SYNC_LOG_FIELDS: [&str; 16] = [
    "update_type",
    "ref_doctype",
    "status",
    "event_producer",
    "producer_doc",
    "docname",
    "use_same_name",
    "mapping",
    "data",
    "error",
    "seq",
    "retries",
    "next_retry",
    "note",
    "conflict",
    "log_creation",
];

/// What became of one update.
pub(super) enum Outcome {
    /// Applied whole; the local document's name.
    Applied(String),
    /// Applied but for the fields that conflict with this site's edits (`conflict.rs`), which
    /// wait for a person: the local name and the conflict.
    Conflict(String, Value),
    /// Nothing applied.
    Failed(Error),
}

impl Known {
    /// Writes the buffered sync logs.
    pub(super) async fn flush_sync_logs(&mut self, conn: &mut Conn) -> Result<()> {
        let rows = std::mem::take(&mut self.sync_logs);
        let columns: Vec<String> = crate::meta::STANDARD_COLUMNS
            .iter()
            .chain(&SYNC_LOG_FIELDS)
            .map(|c| store::q(c))
            .collect();
        store::insert_many(conn, r#""tabEvent Sync Log""#, &columns, &rows).await
    }
}

pub(super) fn retry_delay(site: &Site, retries: i64) -> f64 {
    (site.config.retry_base_seconds * 2f64.powi(retries.clamp(0, 30) as i32))
        .min(site.config.retry_max_seconds)
}

/// Records an attempt. A retry updates its row at once; a new row is buffered in `known` and
/// written with the page (see [`Known::flush_sync_logs`]).
pub(super) async fn write_sync_log(
    a: &Applying<'_>,
    conn: &mut Conn,
    sub: &SubscribedType,
    inc: &Incoming,
    outcome: Outcome,
    retry_of: Option<&Doc>,
    known: &mut Known,
) -> Result<String> {
    let (site, info) = (a.site, a.info);
    let now = site.clock.now();
    let note = known
        .note
        .take()
        .filter(|_| !matches!(outcome, Outcome::Failed(_)));
    let (status, local, error, conflict) = match outcome {
        Outcome::Applied(local) => ("Synced", local, None, None),
        Outcome::Conflict(local, c) => {
            let error = super::conflict::message(a, &sub.local_type, &local, &c);
            ("Failed", local, Some(error), Some(c.to_string()))
        }
        // Under the same name the local document is the producer's name, applied or not (as
        // Frappe records it); a person finds the document the failure is about.
        Outcome::Failed(e) => {
            let local = if sub.use_same_name && sub.mapping.is_none() {
                inc.docname.clone()
            } else {
                String::new()
            };
            ("Failed", local, Some(e.message()), None)
        }
    };
    // A person decides these, never an automatic retry.
    let waiting = error.as_deref().is_some_and(|e| {
        e.starts_with("waiting on ")
            || e.starts_with(HISTORY_CONFLICT)
            || e.starts_with(super::conflict::CONFLICT)
    });
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
            r#"UPDATE "tabEvent Sync Log" SET status = $1, error = $2, retries = $3, next_retry = $4, docname = $5, modified = $6, note = $7, conflict = $8 WHERE name = $9"#,
            &[Param::Text(Some(status.into())), Param::Text(error), Param::Int(Some(retries)), Param::Text(next_retry), Param::Text(Some(local).filter(|l| !l.is_empty())), Param::Text(Some(now)), Param::Text(note), Param::Text(conflict), Param::Text(Some(text(prev.get("name"))))],
        )
        .await?;
        return Ok(text(prev.get("name")));
    }
    let name = crate::service::naming::hash_name();
    let data = match &inc.raw_data {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    if status == "Synced" {
        let at = known
            .synced
            .entry((sub.local_type.clone(), inc.docname.clone()))
            .or_default();
        if inc.creation > *at {
            *at = inc.creation.clone();
        }
    }
    let now = Param::Text(Some(now));
    let owner = Param::Text(Some(info.user.clone()));
    known.sync_logs.push(vec![
        Param::Text(Some(name.clone())),
        owner.clone(),
        now.clone(),
        now,
        owner,
        Param::Int(Some(0)),
        Param::Int(Some(0)),
        Param::Text(Some(inc.update_type.clone())),
        Param::Text(Some(sub.local_type.clone())),
        Param::Text(Some(status.into())),
        Param::Text(Some(info.url.clone())),
        Param::Text(Some(inc.docname.clone())),
        Param::Text(Some(local).filter(|l| !l.is_empty())),
        Param::Int(Some(sub.use_same_name as i64)),
        Param::Text(sub.mapping.as_ref().map(|m| m.name.clone())),
        Param::Text(data),
        Param::Text(error),
        Param::Int(inc.seq),
        Param::Int(Some(0)),
        Param::Text(next_retry),
        Param::Text(note),
        Param::Text(conflict),
        Param::Text(Some(inc.creation.clone()).filter(|c| !c.is_empty())),
    ]);
    Ok(name)
}
