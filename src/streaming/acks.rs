//! What each consumer has acknowledged, kept in memory and written in batches.
//!
//! Every pull acknowledges the logs before it. Written at once, that is one write transaction
//! per pull: with hundreds of consumers woken by one commit, hundreds of commits queued behind
//! the site's writer for every document written. Acknowledgements only ever grow and only
//! decide what may be pruned and what the desk shows, so they wait here and are written together:
//! at most [`FLUSH_EVERY`] later, and before anything on this process reads them.
//! An acknowledgement lost in a crash costs nothing: the consumer's next pull carries it again.

use crate::error::Result;
use crate::site::Site;
use crate::store::{self, Param};
use crate::streaming::Streaming;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Longest an acknowledgement waits in memory.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Acknowledgements not yet written, by consumer URL.
#[derive(Debug, Default)]
pub struct Acks {
    pending: Mutex<HashMap<String, i64>>,
    /// Held while a batch is written, so a reader that flushes sees every earlier batch.
    writing: tokio::sync::Mutex<()>,
    /// Consumers seen pulling by time (Frappe) since the last flush (a pull of theirs is
    /// rare: marking each costs one write per pull).
    by_time: Mutex<HashSet<String>>,
}

impl Acks {
    /// Records that `consumer` has received every log up to `seq`.
    pub fn note(&self, consumer: &str, seq: i64) {
        let mut pending = self.pending.lock().expect("acks lock");
        match pending.get_mut(consumer) {
            Some(s) => *s = (*s).max(seq),
            None => {
                pending.insert(consumer.to_string(), seq);
            }
        }
    }

    /// Records an acknowledgement from a consumer that pulls by time (Frappe's form), which
    /// verifies nothing itself: this site checks what it holds (`verify_consumer`).
    pub fn note_by_time(&self, consumer: &str, seq: i64) {
        self.note(consumer, seq);
        let mut by_time = self.by_time.lock().expect("acks lock");
        by_time.insert(consumer.to_string());
    }

    /// Writes what is pending in one transaction. Rows only move forward, and only for
    /// consumers that still exist (another process may have deleted one meanwhile).
    pub async fn flush(&self, site: &Site) -> Result<()> {
        let _writing = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().expect("acks lock"));
        let by_time = std::mem::take(&mut *self.by_time.lock().expect("acks lock"));
        if batch.is_empty() && by_time.is_empty() {
            return Ok(());
        }
        let written = async {
            let mut tx = site.store.begin().await?;
            for (consumer, seq) in &batch {
                store::execute(
                    &mut tx,
                    r#"INSERT INTO "__consumer_progress" (consumer, acked_seq)
                       SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM "tabEvent Consumer" WHERE name = $1)
                       ON CONFLICT (consumer) DO UPDATE SET acked_seq = CASE WHEN excluded.acked_seq > "__consumer_progress".acked_seq THEN excluded.acked_seq ELSE "__consumer_progress".acked_seq END"#,
                    &[Param::Text(Some(consumer.clone())), Param::Int(Some(*seq))],
                )
                .await?;
            }
            for consumer in &by_time {
                store::execute(
                    &mut tx,
                    r#"INSERT INTO "__consumer_verification" (consumer, by_time)
                       SELECT $1, 1 WHERE EXISTS (SELECT 1 FROM "tabEvent Consumer" WHERE name = $1)
                       ON CONFLICT (consumer) DO UPDATE SET by_time = 1"#,
                    &[Param::text(consumer)],
                )
                .await?;
            }
            tx.commit().await
        }
        .await;
        if written.is_err() {
            // Kept for the next flush rather than lost (a newer note wins).
            for (consumer, seq) in batch {
                self.note(&consumer, seq);
            }
            self.by_time.lock().expect("acks lock").extend(by_time);
        }
        written
    }
}

/// Flushes the site's acknowledgements every [`FLUSH_EVERY`] while the server runs.
pub async fn run_flusher(site: std::sync::Arc<Site>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = site.streaming().acks.flush(&site).await {
            tracing::warn!(site = %site.name, "cannot write consumer acknowledgements: {e}");
        }
    }
}
