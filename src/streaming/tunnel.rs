//! A producer that connects (a shop behind NAT): the hosted consumer cannot open connections
//! to it, so the shop keeps polling the hosted site (`docstream.tunnel.poll`) and every request
//! the consumer would have sent it (handshake, pulls, long polls, dependency fetches, resync,
//! files) waits here until a poll carries it to the shop; the shop runs it on itself and sends
//! the answer back (`docstream.tunnel.reply`). The requests are the same as over a direct
//! line, so every guarantee of a direct pull holds unchanged.

use crate::error::{Error, Result};
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{self, Param};
use crate::streaming::Streaming;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// The `connection` of an Event Producer reached through the producer's own connection.
pub const PRODUCER_CONNECTS: &str = "Producer connects";

/// A shop that has not polled for this long is away: requests for it fail at once.
const AWAY_AFTER: Duration = Duration::from_secs(40);
/// A request that gets no answer in this long (unless it says otherwise) fails.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a poll is held waiting for requests.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// One request for the shop, as a poll carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelRequest {
    pub id: u64,
    pub method: String,
    /// Path and query, e.g. `/api/method/frappe.ping`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
}

/// The shop's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelReply {
    pub id: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
}

#[derive(Default)]
struct Link {
    queue: VecDeque<TunnelRequest>,
    /// Handed to a poll and not answered yet: handed again if the shop says it did not get
    /// them (that poll's answer was lost on the way).
    handed: std::collections::BTreeMap<u64, TunnelRequest>,
    answers: HashMap<u64, oneshot::Sender<TunnelReply>>,
    wake: Arc<Notify>,
    polls_open: usize,
    last_seen: Option<Instant>,
    handshaking: bool,
}

impl Link {
    fn connected(&self) -> bool {
        self.polls_open > 0 || self.last_seen.is_some_and(|t| t.elapsed() < AWAY_AFTER)
    }
}

/// The links of the producers that connect to this site, by producer URL.
pub struct TunnelHub {
    links: Mutex<HashMap<String, Link>>,
    next_id: std::sync::atomic::AtomicU64,
    closing: std::sync::atomic::AtomicBool,
}

impl Default for TunnelHub {
    fn default() -> Self {
        // Ids keep growing across restarts (the shop reports the highest it got).
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        TunnelHub {
            links: Mutex::new(HashMap::new()),
            next_id: start.into(),
            closing: Default::default(),
        }
    }
}

impl std::fmt::Debug for TunnelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TunnelHub")
    }
}

