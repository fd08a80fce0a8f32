//! A TCP proxy on loopback that damages what a server answers: drops connections, delays,
//! cuts answers in the middle, flips bytes, or holds them (forwards the request and never
//! answers); and that may rewrite the requests' bodies on their way to the server. Sites talk
//! through it as they would through a bad line; the test sets the faults and heals the line
//! when it wants.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to server chunks of at least `min_chunk` bytes (headers and small
/// answers pass), each a probability per chunk.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub flip: f64,
    pub cut: f64,
    pub drop: f64,
    pub max_delay_ms: u64,
    pub min_chunk: usize,
    /// Forward requests, never answer: the server's bytes are dropped, the connection stays
    /// open (a half-open line). A connection that lost a byte so stays silent for good, as a
    /// half-open TCP connection does; new ones work once the hold is lifted.
    pub hold: bool,
}

/// Rewrites a request body (form or JSON text) on its way to the server.
pub type Rewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How many of each fault the proxy injected.
#[derive(Default, Debug)]
pub struct Injected {
    pub flips: AtomicU64,
    pub cuts: AtomicU64,
    pub drops: AtomicU64,
    pub delays: AtomicU64,
    /// Bytes the server sent that went on to the client.
    pub bytes_down: AtomicU64,
    /// Bytes the client sent that went on to the server.
    pub bytes_up: AtomicU64,
}

/// A running proxy to `127.0.0.1:upstream`.
pub struct FaultProxy {
    pub port: u16,
    faults: Arc<Mutex<Faults>>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    /// The line is down: new connections are closed at once, open ones were cut.
    down: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    pub injected: Arc<Injected>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `port` and forwards to `upstream`, healthy until [`FaultProxy::set`].
    pub async fn start(port: u16, upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let rewrite: Arc<Mutex<Option<Rewrite>>> = Default::default();
        let injected = Arc::new(Injected::default());
        let (f, inj, rw) = (faults.clone(), injected.clone(), rewrite.clone());
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (is_down, open) = (down.clone(), links.clone());
        let task = tokio::spawn(async move {
            let mut seed = 7u64;
            while let Ok((client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                seed += 1;
                let (f, inj, rw) = (f.clone(), inj.clone(), rw.clone());
                let link = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        relay(client, server, f, inj, rw, seed).await;
                    }
                });
                let mut open = open.lock().unwrap();
                open.retain(|l| !l.is_finished());
                open.push(link.abort_handle());
            }
        });
        FaultProxy {
            port,
            faults,
            rewrite,
            down,
            links,
            injected,
            task,
        }
    }

    /// Sets the faults applied from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Rewrites every request body from now on (`None`: sends them as they are). Requests
    /// must carry a Content-Length (reqwest's form and JSON bodies do).
    pub fn rewrite(&self, f: Option<Rewrite>) {
        *self.rewrite.lock().unwrap() = f;
    }

    /// Takes the line down: open connections are cut and new ones closed at once.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    /// Brings the line back up after [`FaultProxy::cut`].
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Lets everything through again.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Faults injected so far, all kinds.
    pub fn total(&self) -> u64 {
        let i = &self.injected;
        i.flips.load(Ordering::SeqCst)
            + i.cuts.load(Ordering::SeqCst)
            + i.drops.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Mutex<Faults>>,
    injected: Arc<Injected>,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    seed: u64,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = injected.clone();
    let upstream = AbortOnDrop(tokio::spawn(async move {
        let _ = forward_requests(&mut cr, &mut sw, &rewrite, &up.bytes_up).await;
        let _ = sw.shutdown().await;
    }));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut dead = false;
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f = faults.lock().unwrap().clone();
        dead |= f.hold;
        if dead {
            // The request went through; its answer never comes back.
            continue;
        }
        let chunk = &mut buf[..n];
        if n >= f.min_chunk.max(1) {
            if f.max_delay_ms > 0 {
                injected.delays.fetch_add(1, Ordering::SeqCst);
                let ms = rng.gen_range(0..=f.max_delay_ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if rng.gen_bool(f.drop.clamp(0.0, 1.0)) {
                injected.drops.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if rng.gen_bool(f.cut.clamp(0.0, 1.0)) {
                injected.cuts.fetch_add(1, Ordering::SeqCst);
                let _ = cw.write_all(&chunk[..n / 2]).await;
                break;
            }
            if rng.gen_bool(f.flip.clamp(0.0, 1.0)) {
                injected.flips.fetch_add(1, Ordering::SeqCst);
                // Past the first 400 bytes, so the flip lands in the body, not the headers.
                let at = rng.gen_range(n.min(400)..n);
                chunk[at] ^= 1 << rng.gen_range(0..7);
            }
        }
        if cw.write_all(chunk).await.is_err() {
            break;
        }
        injected
            .bytes_down
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    let _ = cw.shutdown().await;
    drop(upstream);
}

/// Copies the client's requests to the server, one by one, rewriting each body while a
/// rewrite is set (and its Content-Length with it).
async fn forward_requests(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    rewrite: &Mutex<Option<Rewrite>>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.write_all(&pending).await;
        }
        sent.fetch_add(n as u64, Ordering::SeqCst);
        pending.extend_from_slice(&buf[..n]);
        loop {
            let rw = rewrite.lock().unwrap().clone();
            let Some(rw) = rw else {
                to.write_all(&pending).await?;
                pending.clear();
                break;
            };
            let Some(head_end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&pending[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let total = head_end + 4 + length;
            if pending.len() < total {
                break;
            }
            let body = String::from_utf8_lossy(&pending[head_end + 4..total]).to_string();
            let body = rw(&body);
            let head: Vec<String> = head
                .lines()
                .map(|l| match l.split_once(':') {
                    Some((k, _)) if k.trim().eq_ignore_ascii_case("content-length") => {
                        format!("{k}: {}", body.len())
                    }
                    _ => l.to_string(),
                })
                .collect();
            to.write_all(format!("{}\r\n\r\n{body}", head.join("\r\n")).as_bytes())
                .await?;
            pending.drain(..total);
        }
    }
}

/// The client-to-server half of a relay, stopped with it (also when the relay is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
