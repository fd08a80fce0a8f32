//! Event streaming: the producer's update log and pull method, the consumer's handshake, pull
//! and apply, and the HTTP client between sites.

pub mod acks;
pub mod apply;
pub mod condition;
pub mod consumer;
pub mod dashboard;
pub mod diff;
pub mod log_watch;
pub mod long_poll;
pub mod mapping;
pub mod notifier;
pub mod page;
pub mod page_cache;
pub mod producer;
pub mod remote;
pub mod tunnel;
pub mod update_log;

use crate::error::{Error, Result};
use crate::site::Site;

/// The stored `api_key` and decrypted `api_secret` of a document (a User, an Event Producer or
/// an Event Consumer).
pub async fn stored_keys(site: &Site, doctype: &str, name: &str) -> Result<(String, String)> {
    let mut conn = site.store.conn().await?;
    let rows = crate::store::fetch_docs(
        &mut conn,
        &format!(
            "SELECT api_key FROM {} WHERE name = $1",
            crate::store::q(&crate::meta::table_name(doctype))
        ),
        &[crate::store::Param::Text(Some(name.into()))],
    )
    .await?;
    drop(conn);
    let key = rows
        .first()
        .map(|r| producer::value_text(r.get("api_key")))
        .ok_or_else(|| Error::DoesNotExist(format!("{doctype} {name} not found")))?;
    let secret = site
        .decrypt_field(doctype, name, "api_secret")
        .await?
        .unwrap_or_default();
    Ok((key, secret))
}

/// A client for another site, with the keys stored in `doctype` `name`.
pub async fn remote_with_stored_keys(
    site: &Site,
    doctype: &str,
    name: &str,
) -> Result<remote::RemoteSite> {
    let (key, secret) = stored_keys(site, doctype, name).await?;
    let remote = remote::RemoteSite::new(
        site.http.clone(),
        name,
        &key,
        &secret,
        site.config.max_answer_bytes(),
    );
    if doctype == "Event Producer" && tunnel::is_producer_connects(site, name).await? {
        return Ok(remote.through(site.tunnels.clone()));
    }
    // A shop that connects to us and also consumes from us is called back (approval
    // statuses, notifications) over its connection too: it has no other way in.
    if doctype == "Event Consumer" && site.tunnels.is_connected(name) {
        return Ok(remote.through(site.tunnels.clone()));
    }
    Ok(remote)
}
