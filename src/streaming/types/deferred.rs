//! Streaming's work after a write commits: calls to the other site of a stream, and the
//! pull worker and long polls woken. Failures are logged (an edit for a producer is queued).

use crate::service::hooks::Deferred;
use crate::site::Site;
use crate::streaming::Streaming;
use async_trait::async_trait;

/// Producer: tell a consumer the statuses of its rows.
#[derive(Debug)]
pub struct TellConsumer(pub String);

#[async_trait]
impl Deferred for TellConsumer {
    async fn run(self: Box<Self>, site: &Site) {
        if let Err(e) = crate::streaming::producer::tell_consumer_statuses(site, &self.0).await {
            tracing::warn!(consumer = %self.0, "could not tell the consumer its statuses: {e}");
        }
    }
}

/// Consumer: send an edited Event Producer to its producer (queued when it cannot be reached).
#[derive(Debug)]
pub struct SendToProducer(pub String);

#[async_trait]
impl Deferred for SendToProducer {
    async fn run(self: Box<Self>, site: &Site) {
        let url = &self.0;
        if let Err(e) = crate::streaming::consumer::send_update(site, url).await {
            tracing::warn!(producer = %url, "edit not yet sent to the producer (queued): {e}");
            let _ = crate::streaming::consumer::mark_unsent(site, url).await;
        }
    }
}

/// Consumer: remove the registration on a producer (its Event Producer was deleted).
pub struct Unregister {
    pub producer_url: String,
    pub api_key: String,
    pub api_secret: String,
}

impl std::fmt::Debug for Unregister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unregister({})", self.producer_url)
    }
}

#[async_trait]
impl Deferred for Unregister {
    async fn run(self: Box<Self>, site: &Site) {
        let remote = crate::streaming::remote::RemoteSite::new(
            site.http.clone(),
            &self.producer_url,
            &self.api_key,
            &self.api_secret,
            site.config.max_answer_bytes(),
        );
        if let Err(e) = remote.delete_doc("Event Consumer", &site.config.url).await {
            tracing::warn!(producer = %self.producer_url, "could not delete the Event Consumer on the producer: {e}");
        }
    }
}

/// Consumer: pull now (a subscription was made).
#[derive(Debug)]
pub struct WakePuller;

#[async_trait]
impl Deferred for WakePuller {
    async fn run(self: Box<Self>, site: &Site) {
        site.streaming().pull_wakeup.notify_one();
    }
}

/// Consumer: an Event Producer changed; pull now, and its long poll asks anew with the new
/// list of types.
#[derive(Debug)]
pub struct ProducerChanged(pub String);

#[async_trait]
impl Deferred for ProducerChanged {
    async fn run(self: Box<Self>, site: &Site) {
        crate::streaming::long_poll::restart(site, &self.0);
        site.streaming().pull_wakeup.notify_one();
    }
}
