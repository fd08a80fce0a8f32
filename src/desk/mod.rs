//! The web desk: server-rendered HTML shells for `/login` and `/app/...` plus embedded assets.
//!
//! Pages are a small shell (boot data: user, CSRF token, language, translations, sidebar) and
//! one vanilla-JS file that renders list and form views from the REST API. Nothing is fetched
//! from the network at run time: the assets are compiled into the binary.

mod assets;
pub mod i18n;

use crate::api::envelope::ApiError;
use crate::meta::PermType;
use crate::service::auth::Credentials;
use crate::service::permissions::Caller;
use crate::site::Site;
use crate::store::{Filter, ListQuery, Op};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// True when the path is one the desk serves.
pub fn is_desk_path(path: &str) -> bool {
    path == "/login"
        || path == "/app"
        || path.starts_with("/app/")
        || path.starts_with("/assets/desk/")
}

/// The desk as the server's pages beside the API.
pub struct Desk;

#[async_trait::async_trait]
impl crate::api::Pages for Desk {
    async fn route(
        &self,
        site: &Site,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Result<Response, ApiError>> {
        route(site, method, path, query, headers).await
    }
}

/// Serves a desk page or asset; `None` when the request is not for the desk.
pub async fn route(
    site: &Site,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Result<Response, ApiError>> {
    if !is_desk_path(path) || (method != Method::GET && method != Method::HEAD) {
        return None;
    }
    if let Some(file) = path.strip_prefix("/assets/desk/") {
        return Some(Ok(assets::serve(file)));
    }
    Some(page(site, path, query, headers).await)
}

async fn page(
    site: &Site,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let auth = match crate::api::cookie(headers, "sid") {
        Some(sid) if !sid.is_empty() && sid != "Guest" => {
            // A stale or bad session is a visitor, never an error page.
            site.authenticate(&Credentials::Session { sid }).await.ok()
        }
        _ => None,
    }
    .filter(|a| !a.caller.is_guest());
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if path == "/login" {
        if auth.is_some() {
            return Ok(redirect(&login_target(query)));
        }
        let lang = i18n::from_accept_language(accept);
        return Ok(html(assets::login_page(lang, &site.config.url)));
    }
    let Some(auth) = auth else {
        let target = match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_string(),
        };
        let enc =
            percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC);
        return Ok(redirect(&format!("/login?redirect-to={enc}")));
    };
    let user = user_settings(site, &auth.caller).await;
    let lang = i18n::choose(user.1.as_deref(), accept);
    let boot = json!({
        "user": auth.caller.user,
        "full_name": user.0,
        "csrf_token": auth.csrf_token.unwrap_or_default(),
        "lang": lang.code(),
        "messages": i18n::messages(lang),
        "sidebar": sidebar(site, &auth.caller),
        "site_url": site.config.url,
        "now": site.clock.now(),
        "is_system_manager": auth.caller.is_system_manager(),
    });
    Ok(html(assets::app_page(lang, &boot)))
}

/// Where `/login` sends a signed-in user: the `redirect-to` query value when it is a desk path.
fn login_target(query: Option<&str>) -> String {
    query
        .and_then(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "redirect-to")
                .map(|(_, v)| v)
        })
        .filter(|t| safe_redirect(t))
        .unwrap_or_else(|| "/app".into())
}

/// Only desk paths of this site: never another host (`//evil`), so login cannot be an open
/// redirect.
pub fn safe_redirect(target: &str) -> bool {
    (target == "/app" || target.starts_with("/app/") || target.starts_with("/app?"))
        && !target.contains("//")
        && !target.contains('\\')
}

/// The user's full name and language, read as the server (a user may lack read access to User).
async fn user_settings(site: &Site, caller: &Caller) -> (String, Option<String>) {
    let q = ListQuery {
        fields: vec!["full_name".into(), "language".into()],
        filters: vec![Filter {
            doctype: None,
            field: "name".into(),
            op: Op::Eq,
            value: Value::String(caller.user.clone()),
        }],
        page_length: 1,
        ..Default::default()
    };
    match site.list_docs(&Caller::administrator(), "User", &q).await {
        Ok(rows) => {
            let r = rows.into_iter().next().unwrap_or_default();
            let text = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            (
                text("full_name").unwrap_or_else(|| caller.user.clone()),
                text("language"),
            )
        }
        Err(e) => {
            tracing::warn!("desk: cannot read settings of {}: {e}", caller.user);
            (caller.user.clone(), None)
        }
    }
}

/// Modules in sidebar order; Event Streaming is shown as "Automation", as in Frappe's desk.
const MODULE_ORDER: [&str; 9] = [
    "Core",
    "Desk",
    "Setup",
    "Stock",
    "Selling",
    "Buying",
    "Accounts",
    "CRM",
    "Event Streaming",
];

/// The sidebar: readable, non-child types grouped by module.
pub fn sidebar(site: &Site, caller: &Caller) -> Value {
    let reg = site.meta();
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for dt in reg.all() {
        if dt.istable || !caller.can(&dt, PermType::Read) {
            continue;
        }
        let module = if dt.module.is_empty() {
            "Custom".to_string()
        } else {
            dt.module.clone()
        };
        let item =
            json!({"name": dt.name, "slug": crate::meta::slug(&dt.name), "issingle": dt.issingle});
        match groups.iter_mut().find(|(m, _)| *m == module) {
            Some((_, items)) => items.push(item),
            None => groups.push((module, vec![item])),
        }
    }
    let rank = |m: &str| {
        MODULE_ORDER
            .iter()
            .position(|x| *x == m)
            .unwrap_or(MODULE_ORDER.len() - 1)
    };
    groups.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    Value::Array(
        groups
            .into_iter()
            .map(|(module, items)| {
                let label = if module == "Event Streaming" {
                    "Automation".to_string()
                } else {
                    module.clone()
                };
                json!({"module": module, "label": label, "items": items})
            })
            .collect(),
    )
}

fn security_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn html(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The shell carries the session's CSRF token: never cache it.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut r);
    r
}

fn redirect(to: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desk_paths() {
        assert!(is_desk_path("/app"));
        assert!(is_desk_path("/app/todo/new"));
        assert!(is_desk_path("/login"));
        assert!(is_desk_path("/assets/desk/desk.js"));
        assert!(!is_desk_path("/application"));
        assert!(!is_desk_path("/api/resource/ToDo"));
    }

    #[test]
    fn redirects_stay_on_the_desk() {
        assert_eq!(login_target(Some("redirect-to=%2Fapp%2Ftodo")), "/app/todo");
        assert_eq!(login_target(Some("redirect-to=https%3A%2F%2Fevil")), "/app");
        assert_eq!(login_target(Some("redirect-to=%2Fapp%2F%2Fevil")), "/app");
        assert_eq!(login_target(None), "/app");
    }
}
