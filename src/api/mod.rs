//! The HTTP API: Frappe's `/api/resource` and `/api/method` plus health, metrics and OpenAPI.
//!
//! Handlers parse requests and call services; they hold no business rules. Routing is done by
//! hand in [`dispatch`] because Frappe names may contain `/` and paths may end with one.

mod args;
mod desk_methods;
pub mod encoding;
pub mod envelope;
mod files;
mod method;
pub mod metrics;
mod openapi;
pub mod origin;
mod resource;
mod sites;

pub use args::Args;
pub use sites::Sites;

use crate::error::Error;
use crate::service::auth::{Authenticated, Credentials};
use crate::site::Site;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use envelope::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Shared state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    pub sites: Arc<Sites>,
    pub metrics: Arc<metrics::Metrics>,
    /// The server terminates TLS: every request came over HTTPS.
    pub tls: bool,
    /// Pages served before the API's own routes (the web desk), given by the server.
    pub pages: Option<Arc<dyn Pages>>,
}

/// Pages a server serves beside the API (the web desk): asked first for every request.
#[async_trait::async_trait]
pub trait Pages: Send + Sync {
    /// The page for this request, or None when it is not one of these pages.
    async fn route(
        &self,
        site: &Site,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Result<Response, ApiError>>;
}

/// Everything a handler needs about one request.
pub struct Ctx {
    pub site: Arc<Site>,
    pub method: Method,
    pub headers: HeaderMap,
    pub args: Args,
    pub auth: Authenticated,
    pub peer: String,
}

/// The router: every path goes through [`dispatch`].
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let started = Instant::now();
    let kind = metrics::Kind::of(req.method(), req.uri());
    // The path without its query string, which may carry a password (`login?pwd=`).
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let coding = encoding::Coding::preferred(req.headers());
    // Resolved once: the origin needs the site's trusted proxies, the handler the site.
    let site = app.sites.resolve(req.headers());
    let origin = {
        let trusted = site
            .as_ref()
            .map_or(&[][..], |s| &s.config.trusted_proxies[..]);
        origin::Origin::of(app.tls, peer.ip(), req.headers(), trusted)
    };
    // Behind a trusted proxy, the client is the one it names.
    let peer = SocketAddr::new(origin.client, peer.port());
    let waited = std::cell::Cell::new(false);
    let (response, waited) = crate::streaming::log_watch::LONG_POLL_WAITED
        .scope(waited, async {
            let r = match app
                .metrics
                .on_cpu(kind, handle(&app, site, peer, req))
                .await
            {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            (
                r,
                crate::streaming::log_watch::LONG_POLL_WAITED.with(|w| w.get()),
            )
        })
        .await;
    let mut response = encoding::encode_answer(response, coding).await;
    origin.secure_cookies(response.headers_mut());
    app.metrics
        .observe_request(response.status().as_u16(), started.elapsed(), waited);
    tracing::info!(
        target: ACCESS_LOG,
        peer = %peer.ip(),
        "{method} {path} {} {:.1}ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// The tracing target of the access log (one line per request; off unless `serve
/// --access-log` or `RUST_LOG` turns it on).
pub const ACCESS_LOG: &str = "docstream::access";

/// Answers a request that did not come over this server's listener (one the hosted site
/// handed a shop through its connection, see `shop_link`), exactly as if it had.
pub async fn serve_in_process(app: &AppState, req: Request<Body>) -> Response {
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    dispatch(State(app.clone()), ConnectInfo(peer), req).await
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether a `/metrics` request may read the per-peer figures: the site's `metrics_token` as a
/// bearer token, or a System Manager's session or API key. Anyone else gets the site-wide
/// figures, with no error.
async fn may_see_peers(site: &Site, headers: &HeaderMap) -> bool {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(token) = auth.trim().strip_prefix("Bearer ") {
        let want = &site.config.metrics_token;
        return !want.is_empty() && crate::crypto::secrets_equal(token.trim(), want);
    }
    match credentials(headers) {
        Ok(c) => site
            .authenticate(&c)
            .await
            .is_ok_and(|a| a.caller.is_system_manager()),
        Err(_) => false,
    }
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, Error> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = auth.trim().split_once(' ').unwrap_or((auth, ""));
        let pair = match scheme.to_ascii_lowercase().as_str() {
            "token" => rest.trim().to_string(),
            "basic" => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .map_err(|_| {
                        Error::Authentication("Basic credentials are not valid base64".into())
                    })?;
                String::from_utf8(raw)
                    .map_err(|_| Error::Authentication("Basic credentials are not UTF-8".into()))?
            }
            _ => {
                return Err(Error::Authentication(format!(
                    "Unsupported Authorization scheme {scheme:?}: use token or Basic"
                )))
            }
        };
        let (key, secret) = pair.split_once(':').ok_or_else(|| {
            Error::Authentication("Credentials must be api_key:api_secret".into())
        })?;
        return Ok(Credentials::ApiKey {
            key: key.to_string(),
            secret: secret.to_string(),
        });
    }
    Ok(match cookie(headers, "sid") {
        Some(sid) if !sid.is_empty() && sid != "Guest" => Credentials::Session { sid },
        _ => Credentials::None,
    })
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// Methods that need no authentication.
fn is_open_method(m: &str) -> bool {
    matches!(m, "login" | "frappe.ping" | "ping" | "logout")
}

/// A desk session (one that was given a CSRF token) must send it with every request that
/// may change state.
fn check_csrf(method: &Method, headers: &HeaderMap, auth: &Authenticated) -> Result<(), Error> {
    let Some(expected) = &auth.csrf_token else {
        return Ok(());
    };
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let sent = headers
        .get("x-frappe-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !crate::crypto::secrets_equal(sent, expected) {
        return Err(Error::CsrfToken(
            "Invalid Request: missing or wrong X-Frappe-CSRF-Token header".into(),
        ));
    }
    Ok(())
}

/// True when a query string carries `cmd` (Frappe's `GET /?cmd=...`).
fn has_cmd(query: Option<&str>) -> bool {
    query
        .map(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .unwrap_or_default()
                .iter()
                .any(|(k, _)| k == "cmd")
        })
        .unwrap_or(false)
}

/// `GET /`: a browser goes to the desk (or its login page); API clients get a small JSON
/// answer (Frappe sites probe it before notifying).
async fn root(site: &Site, headers: &HeaderMap) -> Result<Response, ApiError> {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(prefers_html);
    if !wants_html {
        return Ok(envelope::message(serde_json::json!("docstream")));
    }
    let signed_in = match credentials(headers) {
        Ok(c @ Credentials::Session { .. }) => site
            .authenticate(&c)
            .await
            .is_ok_and(|a| !a.caller.is_guest()),
        _ => false,
    };
    let to = if signed_in { "/app" } else { "/login" };
    Ok(Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::SEE_OTHER.into_response()))
}

/// True when an `Accept` header ranks `text/html` above JSON (as browsers send it).
fn prefers_html(accept: &str) -> bool {
    let rank = |wanted: &str| {
        accept
            .split(',')
            .enumerate()
            .find(|(_, part)| part.trim().starts_with(wanted))
            .map(|(i, _)| i)
    };
    match (rank("text/html"), rank("application/json")) {
        (Some(h), Some(j)) => h < j,
        (Some(_), None) => true,
        _ => false,
    }
}

async fn handle(
    app: &AppState,
    site: Result<Arc<Site>, Error>,
    peer: SocketAddr,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let site = site?;
    site.refresh_meta().await?;
    let raw_path = parts.uri.path().to_string();
    let path = if raw_path.len() > 1 {
        raw_path.strip_suffix('/').unwrap_or(&raw_path).to_string()
    } else {
        raw_path.clone()
    };
    match (parts.method.clone(), path.as_str()) {
        (Method::GET, "/health") => {
            return Ok(if site.store.ping().await {
                envelope::json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "site": site.name}),
                )
            } else {
                envelope::json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "database unavailable"}),
                )
            });
        }
        (Method::GET, "/metrics") => {
            let peers = may_see_peers(&site, &parts.headers).await;
            return Ok(app.metrics.render(&site, peers).await.into_response());
        }
        (Method::GET, "/api/openapi.json") => return Ok(openapi::document(&site)),
        (Method::GET, "/") if !has_cmd(parts.uri.query()) => {
            return root(&site, &parts.headers).await;
        }
        _ => {}
    }
    if let Some(pages) = &app.pages {
        let page = pages
            .route(
                &site,
                &parts.method,
                &path,
                parts.uri.query(),
                &parts.headers,
            )
            .await;
        if let Some(page) = page {
            return page;
        }
    }
    // Files stream: their bodies are not read whole like the others.
    if parts.method == Method::GET
        && (path.starts_with("/files/") || path.starts_with("/private/files/"))
    {
        let caller = if path.starts_with("/files/") {
            crate::service::permissions::Caller::guest()
        } else {
            site.authenticate(&credentials(&parts.headers)?)
                .await?
                .caller
        };
        return files::serve(site.clone(), &decode(&path), &caller).await;
    }
    if parts.method == Method::POST
        && matches!(
            path.as_str(),
            "/api/method/upload_file" | "/api/method/frappe.handler.upload_file"
        )
    {
        let auth = site.authenticate(&credentials(&parts.headers)?).await?;
        // Refused before a byte of the body is read: docstream takes no guest uploads.
        if auth.caller.is_guest() {
            return Err(Error::Permission("Log in to upload files".into()).into());
        }
        check_csrf(&parts.method, &parts.headers, &auth)?;
        // An upload streams to its own bound; it is taken only as it is.
        if encoding::Coding::of_body(&parts.headers)?.is_some() {
            return Err(Error::BadRequest(
                "upload_file takes its body as it is, without Content-Encoding".into(),
            )
            .into());
        }
        return files::upload(&site, &parts.headers, body, &auth.caller).await;
    }
    let limit = if path == "/api/method/docstream.tunnel.reply" {
        site.config.tunnel_reply_bytes()
    } else {
        site.config.max_body_bytes
    };
    let coded = encoding::Coding::of_body(&parts.headers)?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Error::TooLarge(format!(
            "Request body is larger than the limit of {limit} bytes (max_body_bytes)"
        ))
    })?;
    // The bound holds for what the body becomes, not what it weighed on the wire.
    let bytes = match coded {
        Some(c) => axum::body::Bytes::from(c.decompress(&bytes, limit)?),
        None => bytes,
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let args = Args::parse(parts.uri.query(), content_type, &bytes)?;
    args::refuse_nul(&decode(&path))?;
    let (kind, rest) = if let Some(rest) = path.strip_prefix("/api/method/") {
        ("method", decode(rest))
    } else if let Some(rest) = path.strip_prefix("/api/resource/") {
        ("resource", rest.to_string())
    } else if path == "/" && matches!(parts.method, Method::POST | Method::GET) {
        // Frappe dispatches `cmd` on `/` whatever the verb (its Python client logs out by GET).
        ("method", args.required("cmd")?)
    } else {
        return Err(
            Error::NoSuchMethod(format!("No route for {} {raw_path}", parts.method)).into(),
        );
    };
    let open = kind == "method" && is_open_method(&rest);
    let creds = credentials(&parts.headers)?;
    let auth = if open {
        Authenticated {
            caller: crate::service::permissions::Caller::guest(),
            csrf_token: None,
        }
    } else {
        site.authenticate(&creds).await?
    };
    // A browser sends the session cookie with any GET a page makes it send (SameSite=Lax lets
    // top-level GETs through): GET on a cookie session may only read.
    if kind == "method"
        && matches!(creds, Credentials::Session { .. })
        && matches!(parts.method, Method::GET | Method::HEAD)
        && !method::reads_only(&rest)
    {
        return Err(Error::Permission(format!(
            "{rest} changes data: call it with POST (GET is refused for session cookies)"
        ))
        .into());
    }
    check_csrf(&parts.method, &parts.headers, &auth)?;
    let ctx = Ctx {
        site,
        method: parts.method,
        headers: parts.headers,
        args,
        auth,
        peer: peer.ip().to_string(),
    };
    if kind == "method" {
        method::call(&ctx, &rest).await
    } else {
        resource::handle(&ctx, &rest).await
    }
}
