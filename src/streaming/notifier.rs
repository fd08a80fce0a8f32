//! Push notifications to consumers after commits that wrote update logs: off the request
//! path, coalesced per consumer, and at most one a second to a consumer that has not pulled
//! since it was last told. Best effort: the consumer's interval pull is the guarantee.

use super::remote::RemoteSite;
use crate::error::Result;
use crate::site::Site;
use crate::store;
use crate::streaming::Streaming;

fn text(v: Option<&serde_json::Value>) -> String {
    super::producer::value_text(v)
}

/// Sends `new_event_notification` to every consumer with approved rows, at most one in flight each.
pub fn notify_consumers(site: std::sync::Arc<Site>) {
    super::log_watch::LogWatch::committed(&site);
    if let Some(consumers) = site.streaming().notifier.cached_consumers() {
        for c in consumers {
            site.streaming().notifier.poke(&site, c);
        }
        return;
    }
    tokio::spawn(async move {
        let consumers = match consumers_to_notify(&site).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot list consumers to notify: {e}");
                return;
            }
        };
        site.streaming()
            .notifier
            .remember_consumers(consumers.clone());
        for c in consumers {
            site.streaming().notifier.poke(&site, c);
        }
    });
}

async fn consumers_to_notify(site: &Site) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(&mut conn, r#"SELECT DISTINCT parent FROM "tabEvent Consumer Document Type" WHERE status = 'Approved' AND COALESCE(unsubscribed, 0) = 0"#, &[]).await?;
    Ok(rows.iter().map(|r| text(r.get("parent"))).collect())
}

/// How long the list of consumers to notify is trusted (notifications are best effort: the
/// consumer's interval pull is the guarantee).
const CONSUMER_LIST_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Least time between two notifications to one consumer while writes keep coming.
const MIN_NOTIFY_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// A consumer told of changes that has not pulled since is told again only after this long.
const RENOTIFY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// How many times a notification no pull followed is sent again (after 1, 2, 4 ... seconds,
/// at most [`MAX_RENOTIFY_DELAY`] apart): Frappe's consumer drops a notification that comes
/// while its pull job runs, and a Frappe consumer pulls on nothing else, so the changes of a
/// burst after that pull began would wait for the next write.
const RENOTIFY_TRIES: u32 = 10;
const MAX_RENOTIFY_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// When a consumer was last told, and what followed.
#[derive(Debug, Clone, Copy)]
struct Told {
    at: std::time::Instant,
    /// It has pulled since.
    pulled: bool,
    /// Notifications in a row before this one that no pull followed.
    unanswered: u32,
}

/// Coalesces notifications: one in flight per consumer, and one more if changes came
/// meanwhile; a consumer that has not pulled since it was last told is not told again (its
/// coming pull sees the new changes) until [`RENOTIFY_AFTER`], so idle consumers cost at most
/// one notification a second each, whatever the write rate.
#[derive(Debug, Default)]
pub struct Notifier {
    state: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    /// Per consumer: when it was last told, whether it has pulled since, and how many times in
    /// a row it was told without pulling.
    told: std::sync::Mutex<std::collections::HashMap<String, Told>>,
    consumers: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
    targets: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, RemoteSite)>>,
}

