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
}

impl Keep {
    /// Reads `local` or `producer`.
    pub fn parse(s: &str) -> Result<Keep> {
        match s {
            "local" => Ok(Keep::Local),
            "producer" => Ok(Keep::Producer),
            other => Err(Error::Validation(format!(
                "keep must be \"local\" (this site's version) or \"producer\" (the producer's), not {other:?}"
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
    let (status, what) = match keep {
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
    let resolution = format!("{user} {what} of {} at {now}", names.join(", "));
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
    let remote = crate::streaming::consumer::remote_for(site, &producer).await?;
    super::resync::retry_waiting(site, &reg, &info, &remote, name).await?;
    Ok(status.to_string())
}
