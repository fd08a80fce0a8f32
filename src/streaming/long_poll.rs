//! The consumer's long poll: one pull kept open to each docstream producer, which the producer
//! answers as soon as a log for this site commits. Its latency is that of a push notification
//! without the producer having to reach this site (a shop behind NAT), and the page it brings
//! is applied through the usual pull (its lock, its checks, its checkpoint).

use super::apply::{stored_checkpoint, ProducerInfo};
use super::consumer::{pull_with, ParsedPage, Prefetched, PAGE_SIZE};
use super::remote::PullAsk;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::streaming::Streaming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one long poll came to.
enum Polled {
    /// Poll again.
    Again,
    /// Answered at once with nothing: the producer does not hold pulls (or holds them briefly).
    Quick,
    /// No longer a docstream producer of this site: stop.
    Stop,
}

/// Starts the long poll to `producer_url` unless it runs or the site turned long polls off.
pub fn keep_open(site: &Arc<Site>, producer_url: &str) {
    if site.config.pull_wait_seconds <= 0.0 {
        return;
    }
    let restart = {
        let rt = site.streaming();
        let mut polls = rt.long_polls.lock().expect("long poll set");
        if polls.contains_key(producer_url) {
            return;
        }
        let restart = Arc::new(tokio::sync::Notify::new());
        polls.insert(producer_url.to_string(), restart.clone());
        restart
    };
    let (site, url) = (site.clone(), producer_url.to_string());
    tokio::spawn(async move {
        run(&site, &url, &restart).await;
        site.streaming()
            .long_polls
            .lock()
            .expect("long poll set")
            .remove(&url);
    });
}

/// Makes the long poll to `producer_url` ask again at once: the Event Producer changed (a type
/// added, approved or unsubscribed), and the waiting poll asks for the old list of types.
pub fn restart(site: &Site, producer_url: &str) {
    if let Some(r) = site
        .streaming()
        .long_polls
        .lock()
        .expect("long poll set")
        .get(producer_url)
    {
        r.notify_one();
    }
}

async fn run(site: &Site, url: &str, restart: &tokio::sync::Notify) {
    let wait = Duration::from_secs_f64(site.config.pull_wait_seconds);
    let mut failures = 0u32;
    loop {
        match poll_once(site, url, wait, restart).await {
            Ok(Polled::Again) => failures = 0,
            Ok(Polled::Quick) => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(Polled::Stop) | Err(Error::DoesNotExist(_)) => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                // Retried soon, then less often, never slower than every 10 s: a shop's line
                // that comes back should be used at once.
                let pause = Duration::from_millis(250) * 2u32.saturating_pow(failures.min(6));
                tracing::debug!(producer = %url, "long poll failed (retried in {pause:?}): {e}");
                tokio::time::sleep(pause.min(Duration::from_secs(10))).await;
            }
        }
    }
}

async fn poll_once(
    site: &Site,
    url: &str,
    wait: Duration,
    restart: &tokio::sync::Notify,
) -> Result<Polled> {
    let (info, checkpoint) = ProducerInfo::current(site, url).await?;
    let (Some(after), _) = stored_checkpoint(checkpoint, url)? else {
        // A Frappe producer (it pages by time) has no long poll.
        return Ok(Polled::Stop);
    };
    let types = info.remote_types();
    if types.is_empty() {
        return Ok(Polled::Stop);
    }
    let remote = info.remote(site).await?;
    let history = super::apply::stored_history(site, url, after).await?;
    let started = Instant::now();
    let ask = PullAsk {
        consumer_url: &site.config.url,
        doctypes: &types,
        after_seq: Some(after),
        last_update: "",
        limit: PAGE_SIZE,
        acked_seq: Some(after),
        wait: Some(wait),
        must_bind: info.binds,
        history: Some(&history),
    };
    let asked = remote.pull(&ask);
    // Only the wait is given up (the request dropped with its connection), never the apply
    // below, which holds the pull lock.
    let page = tokio::select! {
        page = asked => page?,
        _ = restart.notified() => return Ok(Polled::Again),
    };
    if page.logs.is_empty()
        && !page.has_more
        && page.last_seq.unwrap_or(after) == after
        && page.history_changed.is_none()
    {
        return Ok(if started.elapsed() < Duration::from_millis(500) {
            Polled::Quick
        } else {
            Polled::Again
        });
    }
    let page = ParsedPage::from(page);
    pull_with(site, url, Some(Prefetched { info, after, page })).await?;
    Ok(Polled::Again)
}