impl Notifier {
    fn cached_consumers(&self) -> Option<Vec<String>> {
        let c = self.consumers.lock().expect("notifier lock");
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < CONSUMER_LIST_TTL)
            .map(|(_, v)| v.clone())
    }

    fn remember_consumers(&self, v: Vec<String>) {
        *self.consumers.lock().expect("notifier lock") = Some((std::time::Instant::now(), v));
    }

    /// Forgets the consumer list (a subscription changed).
    pub fn forget_consumers(&self) {
        *self.consumers.lock().expect("notifier lock") = None;
        self.targets.lock().expect("notifier lock").clear();
    }

    /// Records that a consumer pulled: the next change is worth telling it.
    pub fn pulled(&self, consumer: &str) {
        if let Some(t) = self.told.lock().expect("notifier lock").get_mut(consumer) {
            t.pulled = true;
        }
    }

    /// Marks the consumer told now, unless it need not be: the entry it is told under.
    fn worth_telling(&self, consumer: &str) -> Option<Told> {
        let mut told = self.told.lock().expect("notifier lock");
        let now = std::time::Instant::now();
        match told.get_mut(consumer) {
            Some(t) if waiting(&t.at, t.pulled) => None,
            Some(t) => {
                *t = Told {
                    at: now,
                    pulled: false,
                    unanswered: if t.pulled { 0 } else { t.unanswered + 1 },
                };
                Some(*t)
            }
            None => {
                let t = Told {
                    at: now,
                    pulled: false,
                    unanswered: 0,
                };
                told.insert(consumer.to_string(), t);
                Some(t)
            }
        }
    }

    /// Tells the consumer again later if no pull follows the notification sent as `sent`.
    fn follow_up(site: &std::sync::Arc<Site>, consumer: &str, sent: Told) {
        if sent.unanswered >= RENOTIFY_TRIES {
            return;
        }
        let delay = RENOTIFY_AFTER
            .saturating_mul(1 << sent.unanswered.min(16))
            .min(MAX_RENOTIFY_DELAY);
        let (site, consumer) = (site.clone(), consumer.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let unanswered = site
                .streaming()
                .notifier
                .told
                .lock()
                .expect("notifier lock")
                .get(&consumer)
                .is_some_and(|t| t.at == sent.at && !t.pulled);
            if unanswered {
                site.streaming().notifier.poke(&site, consumer);
            }
        });
    }

    /// True when the consumer was told less than [`RENOTIFY_AFTER`] ago and has not pulled
    /// since: its coming pull sees this change too.
    fn told_and_waiting(&self, consumer: &str) -> bool {
        let told = self.told.lock().expect("notifier lock");
        told.get(consumer).is_some_and(|t| waiting(&t.at, t.pulled))
    }

    fn poke(&self, site: &std::sync::Arc<Site>, consumer: String) {
        // Checked before any task is woken: an idle consumer would otherwise cost a wake-up
        // every MIN_NOTIFY_GAP while writes keep coming, and each write would pay for all of them.
        if self.told_and_waiting(&consumer) {
            return;
        }
        // A consumer that long-polls here hears of the change through its poll.
        if site.streaming().log_watch.hears_by_long_poll(&consumer) {
            return;
        }
        {
            let mut st = self.state.lock().expect("notifier lock");
            if let Some(dirty) = st.get_mut(&consumer) {
                *dirty = true;
                return;
            }
            st.insert(consumer.clone(), false);
        }
        let site = site.clone();
        tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                if let Some(sent) = site.streaming().notifier.worth_telling(&consumer) {
                    match send_notification(&site, &consumer).await {
                        Ok(()) => Notifier::follow_up(&site, &consumer, sent),
                        Err(e) => {
                            tracing::debug!(consumer = %consumer, "notification not delivered (the consumer will pull on its interval): {e}")
                        }
                    }
                }
                {
                    let rt = site.streaming();
                    let mut st = rt.notifier.state.lock().expect("notifier lock");
                    match st.get_mut(&consumer) {
                        Some(dirty) if *dirty => *dirty = false,
                        _ => {
                            st.remove(&consumer);
                            break;
                        }
                    }
                }
                if let Some(rest) = MIN_NOTIFY_GAP.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        });
    }
}

/// A consumer told at `at` that has not pulled since need not be told again yet.
fn waiting(at: &std::time::Instant, pulled: bool) -> bool {
    !pulled && at.elapsed() < RENOTIFY_AFTER
}

async fn send_notification(site: &Site, consumer: &str) -> Result<()> {
    let cached = site
        .streaming()
        .notifier
        .targets
        .lock()
        .expect("notifier lock")
        .get(consumer)
        .cloned();
    let remote = match cached {
        Some((at, r)) if at.elapsed() < CONSUMER_LIST_TTL => r,
        _ => {
            let r = super::remote_with_stored_keys(site, "Event Consumer", consumer).await?;
            site.streaming()
                .notifier
                .targets
                .lock()
                .expect("notifier lock")
                .insert(consumer.to_string(), (std::time::Instant::now(), r.clone()));
            r
        }
    };
    remote
        .call(
            "frappe.event_streaming.doctype.event_producer.event_producer.new_event_notification",
            &[("producer_url", site.config.url.clone())],
        )
        .await?;
    Ok(())
}
