//! The desk's static files, compiled into the binary, and the two HTML shells.

use super::i18n::{tr, Lang};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::sync::OnceLock;

/// The desk application script.
pub const DESK_JS: &str = include_str!("assets/desk.js");
/// The login page script.
pub const LOGIN_JS: &str = include_str!("assets/login.js");
/// The desk's style sheet.
pub const DESK_CSS: &str = include_str!("assets/desk.css");
/// The favicon.
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// A short content hash of all assets, put in their URLs so browsers may cache them for good.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for a in [DESK_JS, LOGIN_JS, DESK_CSS, ICON_SVG] {
            h.update(a.as_bytes());
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// Serves one asset by file name; 404 when there is none.
pub fn serve(file: &str) -> Response {
    let (body, mime) = match file {
        "desk.js" => (DESK_JS, "text/javascript; charset=utf-8"),
        "login.js" => (LOGIN_JS, "text/javascript; charset=utf-8"),
        "desk.css" => (DESK_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => {
            let mut r = Response::new(Body::from("not found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside `<script type="application/json">` (no `</script>` can close it).
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn head(lang: Lang, title: &str) -> String {
    let v = version();
    format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"icon\" href=\"/assets/desk/icon.svg?v={v}\">\
         <link rel=\"stylesheet\" href=\"/assets/desk/desk.css?v={v}\"></head>",
        lang.code(),
        escape(title)
    )
}

/// The login page.
pub fn login_page(lang: Lang, site_url: &str) -> String {
    let t = |s: &str| escape(&tr(lang, s));
    format!(
        "{head}<body class=\"login-body\"><main class=\"login-card\">\
         <div class=\"login-brand\"><img src=\"/assets/desk/icon.svg?v={v}\" alt=\"\" width=\"40\" height=\"40\">\
         <div><h1>docstream</h1><p class=\"muted\">{site}</p></div></div>\
         <h2>{login_to}</h2>\
         <form id=\"login-form\" novalidate>\
         <label for=\"login_email\">{email}</label>\
         <input id=\"login_email\" name=\"usr\" autocomplete=\"username\" required autofocus>\
         <label for=\"login_password\">{password}</label>\
         <input id=\"login_password\" name=\"pwd\" type=\"password\" autocomplete=\"current-password\" required>\
         <div id=\"login-error\" class=\"form-error\" role=\"alert\" hidden></div>\
         <button type=\"submit\" class=\"btn btn-primary btn-block\" data-busy=\"{busy}\">{login}</button>\
         </form></main>\
         <script id=\"login-messages\" type=\"application/json\">{msgs}</script>\
         <script src=\"/assets/desk/login.js?v={v}\"></script></body></html>",
        head = head(lang, &tr(lang, "Login")),
        v = version(),
        site = escape(site_url),
        login_to = t("Log in to your site"),
        email = t("Email or user name"),
        password = t("Password"),
        busy = t("Logging in..."),
        login = t("Log in"),
        msgs = script_json(&super::i18n::messages(lang)),
    )
}

/// The desk shell; `desk.js` renders the page from `boot` and the URL.
pub fn app_page(lang: Lang, boot: &Value) -> String {
    format!(
        "{head}<body><div id=\"app\"><div class=\"boot-loading\">docstream</div></div>\
         <script id=\"boot\" type=\"application/json\">{boot}</script>\
         <script src=\"/assets/desk/desk.js?v={v}\"></script></body></html>",
        head = head(lang, "docstream"),
        boot = script_json(boot),
        v = version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_json_cannot_close_its_script() {
        let s = script_json(&serde_json::json!({"x": "</script><script>alert(1)</script>"}));
        assert!(!s.contains("</script"));
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["x"], "</script><script>alert(1)</script>");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
