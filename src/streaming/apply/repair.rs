//! Repairs that verification (`streaming::verify`) asks for: the producer's current document,
//! fetched and applied through the ordinary apply path as a Create (a document here is
//! updated to match, with the conflict rules of `conflict.rs`), its sync log saying it was a
//! repair.
//! Must not decide what to repair: verification does.

use super::*;

/// Applies the producer's current copy of `name` (local type `local_type`); the status of its
/// sync log, or why no repair was made (a Failed sync of the document is open).
pub async fn repair(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    local_type: &str,
    name: &str,
    found: &str,
) -> Result<String> {
    apply_producers(site, info, remote, local_type, name, found, true).await
}

/// Applies the producer's current copy as a person asked (after a conflict resolved by
/// keeping both): updates that waited on the conflict do not stop it.
pub(super) async fn apply_current(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    local_type: &str,
    name: &str,
    why: &str,
) -> Result<String> {
    apply_producers(site, info, remote, local_type, name, why, false).await
}

async fn apply_producers(
    site: &Site,
    info: &ProducerInfo,
    remote: &RemoteSite,
    local_type: &str,
    name: &str,
    found: &str,
    unless_failed: bool,
) -> Result<String> {
    let sub = info
        .types
        .iter()
        .find(|t| t.local_type == local_type && !t.unsubscribed)
        .cloned()
        .ok_or_else(|| {
            Error::Validation(format!(
                "{local_type} is no longer subscribed from {}",
                info.url
            ))
        })?;
    let doc = remote.get_doc(&sub.remote_type, name).await?;
    let inc = Incoming::from_log(json!({
        "update_type": "Create", "ref_doctype": sub.remote_type, "docname": name,
        "data": doc.to_string(), "seq": null, "origin": info.url,
        // The version applied is the one last modified then (what verification compares).
        "creation": doc.get("modified"),
    }));
    let key = (local_type.to_string(), name.to_string());
    let note = match unless_failed {
        true => {
            format!(
                "{REPAIRED} verification found it {found}; the producer's current version applied"
            )
        }
        false => format!("{PRODUCERS_VERSION_APPLIED}, {found}"),
    };
    let prepare = |batch: &mut BatchState| {
        if !unless_failed {
            batch.failed.remove(&key);
        }
        if let Some(blocker) = batch.failed.get(&key) {
            // A person decides that document first; a repair would only queue behind it.
            return Err(format!(
                "not made: Event Sync Log {blocker} of it failed and waits for a person"
            ));
        }
        batch.known.repair = Some(note);
        Ok(())
    };
    super::resync::apply_alone(site, info, remote, (&sub, &inc), None, prepare).await
}
