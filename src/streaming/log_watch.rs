//! Long-poll pulls: a pull that asked to `wait` sleeps here, before its page is read, until a
//! log past its checkpoint commits or its time runs out. A waiting pull holds no database
//! connection and no lock: one watch channel of the highest committed seq wakes them all, and
//! that seq is read once per burst of commits, only while someone waits.

use crate::error::Result;
use crate::site::Site;
use crate::streaming::Streaming;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a waiting pull re-reads the seq on PostgreSQL, where another process serving the
/// same site may have written the log (its commits do not reach this process's channel).
const SHARED_STORE_RECHECK: Duration = Duration::from_millis(250);
/// How long after its last long poll a consumer is still taken to be long-polling (it applies
/// the page its poll brought, then asks again). A consumer that long-polls is told nothing by
/// push: a notification would only make it pull twice.
const LONG_POLL_GRACE: Duration = Duration::from_secs(2);
/// Wake-up delay per waiting pull when several wait ...
const CROWD_DELAY_PER_PULL: Duration = Duration::from_micros(500);
/// ... and the most it comes to (1,000 waiting pulls and more).
const MAX_CROWD_DELAY: Duration = Duration::from_millis(100);

/// The highest committed seq, watched by waiting pulls, and who is waiting.
#[derive(Debug)]
pub struct LogWatch {
    seq: watch::Sender<i64>,
    /// A refresh runs (true) and another was asked for meanwhile (the bool inside).
    refresh: Mutex<Option<bool>>,
    /// Consumers with a pull waiting here, and how many.
    waiting: Mutex<HashMap<String, usize>>,
    /// When each consumer's long poll last began or ended here.
    long_polled: Mutex<HashMap<String, std::time::Instant>>,
    /// The PostgreSQL re-check task runs.
    rechecking: std::sync::atomic::AtomicBool,
}

impl Default for LogWatch {
    fn default() -> Self {
        LogWatch {
            seq: watch::channel(0).0,
            refresh: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            long_polled: Mutex::new(HashMap::new()),
            rechecking: Default::default(),
        }
    }
}

/// Marks a consumer as waiting while it lives (a pull dropped when its client goes away
/// unmarks it too).
struct Waiting<'a> {
    watch: &'a LogWatch,
    consumer: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.watch.long_polled_now(&self.consumer);
        let mut w = self.watch.waiting.lock().expect("log watch lock");
        if let Some(n) = w.get_mut(&self.consumer) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.consumer);
            }
        }
    }
}

/// The newest committed seq, read on a connection given back at once.
async fn newest_seq(site: &Site) -> Result<i64> {
    let mut conn = site.store.conn().await?;
    super::update_log::current_seq(&mut conn).await
}

impl LogWatch {
    /// True while the consumer has a pull waiting here, or its long poll came and went less
    /// than [`LONG_POLL_GRACE`] ago (it is applying what it brought and will ask again): it
    /// needs no push notification. Once it stops long-polling, notifications resume.
    pub fn hears_by_long_poll(&self, consumer: &str) -> bool {
        self.waiting
            .lock()
            .expect("log watch lock")
            .contains_key(consumer)
            || self
                .long_polled
                .lock()
                .expect("log watch lock")
                .get(consumer)
                .is_some_and(|at| at.elapsed() < LONG_POLL_GRACE)
    }

    fn long_polled_now(&self, consumer: &str) {
        let mut l = self.long_polled.lock().expect("log watch lock");
        match l.get_mut(consumer) {
            Some(at) => *at = std::time::Instant::now(),
            None => {
                l.insert(consumer.to_string(), std::time::Instant::now());
            }
        }
    }

    /// Ends every wait now and lets none begin (the server is stopping: it waits for the
    /// requests in flight, which waiting pulls would hold up).
    pub fn close(&self) {
        self.seq.send_replace(i64::MAX);
    }

    /// Number of pulls waiting now.
    pub fn waiting_pulls(&self) -> usize {
        self.waiting.lock().expect("log watch lock").values().sum()
    }

