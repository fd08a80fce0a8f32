//! The shop's side of a producer that connects: for each enabled Event Subscriber (a hosted
//! consumer that cannot open connections to this site), one task keeps polling the hosted
//! site, runs the requests it is handed on this site as if they had come in over HTTP, and
//! sends the answers back. The hosted site's requests carry the keys it holds for this site,
//! so they are authenticated and permission-checked here exactly as direct ones.

use crate::api::AppState;
use crate::error::{Error, Result};
use crate::site::Site;
use crate::store::{self, Param};
use crate::streaming::remote::RemoteSite;
use crate::streaming::tunnel::{b64, TunnelReply, TunnelRequest};
use base64::Engine;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long the hosted site may hold a poll of ours.
const POLL_WAIT: &str = "25";
/// Tries to deliver one answer.
const REPLY_TRIES: u32 = 5;

/// Keeps one link open to each enabled Event Subscriber of the site, for as long as it runs.
pub async fn run(app: AppState, site: Arc<Site>) {
    let running: std::sync::Mutex<std::collections::HashSet<String>> = Default::default();
    let running = Arc::new(running);
    loop {
        match subscribers(&site).await {
            Ok(urls) => {
                for url in urls {
                    if running.lock().expect("link set").insert(url.clone()) {
                        let (app, site, running) = (app.clone(), site.clone(), running.clone());
                        tokio::spawn(async move {
                            keep_link(&app, &site, &url).await;
                            running.lock().expect("link set").remove(&url);
                        });
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list Event Subscribers: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn subscribers(site: &Site) -> Result<Vec<String>> {
    let mut conn = site.store.conn().await?;
    let rows = store::fetch_docs(
        &mut conn,
        r#"SELECT name FROM "tabEvent Subscriber" WHERE COALESCE(enabled, 0) = 1 ORDER BY name"#,
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| crate::streaming::producer::value_text(r.get("name")))
        .collect())
}

async fn set_status(site: &Site, url: &str, status: &str, since: bool) -> Result<()> {
    let mut tx = site.store.begin().await?;
    let sql = if since {
        r#"UPDATE "tabEvent Subscriber" SET status = $1, connected_since = $3 WHERE name = $2"#
    } else {
        r#"UPDATE "tabEvent Subscriber" SET status = $1 WHERE name = $2"#
    };
    let now = site.clock.now();
    let mut params = vec![Param::text(status), Param::text(url)];
    if since {
        params.push(Param::text(&now));
    }
    store::execute(&mut tx, sql, &params).await?;
    tx.commit().await
}

/// Polls one hosted site until its Event Subscriber is disabled or deleted.
async fn keep_link(app: &AppState, site: &Arc<Site>, url: &str) {
    let mut connected = false;
    let mut failures = 0u32;
    // The highest request id received: requests after it that the hosted site handed out
    // were lost with their poll's answer, and it hands them again.
    let mut received = None;
    loop {
        let remote =
            match crate::streaming::remote_with_stored_keys(site, "Event Subscriber", url).await {
                Ok(r) => r,
                Err(_) => return,
            };
        if !subscribers(site)
            .await
            .map(|s| s.iter().any(|u| u == url))
            .unwrap_or(true)
        {
            return;
        }
        match poll_once(app, site, &remote, &mut received).await {
            Ok(()) => {
                failures = 0;
                if !connected {
                    connected = true;
                    tracing::info!(subscriber = %url, "connected to the hosted consumer");
                    let _ = set_status(site, url, "Connected", true).await;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if connected || failures == 1 {
                    tracing::warn!(subscriber = %url, "link to the hosted consumer down: {e}");
                    let _ = set_status(site, url, &format!("Not connected: {e}"), false).await;
                }
                connected = false;
                let pause = Duration::from_millis(250) * 2u32.saturating_pow(failures.min(5));
                tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
            }
        }
    }
}

async fn poll_once(
    app: &AppState,
    site: &Arc<Site>,
    remote: &RemoteSite,
    received: &mut Option<u64>,
) -> Result<()> {
    let mut args = vec![
        ("producer_url", site.config.url.clone()),
        ("wait", POLL_WAIT.to_string()),
    ];
    if let Some(r) = received {
        args.push(("received", r.to_string()));
    }
    let answer = remote.call("docstream.tunnel.poll", &args).await?;
    let requests: Vec<TunnelRequest> = serde_json::from_value(
        answer.get("requests").cloned().unwrap_or(Value::Null),
    )
    .map_err(|e| Error::Validation(format!("{} sent requests we cannot read: {e}", remote.url)))?;
    if let Some(top) = requests.iter().map(|r| r.id).max() {
        *received = Some(received.map_or(top, |r| r.max(top)));
    }
    for req in requests {
        let (app, site, remote) = (app.clone(), site.clone(), remote.clone());
        tokio::spawn(async move {
            let id = req.id;
            let reply = run_here(&app, &site, req).await;
            let replies = serde_json::to_string(&[reply]).unwrap_or_default();
            // An answer lost on a bad line is sent again: the hosted site waits for it.
            for attempt in 1..=REPLY_TRIES {
                let sent = remote
                    .call(
                        "docstream.tunnel.reply",
                        &[
                            ("producer_url", site.config.url.clone()),
                            ("replies", replies.clone()),
                        ],
                    )
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e) if attempt == REPLY_TRIES => {
                        tracing::warn!(
                            request = id,
                            "could not send an answer to {}: {e}",
                            remote.url
                        );
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await
                    }
                }
            }
        });
    }
    Ok(())
}

/// Runs a request of the hosted site on this site, as the HTTP server would.
async fn run_here(app: &AppState, site: &Site, req: TunnelRequest) -> TunnelReply {
    let refuse = |status: u16, msg: String| TunnelReply {
        id: req.id,
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b64().encode(
            serde_json::json!({"exc_type": "ValidationError", "exception": msg}).to_string(),
        ),
    };
    let Ok(body) = b64().decode(req.body.as_bytes()) else {
        return refuse(400, "the request body is not base64".into());
    };
    let mut builder = axum::http::Request::builder()
        .method(req.method.as_str())
        .uri(&req.path);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("host") {
            builder = builder.header(k, v);
        }
    }
    // This site answers, whatever host the request was made for.
    let host = site
        .config
        .url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let Ok(request) = builder
        .header("host", host)
        .body(axum::body::Body::from(body))
    else {
        return refuse(
            400,
            format!("not a valid request: {} {}", req.method, req.path),
        );
    };
    let response = crate::api::serve_in_process(app, request).await;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) => TunnelReply {
            id: req.id,
            status,
            headers,
            body: b64().encode(bytes),
        },
        Err(e) => refuse(500, format!("the answer could not be read: {e}")),
    }
}
