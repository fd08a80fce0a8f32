//! The web desk: HTTP checks of its pages and assets, and the browser test
//! (`tests/js/desk_test.mjs`, Debian's Chromium driven headless by playwright-core) that goes
//! through the whole streaming set-up on two real sites. Screenshots land in `tests/artifacts/`.

mod common;
use common::node::{ensure_npm_packages, js_dir, node_available, run};
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A desk session cookie and its CSRF token, as the login page gets them.
async fn desk_login(site: &TestSite) -> (String, String) {
    let (sid, body) = site.login_session(true).await;
    (sid, body["csrf_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_and_assets_are_embedded() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let http = no_redirects();
    // A visitor is sent to the login page, keeping where they were going.
    let r = http
        .get(format!("{}/app/event-producer?status=x", site.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/login?redirect-to=%2Fapp%2Fevent%2Dproducer%3Fstatus%3Dx"
    );
    let login = http
        .get(format!("{}/login", site.url))
        .header("accept-language", "pt-BR,pt;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let text = login.text().await.unwrap();
    assert!(text.contains("Entre no seu site"), "{text}");
    // Assets come from the binary.
    for (path, mime) in [
        ("desk.js", "text/javascript"),
        ("desk.css", "text/css"),
        ("login.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = http
            .get(format!("{}/assets/desk/{path}", site.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(mime));
    }
    let r = http
        .get(format!("{}/assets/desk/nope.js", site.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // With a session: the shell, with the CSRF token and the sidebar in its boot data.
    let (sid, csrf) = desk_login(&site).await;
    let r = http
        .get(format!("{}/app/todo", site.url))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let shell = r.text().await.unwrap();
    assert!(shell.contains(&csrf), "boot data carries the CSRF token");
    assert!(shell.contains("\"Automation\""));
    // Logged in, /login goes on to the desk (never to another site).
    let r = http
        .get(format!("{}/login?redirect-to=//evil.example", site.url))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/app");
    // The desk session's writes need the token.
    let r = http
        .post(format!("{}/api/resource/ToDo", site.url))
        .header("cookie", &sid)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{}/api/resource/ToDo", site.url))
        .header("cookie", &sid)
        .header("x-frappe-csrf-token", &csrf)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desk_methods_meta_search_and_dashboard() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let (s, b) = site
        .get("/api/method/frappe.desk.form.load.getdoctype?doctype=event-producer")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["docs"][0]["name"], "Event Producer");
    assert_eq!(b["docs"][1]["name"], "Event Producer Document Type");
    assert_eq!(b["perms"]["create"], true);
    assert!(
        b.get("message").is_none(),
        "Frappe's shape: docs at the top: {b}"
    );
    let (s, b) = site
        .get("/api/method/frappe.desk.search.search_link?doctype=DocType&txt=event%20prod")
        .await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Event Producer"), "{names:?}");
    site.insert("Role", json!({"role_name": "Stock Keeper"}))
        .await;
    let (s, b) = site
        .get("/api/method/frappe.desk.search.search_link?doctype=Role&txt=stock")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["message"][0]["value"], "Stock Keeper");
    let (s, b) = site
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["message"]["producers"], json!([]));
    assert_eq!(b["message"]["consumers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walkthrough_of_streaming_setup() {
    if !node_available() || !Path::new(CHROMIUM).exists() {
        eprintln!(
            "\n\n!!!!!!!! Node.js or {CHROMIUM} is missing: the desk's browser test is SKIPPED !!!!!!!!\n\
             !!!!!!!! ./scripts/test.sh installs Chromium (apt-get install chromium)      !!!!!!!!\n"
        );
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    ensure_npm_packages("playwright-core", scratch.path()).await;
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    // The producer backs itself up every hour (the first at start); the consumer's backup
    // folder cannot be made, so its dashboard shows the failure.
    let p_settings = [
        settings.clone(),
        [
            ("backup_interval_hours", json!(1)),
            ("backup_dir", json!("backups")),
        ],
    ]
    .concat();
    let c_settings = [
        settings.clone(),
        [
            ("backup_interval_hours", json!(1.0 / 3600.0)),
            ("backup_dir", json!("/dev/null/backups")),
        ],
    ]
    .concat();
    let p = TestSite::start_with(Backend::Sqlite, &p_settings)
        .await
        .unwrap();
    let c = TestSite::start_with(Backend::Sqlite, &c_settings)
        .await
        .unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("artifacts")
        .join("desk");
    let mut node = Command::new("node");
    node.arg(js_dir().join("desk_test.mjs"))
        .arg(&p.url)
        .arg(&c.url)
        .arg(&artifacts)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = run(node, scratch.path(), "desk-test", Duration::from_secs(300)).await;
    eprintln!("{}", out.stdout);
    assert!(
        out.success(),
        "{}\n----- producer log -----\n{}\n----- consumer log -----\n{}",
        out.report("node tests/js/desk_test.mjs failed"),
        p.log(),
        c.log()
    );
    assert!(
        out.stdout.contains("desk steps passed"),
        "{}",
        out.report("desk_test.mjs did not finish")
    );
}