    /// After a commit that wrote logs: wakes the pulls waiting for them (nothing to do, and no
    /// query, when none waits).
    pub fn committed(site: &Arc<Site>) {
        let watch = &site.streaming().log_watch;
        if watch.seq.receiver_count() == 0 {
            return;
        }
        {
            let mut r = watch.refresh.lock().expect("log watch lock");
            if let Some(again) = r.as_mut() {
                *again = true;
                return;
            }
            *r = Some(false);
        }
        let site = site.clone();
        tokio::spawn(async move {
            loop {
                // Many waiting pulls (a producer of many consumers) are woken a little later,
                // together: each then takes the commits of that moment in one page, instead of
                // every consumer pulling once per commit.
                let crowd = site.streaming().log_watch.waiting_pulls() as u32;
                if crowd > 1 {
                    tokio::time::sleep((CROWD_DELAY_PER_PULL * crowd).min(MAX_CROWD_DELAY)).await;
                }
                if let Err(e) = site.streaming().log_watch.publish(&site).await {
                    tracing::warn!("cannot read the newest update log seq: {e}");
                }
                let rt = site.streaming();
                let mut r = rt.log_watch.refresh.lock().expect("log watch lock");
                match r.as_mut() {
                    Some(again) if *again => *again = false,
                    _ => {
                        *r = None;
                        break;
                    }
                }
            }
        });
    }

    async fn publish(&self, site: &Site) -> Result<i64> {
        let seq = newest_seq(site).await?;
        self.seq.send_if_modified(|s| {
            let rose = seq > *s;
            *s = (*s).max(seq);
            rose
        });
        Ok(seq)
    }

    /// Waits until a log after `after` has committed or `until` comes; true if one has. A
    /// request that waits is marked (see [`LONG_POLL_WAITED`]).
    pub async fn wait_past(
        &self,
        site: &Site,
        consumer: &str,
        after: i64,
        until: Instant,
    ) -> Result<bool> {
        self.long_polled_now(consumer);
        // The channel only ever holds a seq that has committed: a consumer behind it has logs
        // to read without asking the database (the usual case of a busy consumer).
        if *self.seq.borrow() > after {
            return Ok(true);
        }
        let mut rx = self.seq.subscribe();
        // Subscribed before the seq is read, so a commit between the two still wakes us.
        // (Read, not published: publishing would wake the others before their delay.)
        if newest_seq(site).await? > after {
            return Ok(true);
        }
        *self
            .waiting
            .lock()
            .expect("log watch lock")
            .entry(consumer.to_string())
            .or_default() += 1;
        let _waiting = Waiting {
            watch: self,
            consumer: consumer.to_string(),
        };
        // The request waits: its time is the producer's quiet, not its latency.
        let _ = LONG_POLL_WAITED.try_with(|w| w.set(true));
        if site.store.dialect() == crate::store::Dialect::Postgres {
            self.start_rechecks(site);
        }
        loop {
            if *rx.borrow_and_update() > after {
                return Ok(true);
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(false) },
                _ = tokio::time::sleep_until(until) => return Ok(false),
            }
        }
    }

    /// On PostgreSQL another process serving the site may write the log, and its commits do
    /// not reach this channel: one task re-reads the seq for all waiting pulls while any waits.
    fn start_rechecks(&self, site: &Site) {
        if self
            .rechecking
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let Some(site) = site.arc() else {
            self.rechecking
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return;
        };
        tokio::spawn(async move {
            let watch = &site.streaming().log_watch;
            loop {
                while watch.seq.receiver_count() > 0 {
                    tokio::time::sleep(SHARED_STORE_RECHECK).await;
                    if let Err(e) = watch.publish(&site).await {
                        tracing::warn!("cannot read the newest update log seq: {e}");
                    }
                }
                watch
                    .rechecking
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                // A pull that began waiting just now saw the flag still set: carry on for it.
                if watch.seq.receiver_count() == 0
                    || watch
                        .rechecking
                        .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    break;
                }
            }
        });
    }
}

tokio::task_local! {
    /// Set when the request running in this task waited in a long poll: the HTTP layer keeps
    /// such requests out of its latency histogram.
    pub static LONG_POLL_WAITED: std::cell::Cell<bool>;
}