/// The encoding of bodies in tunnelled requests and answers.
pub fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl TunnelHub {
    /// Answers every held poll now, and later ones at once (the server is stopping).
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for l in self.links.lock().expect("tunnel lock").values() {
            l.wake.notify_one();
        }
    }

    /// True while the producer polls (or did within [`AWAY_AFTER`]).
    pub fn is_connected(&self, producer: &str) -> bool {
        self.links
            .lock()
            .expect("tunnel lock")
            .get(producer)
            .is_some_and(Link::connected)
    }

    /// Sends a request to the producer through its link and waits for the answer.
    pub async fn forward(
        &self,
        producer: &str,
        req: reqwest::Request,
    ) -> std::result::Result<reqwest::Response, String> {
        let timeout = req.timeout().copied().unwrap_or(DEFAULT_TIMEOUT);
        let path = match req.url().query() {
            Some(q) => format!("{}?{q}", req.url().path()),
            None => req.url().path().to_string(),
        };
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .map(|b| b64().encode(b))
            .unwrap_or_default();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        {
            let mut links = self.links.lock().expect("tunnel lock");
            let link = links.entry(producer.to_string()).or_default();
            if !link.connected() {
                return Err("the producer has not connected (it opens the connection: waiting for it to connect)".into());
            }
            link.queue.push_back(TunnelRequest {
                id,
                method: req.method().as_str().to_string(),
                path,
                headers,
                body,
            });
            link.answers.insert(id, tx);
            link.wake.notify_one();
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        let reply = match answer {
            Ok(Ok(r)) => r,
            _ => {
                let mut links = self.links.lock().expect("tunnel lock");
                if let Some(l) = links.get_mut(producer) {
                    l.answers.remove(&id);
                    l.handed.remove(&id);
                    l.queue.retain(|r| r.id != id);
                }
                return Err("no answer through the producer's connection in time".into());
            }
        };
        let body = b64()
            .decode(reply.body.as_bytes())
            .map_err(|e| format!("the producer's answer is not base64: {e}"))?;
        let mut resp = axum::http::Response::builder().status(reply.status);
        for (k, v) in &reply.headers {
            resp = resp.header(k, v);
        }
        resp.body(body)
            .map(reqwest::Response::from)
            .map_err(|e| format!("the producer's answer is not valid HTTP: {e}"))
    }

    /// Waits up to `wait` for requests for the producer and hands them out; `received` is
    /// the highest request id the shop has got (those after it that were handed out are
    /// handed again).
    async fn take(
        &self,
        producer: &str,
        wait: Duration,
        received: Option<u64>,
    ) -> Vec<TunnelRequest> {
        let until = tokio::time::Instant::now() + wait.min(MAX_POLL_WAIT);
        let wake = {
            let mut links = self.links.lock().expect("tunnel lock");
            let link = links.entry(producer.to_string()).or_default();
            if let Some(got) = received {
                let lost = link.handed.split_off(&(got + 1));
                link.handed.clear();
                for (_, r) in lost.into_iter().rev() {
                    link.queue.push_front(r);
                }
            }
            link.wake.clone()
        };
        let out = loop {
            let ready: Vec<TunnelRequest> = {
                let mut links = self.links.lock().expect("tunnel lock");
                let link = links.entry(producer.to_string()).or_default();
                let ready: Vec<TunnelRequest> = link.queue.drain(..).collect();
                for r in &ready {
                    link.handed.insert(r.id, r.clone());
                }
                ready
            };
            if !ready.is_empty() || self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                break ready;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => break Vec::new(),
            }
        };
        out
    }

    fn answer(&self, producer: &str, reply: TunnelReply) -> Result<()> {
        let tx = self
            .links
            .lock()
            .expect("tunnel lock")
            .get_mut(producer)
            .and_then(|l| {
                l.handed.remove(&reply.id);
                l.answers.remove(&reply.id)
            });
        match tx {
            // The request may have timed out meanwhile: nothing waits for the answer then.
            Some(tx) => {
                let _ = tx.send(reply);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn start_handshake(&self, producer: &str) -> bool {
        let mut links = self.links.lock().expect("tunnel lock");
        let link = links.entry(producer.to_string()).or_default();
        !std::mem::replace(&mut link.handshaking, true)
    }

    fn handshake_done(&self, producer: &str) {
        if let Some(l) = self.links.lock().expect("tunnel lock").get_mut(producer) {
            l.handshaking = false;
        }
    }
}

/// The Event Producer a connecting shop may serve: the one it names, marked "Producer
/// connects", whose Event Subscriber is the caller.
async fn check_link(site: &Site, caller: &Caller, producer: &str) -> Result<bool> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT p."user", p.connection, l.name AS registered FROM "tabEvent Producer" p
           LEFT JOIN "tabEvent Producer Last Update" l ON l.name = p.name WHERE p.name = $1"#,
        &[Param::text(producer)],
    )
    .await?;
    drop(conn);
    let refuse = |why: String| {
        tracing::warn!(producer = %producer, user = %caller.user, "producer connection refused: {why}");
        Err(Error::Permission(why))
    };
    let Some(row) = rows.first() else {
        return refuse(format!(
            "{} has no Event Producer {producer}",
            site.config.url
        ));
    };
    let text = |k: &str| super::producer::value_text(row.get(k));
    if text("connection") != PRODUCER_CONNECTS {
        return refuse(format!(
            "the Event Producer {producer} on {} is reached directly: set its Connection to \"{PRODUCER_CONNECTS}\" for the producer to connect",
            site.config.url
        ));
    }
    if text("user") != caller.user {
        return refuse(format!(
            "{} is not the Event Subscriber of the Event Producer {producer}",
            caller.user
        ));
    }
    Ok(!text("registered").is_empty())
}

/// `docstream.tunnel.poll`: the shop's poll; answers the requests waiting for it.
pub async fn poll(
    site: &Arc<Site>,
    caller: &Caller,
    producer: &str,
    wait: Option<f64>,
    received: Option<u64>,
) -> Result<Value> {
    let producer = producer.trim_end_matches('/');
    let registered = check_link(site, caller, producer).await?;
    let came_back = !site.streaming().tunnels.is_connected(producer);
    {
        let rt = site.streaming();
        let mut links = rt.tunnels.links.lock().expect("tunnel lock");
        links.entry(producer.to_string()).or_default().last_seen = Some(Instant::now());
    }
    if came_back {
        note_contact(site, producer).await?;
    }
    if !registered && site.streaming().tunnels.start_handshake(producer) {
        let (site, producer) = (site.clone(), producer.to_string());
        tokio::spawn(async move {
            if let Err(e) = handshake(&site, &producer).await {
                tracing::warn!(producer = %producer, "handshake over the producer's connection failed (tried again on its next poll): {e}");
                let _ = set_status(&site, &producer, &format!("Handshake failed: {e}")).await;
            }
            site.streaming().tunnels.handshake_done(&producer);
        });
    }
    let wait = Duration::from_secs_f64(wait.unwrap_or(25.0).clamp(0.0, 30.0));
    let _open = OpenPoll::new(site, producer);
    let requests = site
        .streaming()
        .tunnels
        .take(producer, wait, received)
        .await;
    Ok(json!({ "requests": requests }))
}

/// A poll being held, counted while it lives: also when it is dropped because the shop's
/// connection went away mid-poll (the server drops the request then).
struct OpenPoll {
    site: Arc<Site>,
    producer: String,
}

