//! What a consumer tells its terminal: one readable line per applied page, one per failed
//! update and one per resync (site, producer, type, document, outcome). The desk shows the
//! same in the sync logs; these lines let a person watch streaming happen.
//! Must not be the only record of anything: sync logs are.

use crate::site::Site;

/// What became of one update of a page.
#[derive(Debug)]
pub struct Outcome {
    pub doctype: String,
    pub docname: String,
    pub update_type: String,
    /// The error of a failed update.
    pub error: Option<String>,
}

/// Documents named in a page's line before the rest is counted.
const NAMED: usize = 4;

/// Logs a committed page.
pub fn page_applied(site: &Site, producer: &str, outcomes: &[Outcome]) {
    if outcomes.is_empty() {
        return;
    }
    let synced: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    if !synced.is_empty() {
        let mut names: Vec<String> = synced
            .iter()
            .take(NAMED)
            .map(|o| format!("{} {} ({})", o.doctype, o.docname, o.update_type))
            .collect();
        if synced.len() > NAMED {
            names.push(format!("and {} more", synced.len() - NAMED));
        }
        tracing::info!(
            "{} <- {producer}: {} update(s) synced: {}",
            site.name,
            synced.len(),
            names.join(", ")
        );
    }
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        tracing::warn!(
            "{} <- {producer}: {} {} ({}) failed: {}",
            site.name,
            o.doctype,
            o.docname,
            o.update_type,
            o.error.as_deref().unwrap_or_default()
        );
    }
}

/// Logs the outcome of a resync.
pub fn resynced(site: &Site, producer: &str, doctype: &str, docname: &str, status: &str) {
    tracing::info!(
        "{} <- {producer}: resync of {doctype} {docname}: {status}",
        site.name
    );
}
