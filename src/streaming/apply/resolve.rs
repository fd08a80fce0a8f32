//! A person's choice on a conflict (`conflict.rs`): keep this site's version or take the
//! producer's. The sync log records who chose what and when, and the updates of the document
//! that waited on it are applied.
//! Must not choose for a person: it runs only when asked, for a sync log holding a conflict.

use super::*;
use crate::streaming::local_edits;

/// Which version a person keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// This site's values stay, and stay marked as edited here.
    Local,
    /// The producer's values are written over this site's (a Delete deletes).
    Producer,
    /// This site's document stays as it is and no longer follows the producer; the
    /// producer's goes in under a new name, which its later updates follow.
    Both,
}

impl Keep {
    /// Reads `local` or `producer`.
    pub fn parse(s: &str) -> Result<Keep> {
        match s {
            "local" => Ok(Keep::Local),
            "producer" => Ok(Keep::Producer),
            "both" => Ok(Keep::Both),
            other => Err(Error::Validation(format!(
                "keep must be \"local\" (this site's version), \"producer\" (the producer's) or \"both\", not {other:?}"
            ))),
        }
    }
}

/// Resolves the conflict held by sync log `name` as `user` chose; the sync log's new status.
pub async fn resolve_conflict(site: &Site, user: &str, name: &str, keep: Keep) -> Result<String> {
    let reg = site.meta();
    let log_type = reg.get("Event Sync Log")?;
    let mut conn = site.store.conn().await?;
    let entry = load_doc(&mut conn, &reg, &log_type, name)
        .await?
        .ok_or_else(|| Error::DoesNotExist(format!("Event Sync Log {name} not found")))?;
    drop(conn);
    let conflict: Value = serde_json::from_str(&text(entry.get("conflict"))).unwrap_or_default();
    if text(entry.get("status")) != "Failed" || conflict.is_null() {
        return Err(Error::Validation(format!(
            "Event Sync Log {name} holds no open conflict (its status is {})",
            text(entry.get("status"))
        )));
    }
    let producer = text(entry.get("event_producer"));
    let info = ProducerInfo::load(site, &producer).await?;
    let doctype = text(entry.get("ref_doctype"));
    let local = text(entry.get("docname"));
    let dt = reg.get(&doctype)?;
    let fields: Vec<(String, Value)> = conflict["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (text(f.get("field")), f["incoming"].clone()))
        .collect();
    let names: Vec<String> = fields.iter().map(|(f, _)| f.clone()).collect();
    let kind = conflict["kind"].as_str().unwrap_or("update");
    let caller = site.caller_for(&info.user).await?;
    let now = site.clock.now();
    let mut tx = site.store.begin().await?;
    let mut kept_as = None;
    let (status, what) = match keep {
        Keep::Both if kind == "delete" => {
            return Err(Error::Validation(
                "the producer deleted this document: keep this site's version or take the producer's (delete it)".into(),
            ));
        }
        Keep::Both if dt.autoname.trim().starts_with("field:") => {
            return Err(Error::Validation(format!(
                "{doctype} is named by its field {}: two documents cannot both be {local}; keep one version, or change this site's document's {} (rename it), then resync",
                dt.autoname.trim().trim_start_matches("field:"),
                dt.autoname.trim().trim_start_matches("field:")
            )));
        }
        Keep::Both => {
            let new_name = free_name(&mut tx, &dt, &local).await?;
            store::execute(
                &mut tx,
                r#"INSERT INTO "__kept_both" (producer, ref_doctype, remote_name, local_name) VALUES ($1, $2, $3, $4)"#,
                &[
                    Param::text(&producer),
                    Param::text(&doctype),
                    Param::text(&text(entry.get("producer_doc"))),
                    Param::text(&new_name),
                ],
            )
            .await?;
            // This site's document is its own from now on.
            local_edits::clear(&mut tx, &doctype, &local, None).await?;
            kept_as = Some(new_name);
            ("Resolved", "kept both versions")
        }
        Keep::Local => {
            // A Create's differences were never edits here; from now on they are.
            local_edits::keep(&mut tx, &doctype, &local, &names, &now).await?;
            ("Resolved", "kept this site's version")
        }
        Keep::Producer => {
            let w = Write {
                site,
                reg: &reg,
                caller: &caller,
                dt: &dt,
            };
            let flags = WriteFlags {
                ignore_permissions: true,
                set_read_only: true,
                keep_name: true,
                origin: Some(info.url.clone()),
                ..Default::default()
            };
            if kind == "delete" {
                documents::delete_in(&w, &mut tx, &local, &flags).await?;
            } else {
                let patch: Doc = fields.into_iter().collect();
                documents::update_in(&w, &mut tx, &local, patch, &flags).await?;
                local_edits::clear(&mut tx, &doctype, &local, Some(&names)).await?;
            }
            ("Synced", "took the producer's version")
        }
    };
    let mut resolution = format!("{user} {what} of {} at {now}", names.join(", "));
    if let Some(n) = &kept_as {
        resolution.push_str(&format!(
            ": this site's stays {local}, the producer's is {n} and its updates follow it there"
        ));
    }
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Sync Log" SET status = $1, resolution = $2, resolved_by = $3, resolved_at = $4, modified = $5, next_retry = NULL WHERE name = $6 AND status = 'Failed'"#,
        &[
            Param::text(status),
            Param::Text(Some(resolution)),
            Param::text(user),
            Param::text(&now),
            Param::text(&now),
            Param::text(name),
        ],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(sync_log = %name, %user, "conflict resolved: {what}");
    // What was written goes on to this site's consumers now, not at their next pull by time.
    if !matches!(keep, Keep::Local) {
        if let Some(me) = site.arc() {
            crate::streaming::notifier::notify_consumers(me);
        }
    }
    let remote = crate::streaming::consumer::remote_for(site, &producer).await?;
    if kept_as.is_some() {
        let found = format!("kept beside this site's {doctype} {local}");
        let producer_doc = text(entry.get("producer_doc"));
        super::repair::apply_current(site, &info, &remote, &doctype, &producer_doc, &found).await?;
    }
    super::resync::retry_waiting(site, &reg, &info, &remote, name).await?;
    Ok(status.to_string())
}

/// The first of `name-1`, `name-2`, ... that no document of `dt` has.
async fn free_name(conn: &mut Conn, dt: &DocType, name: &str) -> Result<String> {
    for n in 1..1000 {
        let candidate = format!("{name}-{n}");
        if !store::row_exists(conn, dt, &Value::String(candidate.clone())).await? {
            return Ok(candidate);
        }
    }
    Err(Error::Validation(format!(
        "no free name beside {} {name}: rename this site's document, then resync",
        dt.name
    )))
}