impl OpenPoll {
    fn new(site: &Arc<Site>, producer: &str) -> OpenPoll {
        let rt = site.streaming();
        let mut links = rt.tunnels.links.lock().expect("tunnel lock");
        let link = links.entry(producer.to_string()).or_default();
        link.polls_open += 1;
        link.last_seen = Some(Instant::now());
        OpenPoll {
            site: site.clone(),
            producer: producer.to_string(),
        }
    }
}

impl Drop for OpenPoll {
    fn drop(&mut self) {
        if let Some(link) = self
            .site
            .streaming()
            .tunnels
            .links
            .lock()
            .expect("tunnel lock")
            .get_mut(&self.producer)
        {
            link.polls_open = link.polls_open.saturating_sub(1);
            link.last_seen = Some(Instant::now());
        }
        // If no poll follows this one, the desk shows the shop away once it counts as away.
        let (site, name) = (self.site.clone(), std::mem::take(&mut self.producer));
        tokio::spawn(async move {
            tokio::time::sleep(AWAY_AFTER + Duration::from_secs(1)).await;
            if !site.streaming().tunnels.is_connected(&name) {
                if let Err(e) = mark_away_one(&site, &name).await {
                    tracing::warn!(producer = %name, "cannot mark the producer away: {e}");
                }
            }
        });
    }
}

/// `docstream.tunnel.reply`: the shop's answers to requests it was given.
pub async fn reply(site: &Site, caller: &Caller, producer: &str, replies: Value) -> Result<()> {
    let producer = producer.trim_end_matches('/');
    check_link(site, caller, producer).await?;
    let replies: Vec<TunnelReply> = match replies {
        Value::String(s) => serde_json::from_str(&s),
        other => serde_json::from_value(other),
    }
    .map_err(|e| Error::BadRequest(format!("replies must be a JSON list of answers: {e}")))?;
    for r in replies {
        site.streaming().tunnels.answer(producer, r)?;
    }
    Ok(())
}

async fn set_status(site: &Site, producer: &str, status: &str) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer" SET connection_status = $1 WHERE name = $2"#,
        &[Param::text(status), Param::text(producer)],
    )
    .await?;
    tx.commit().await
}

/// Records a shop's (re)connection: when it came, shown in the desk.
async fn note_contact(site: &Site, producer: &str) -> Result<()> {
    let now = site.clock.now();
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer" SET connected_since = $1, connection_status = CASE WHEN connection_status LIKE 'Waiting%' OR connection_status LIKE 'Handshake%' THEN connection_status ELSE 'Connected' END WHERE name = $2"#,
        &[Param::text(&now), Param::text(producer)],
    )
    .await?;
    tx.commit().await
}

/// The save-time handshake of an Event Producer, run over the shop's first connection.
async fn handshake(site: &Arc<Site>, producer: &str) -> Result<()> {
    set_status(
        site,
        producer,
        "Handshake running over the producer's connection",
    )
    .await?;
    super::consumer::register_stored(site, producer).await?;
    set_status(site, producer, "Connected").await?;
    site.streaming().pull_wakeup.notify_one();
    Ok(())
}

/// True when an Event Producer document (as saved) is reached through the producer's own
/// connection.
pub fn producer_connects(doc: &crate::store::Doc) -> bool {
    doc.get("connection").and_then(Value::as_str) == Some(PRODUCER_CONNECTS)
}

/// True when the stored Event Producer `name` is reached through the producer's connection.
pub async fn is_producer_connects(site: &Site, name: &str) -> Result<bool> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_values(
        &mut conn,
        r#"SELECT connection FROM "tabEvent Producer" WHERE name = $1"#,
        &[Param::text(name)],
    )
    .await?;
    Ok(rows.first().and_then(|r| r.first()).and_then(Value::as_str) == Some(PRODUCER_CONNECTS))
}

/// Marks the connecting producers that stopped polling as away (shown in the desk).
pub async fn mark_away(site: &Site) -> Result<()> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_values(
        &mut conn,
        r#"SELECT name FROM "tabEvent Producer" WHERE connection = $1 AND connection_status = 'Connected'"#,
        &[Param::text(PRODUCER_CONNECTS)],
    )
    .await?;
    drop(conn);
    for r in rows {
        let name = super::producer::value_text(r.first());
        if !site.streaming().tunnels.is_connected(&name) {
            mark_away_one(site, &name).await?;
        }
    }
    Ok(())
}

/// Shows a connected producer as away.
async fn mark_away_one(site: &Site, producer: &str) -> Result<()> {
    let mut tx = site.store.begin().await?;
    store::execute(
        &mut tx,
        r#"UPDATE "tabEvent Producer" SET connection_status = $1 WHERE name = $2 AND connection_status = 'Connected'"#,
        &[
            Param::text("Away: the producer has not connected lately"),
            Param::text(producer),
        ],
    )
    .await?;
    tx.commit().await
}
