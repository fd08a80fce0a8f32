//! HTTPS in `serve` itself (rustls): a listener that accepts TCP connections and completes
//! their TLS handshakes in tasks of their own (a slow client never holds up the others), with
//! the certificate chosen by SNI (a site's own `tls_cert`/`tls_key`) or the one given to
//! `serve --tls-cert/--tls-key`, each read again when its files change, so a renewal needs no
//! restart.

use crate::api::Sites;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How long a client may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A certificate and key read from two PEM files, read again when either changes.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let bad = |what: &str, p: &Path, e: String| {
        Error::Validation(format!("cannot read the TLS {what} {}: {e}", p.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("certificate", cert, "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| bad("key", key, e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl CertFiles {
    fn open(cert: &Path, key: &Path) -> Result<CertFiles> {
        let loaded = load(cert, key)?;
        Ok(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: RwLock::new((modified(cert), modified(key), loaded)),
        })
    }

    /// The key, read again first when a file changed (a renewal); the old one is kept, and
    /// the failure logged, while the new files cannot be read (half written).
    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (modified(&self.cert), modified(&self.key));
        {
            let held = self.loaded.read().expect("certificate lock");
            if (held.0, held.1) == stamps {
                return held.2.clone();
            }
        }
        let mut held = self.loaded.write().expect("certificate lock");
        match load(&self.cert, &self.key) {
            Ok(k) => {
                tracing::info!(cert = %self.cert.display(), "TLS certificate read again");
                *held = (stamps.0, stamps.1, k);
            }
            Err(e) => tracing::warn!("{}; the previous certificate is kept", e.message()),
        }
        held.2.clone()
    }
}

/// Chooses a certificate by the name the client asked for.
#[derive(Debug)]
struct Certs {
    by_host: HashMap<String, CertFiles>,
    default: Option<CertFiles>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|n| self.by_host.get(&n.to_ascii_lowercase()));
        by_name.or(self.default.as_ref()).map(CertFiles::current)
    }
}

/// The host of a URL (`https://ho.example.com:8443/` -> `ho.example.com`).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_ascii_lowercase()
}

/// The server's TLS settings: `default` (from `serve --tls-cert/--tls-key`) and each site's
/// own `tls_cert`/`tls_key`; None when neither is given (plain HTTP).
pub fn server_config(
    default: Option<(&Path, &Path)>,
    sites: &Sites,
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    let mut by_host = HashMap::new();
    for s in sites.all() {
        let (cert, key) = (&s.config.tls_cert, &s.config.tls_key);
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => {}
            (false, false) => {
                let files = CertFiles::open(Path::new(cert), Path::new(key))?;
                by_host.insert(host_of(&s.config.url), files);
            }
            _ => {
                return Err(Error::Validation(format!(
                    "site {}: give both tls_cert and tls_key, or neither",
                    s.name
                )))
            }
        }
    }
    let default = default.map(|(c, k)| CertFiles::open(c, k)).transpose()?;
    if default.is_none() && by_host.is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certs { by_host, default }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Accepts TLS connections: TCP accepted here, each handshake in a task of its own.
pub struct TlsListener {
    incoming: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `tcp` with `config`.
    pub fn new(
        tcp: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<TlsListener> {
        let local = tcp
            .local_addr()
            .map_err(|e| Error::Internal(format!("listener: {e}")))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, incoming) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            incoming,
            local,
            task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_site_urls() {
        assert_eq!(host_of("https://HO.example.com:8443/"), "ho.example.com");
        assert_eq!(host_of("http://branch.localhost"), "branch.localhost");
    }
}
