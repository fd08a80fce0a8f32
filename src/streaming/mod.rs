//! Event streaming: the producer's update log and pull method, the consumer's handshake, pull
//! and apply, and the HTTP client between sites.

pub mod acks;
pub mod apply;
pub mod condition;
pub mod consumer;
pub mod dashboard;
pub mod definitions;
pub mod digest;
pub mod history;
pub mod leave_out;
pub mod local_edits;
pub mod log_watch;
pub mod long_poll;
pub mod mapping;
pub mod mapping_templates;
pub mod notifier;
pub mod page;
pub mod page_cache;
pub mod peer_metrics;
pub mod producer;
pub mod remote;
pub mod tunnel;
mod types;
pub mod update_log;
pub mod verify;
pub mod verify_by_list;
pub mod verify_consumer;

use crate::error::{Error, Result};
use crate::site::Site;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Streaming's state of one running site, kept among the site's extensions.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Coalesces push notifications to this site's consumers.
    pub notifier: notifier::Notifier,
    /// Pull pages shared between consumers asking for the same logs.
    pub pages: page_cache::PageCache,
    /// Producers as this site's pulls last read them.
    pub producer_infos: apply::ProducerInfos,
    /// Consumers' acknowledgements not yet written.
    pub acks: acks::Acks,
    /// Wakes long-poll pulls waiting for new update logs.
    pub log_watch: log_watch::LogWatch,
    /// Wakes the pull worker (a producer notified us, or a pull was asked for).
    pub pull_wakeup: tokio::sync::Notify,
    /// Requests waiting for producers that connect to this site (shops behind NAT).
    pub tunnels: Arc<tunnel::TunnelHub>,
    /// Producers this site keeps a long-poll pull open to, each with what restarts it.
    pub long_polls: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    pull_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Since when the worker's pulls of each producer have failed (cleared by a success).
    pub unreachable_since: Mutex<HashMap<String, std::time::Instant>>,
    /// The restore this site's database came from (read once).
    pub restored: tokio::sync::OnceCell<history::Restored>,
}

impl Runtime {
    /// The in-process lock that keeps one pull per producer at a time.
    pub fn pull_lock(&self, producer: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pull_locks
            .lock()
            .expect("pull locks")
            .entry(producer.to_string())
            .or_default()
            .clone()
    }
}

/// Registers streaming's types and the update log at the write path's hook points.
pub fn register(hooks: &mut crate::service::hooks::Hooks) {
    types::register(hooks);
}

/// A site's streaming state.
pub trait Streaming {
    /// Streaming's state of this site.
    fn streaming(&self) -> Arc<Runtime>;
}

impl Streaming for Site {
    fn streaming(&self) -> Arc<Runtime> {
        self.extensions.get_or_default()
    }
}

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
        return Ok(remote.through(site.streaming().tunnels.clone()));
    }
    // A shop that connects to us and also consumes from us is called back (approval
    // statuses, notifications) over its connection too: it has no other way in.
    if doctype == "Event Consumer" && site.streaming().tunnels.is_connected(name) {
        return Ok(remote.through(site.streaming().tunnels.clone()));
    }
    Ok(remote)
}
