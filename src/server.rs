//! Serving every site of a data folder: listener, Host routing, graceful shutdown.

use crate::api::{self, AppState, Sites};
use crate::error::{Error, Result};
use crate::streaming::Streaming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds a listener with `SO_REUSEADDR`, so a restarted server can take the address at once.
pub fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|_| {
        Error::Validation(format!(
            "--bind {addr:?} is not an address like 127.0.0.1:8000"
        ))
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| Error::Validation(format!("cannot create a socket: {e}")))?;
    socket.set_reuse_address(true).ok();
    socket
        .bind(&addr.into())
        .map_err(|e| Error::Validation(format!("cannot listen on {addr}: {e}")))?;
    socket
        .listen(1024)
        .map_err(|e| Error::Validation(format!("cannot listen on {addr}: {e}")))?;
    socket.set_nonblocking(true).ok();
    tokio::net::TcpListener::from_std(socket.into())
        .map_err(|e| Error::Validation(format!("cannot listen on {addr}: {e}")))
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves the sites on one listener (over TLS with `tls`) until a shutdown signal; in-flight
/// requests finish first.
pub async fn serve(
    sites: Arc<Sites>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = AppState {
        sites: sites.clone(),
        metrics: Arc::default(),
        pages: Some(Arc::new(crate::desk::Desk)),
        tls: tls.is_some(),
    };
    let workers: Vec<_> = sites
        .all()
        .iter()
        .map(|s| tokio::spawn(crate::streaming::consumer::run_worker(s.clone())))
        .collect();
    let flushers: Vec<_> = sites
        .all()
        .iter()
        .map(|s| tokio::spawn(crate::streaming::acks::run_flusher(s.clone())))
        .collect();
    let links: Vec<_> = sites
        .all()
        .iter()
        .map(|s| tokio::spawn(crate::shop_link::run(state.clone(), s.clone())))
        .collect();
    let backups: Vec<_> = sites
        .all()
        .iter()
        .map(|s| tokio::spawn(crate::service::backup_schedule::run(s.clone())))
        .collect();
    let state_tls = state.tls;
    let app = api::router(state);
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let names: Vec<&str> = sites.all().iter().map(|s| s.name.as_str()).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %local,
        https = state_tls,
        sites = %names.join(", "),
        "serving"
    );
    let signal = {
        let sites = sites.clone();
        async move {
            shutdown.await;
            // Held pulls and polls would keep the server waiting for them to end.
            for s in sites.all() {
                s.streaming().log_watch.close();
                s.streaming().tunnels.close();
            }
        }
    };
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        None => {
            axum::serve(listener, make)
                .with_graceful_shutdown(signal)
                .await
        }
        Some(config) => {
            use axum::serve::ListenerExt;
            // `tap_io` lends the TLS listener the peer address as connection info.
            let listener = crate::tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, make)
                .with_graceful_shutdown(signal)
                .await
        }
    };
    served.map_err(|e| Error::Internal(format!("server failed: {e}")))?;
    for w in workers
        .into_iter()
        .chain(links)
        .chain(flushers)
        .chain(backups)
    {
        w.abort();
    }
    for s in sites.all() {
        if let Err(e) = s.streaming().acks.flush(s).await {
            tracing::warn!(site = %s.name, "cannot write consumer acknowledgements: {e}");
        }
        s.store.close().await;
    }
    Ok(())
}
