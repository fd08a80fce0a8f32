//! A TCP link on loopback as slow as a shop's line: a bandwidth each way and a delay added to
//! every byte's trip. The bench moves invoices through it; the fault tests use it too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A running link from `127.0.0.1:port` to an upstream port.
pub struct SlowLink {
    /// Where to connect.
    pub port: u16,
    /// Bytes carried from the upstream server to clients.
    pub bytes_down: Arc<AtomicU64>,
    /// Bytes carried from clients to the upstream server.
    pub bytes_up: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Listens on `listen` (0: a free port) and forwards to `127.0.0.1:upstream` at
    /// `kbit_per_s` each way, each chunk arriving `delay` after it has gone through the
    /// bandwidth.
    pub async fn start(
        listen: u16,
        upstream: u16,
        kbit_per_s: u64,
        delay: Duration,
    ) -> std::io::Result<SlowLink> {
        let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
        let port = listener.local_addr()?.port();
        let bytes_per_s = (kbit_per_s.max(1) * 1000 / 8) as f64;
        let (down, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (d, u) = (down.clone(), up.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (d, u) = (d.clone(), u.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let upward = tokio::spawn(pipe(cr, sw, bytes_per_s, delay, u));
                    pipe(sr, cw, bytes_per_s, delay, d).await;
                    upward.abort();
                });
            }
        });
        Ok(SlowLink {
            port,
            bytes_down: down,
            bytes_up: up,
            task,
        })
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries bytes one way: each chunk (at most a packet's worth) leaves once the bandwidth has
/// passed it, and arrives `delay` later.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes_per_s: f64,
    delay: Duration,
    counter: Arc<AtomicU64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 1460];
    let mut line_free = Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let sent = line_free.max(Instant::now()) + Duration::from_secs_f64(n as f64 / bytes_per_s);
        line_free = sent;
        // The line is busy until then: the sender waits as a full TCP window would make it.
        tokio::time::sleep_until(sent).await;
        if tx.send((sent + delay, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
