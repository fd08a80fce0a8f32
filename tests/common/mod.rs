//! Test harness: real `docstream` processes on loopback ports, SQLite or PostgreSQL.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod node;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The docstream binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_docstream")
}

/// Which database a test site uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// True when PostgreSQL answers; prints a loud notice when it does not.
pub async fn postgres_available() -> bool {
    match docstream::store::postgres_admin_execute(PG_ADMIN, "SELECT 1").await {
        Ok(()) => true,
        Err(e) => {
            eprintln!("\n\n!!!!!!!! PostgreSQL is not reachable at {PG_ADMIN} ({e}); SKIPPING the PostgreSQL variant of this test !!!!!!!!\n");
            false
        }
    }
}

/// Creates a fresh PostgreSQL database and returns its URL.
pub async fn fresh_pg_database() -> String {
    let name = format!("ds_test_{}_{}", std::process::id(), rand::random::<u32>());
    docstream::store::postgres_admin_execute(PG_ADMIN, &format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Drops the database of a URL made by [`fresh_pg_database`].
pub async fn drop_pg_database(url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    let _ = docstream::store::postgres_admin_execute(
        PG_ADMIN,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
}

/// A free loopback port, never the same twice in one test process.
///
/// Ports come from 20000-32767, below Linux's ephemeral range: a port the OS hands out for
/// `:0` (or to an outgoing connection) can be handed out again before the server that was
/// meant to take it binds, and two tests would then talk to one server.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % SPAN as u32) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A site served by a real `docstream serve` process.
pub struct TestSite {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub port: u16,
    pub url: String,
    /// The URL the site gives itself (`--url`): `url` unless it is reached through a proxy.
    pub public_url: String,
    pub child: Option<Child>,
    pub client: Client,
    pub admin_auth: String,
    pub backend: Backend,
    /// The PostgreSQL database made for this site, dropped with it.
    pub pg_db: Option<String>,
}

impl TestSite {
    /// Creates and serves a site; `None` when the backend is not available.
    pub async fn start(backend: Backend) -> Option<TestSite> {
        Self::start_with(backend, &[]).await
    }

    /// Same, with extra `site_config.json` settings.
    pub async fn start_with(backend: Backend, settings: &[(&str, Value)]) -> Option<TestSite> {
        Self::start_behind(backend, settings, None).await
    }

    /// Same, the site calling itself `http://127.0.0.1:{public_port}` (a proxy's port) while
    /// it listens on a port of its own.
    pub async fn start_behind(
        backend: Backend,
        settings: &[(&str, Value)],
        public_port: Option<u16>,
    ) -> Option<TestSite> {
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                if !postgres_available().await {
                    return None;
                }
                Some(fresh_pg_database().await)
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let public_url = format!("http://127.0.0.1:{}", public_port.unwrap_or(port));
        let name = "site1".to_string();
        let mut cmd = Command::new(bin());
        cmd.args(["new-site", &name, "--data-dir"])
            .arg(dir.path())
            .args(["--admin-password", "admin", "--url", &public_url]);
        if let Some(db) = &db {
            cmd.args(["--db", db]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "new-site failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !settings.is_empty() {
            let p = dir.path().join(&name).join("site_config.json");
            let mut cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            for (k, v) in settings {
                cfg[*k] = v.clone();
            }
            std::fs::write(&p, cfg.to_string()).unwrap();
        }
        let mut site = TestSite {
            dir,
            name,
            port,
            url,
            public_url,
            child: None,
            client: Client::builder().cookie_store(false).build().unwrap(),
            admin_auth: String::new(),
            backend,
            pg_db: db
                .as_ref()
                .and_then(|u| u.rsplit('/').next())
                .map(str::to_string),
        };
        site.serve().await;
        site.admin_auth = site.admin_key().await;
        Some(site)
    }

    /// Serves a site folder made elsewhere (a restored copy, a fixture) as `name` in `dir` on
    /// `port`, calling it with `admin_auth`; on PostgreSQL `pg_db` is dropped with it.
    pub async fn serve_existing(
        dir: tempfile::TempDir,
        name: &str,
        port: u16,
        admin_auth: &str,
        backend: Backend,
        pg_db: Option<&str>,
    ) -> TestSite {
        let mut site = TestSite {
            dir,
            name: name.into(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            public_url: format!("http://127.0.0.1:{port}"),
            child: None,
            client: Client::builder().cookie_store(false).build().unwrap(),
            admin_auth: admin_auth.into(),
            backend,
            pg_db: pg_db.and_then(|u| u.rsplit('/').next()).map(str::to_string),
        };
        site.serve().await;
        site
    }

    /// Starts `docstream serve` and waits until it answers.
    pub async fn serve(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(self.dir.path())
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(format!("{}/health", self.url)).send().await {
                if r.status() == StatusCode::OK {
                    // The answer must come from this process, not another one on the port.
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    assert!(
                        exited.is_none(),
                        "serve exited ({exited:?}): {}",
                        self.log()
                    );
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "site did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Stops the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Logs in as Administrator; returns the `sid=…` cookie and the reply (with `csrf_token`
    /// for a desk session).
    pub async fn login_session(&self, desk: bool) -> (String, Value) {
        let mut body = json!({"usr": "Administrator", "pwd": "admin"});
        if desk {
            body["device"] = json!("desk");
        }
        let r = self
            .client
            .post(format!("{}/api/method/login", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sid = sid_cookie(&r);
        (sid, r.json().await.unwrap())
    }

    /// Logs `usr` in by form, as a browser does; the `sid=...` cookie to send back.
    pub async fn login_as(&self, usr: &str, pwd: &str) -> String {
        let r = self
            .client
            .post(format!("{}/api/method/login", self.url))
            .form(&[("usr", usr), ("pwd", pwd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {usr}");
        sid_cookie(&r)
    }

    /// Logs in as Administrator with a session and calls a method with it.
    pub async fn call_session(&self, method: &str, args: Value) -> Value {
        let (sid, _) = self.login_session(false).await;
        let r = self
            .client
            .post(format!("{}/api/method/{method}", self.url))
            .header("cookie", sid)
            .json(&args)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// A request with an Authorization header (empty: none); returns status and JSON (or text).
    pub async fn request(
        &self,
        auth: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.client.request(method, format!("{}{}", self.url, path));
        if !auth.is_empty() {
            rb = rb.header("authorization", auth);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A form-encoded POST, as FrappeClient sends.
    pub async fn post_form(
        &self,
        auth: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut rb = self.client.post(format!("{}{}", self.url, path)).form(form);
        if !auth.is_empty() {
            rb = rb.header("authorization", auth);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET as Administrator.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(&self.admin_auth, Method::GET, path, None)
            .await
    }

    /// POST JSON as Administrator.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(&self.admin_auth, Method::POST, path, Some(body))
            .await
    }

    /// PUT JSON as Administrator.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(&self.admin_auth, Method::PUT, path, Some(body))
            .await
    }

    /// DELETE as Administrator.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.request(&self.admin_auth, Method::DELETE, path, None)
            .await
    }

    /// Inserts a document as Administrator and returns it, failing the test otherwise.
    pub async fn insert(&self, doctype: &str, doc: Value) -> Value {
        let (s, b) = self.post(&format!("/api/resource/{doctype}"), doc).await;
        assert_eq!(s, 200, "insert {doctype} failed: {b}");
        b["data"].clone()
    }

    /// Inserts `docs` in one `frappe.client.insert_many`; the documents made.
    pub async fn insert_many(&self, docs: Vec<Value>) -> Vec<Value> {
        let (s, b) = self
            .post(
                "/api/method/frappe.client.insert_many",
                json!({ "docs": docs }),
            )
            .await;
        assert_eq!(s, 200, "insert_many failed: {b}");
        b["message"].as_array().cloned().unwrap_or_default()
    }

    /// Makes the Administrator an API key (logging in with the test password); the
    /// `token key:secret` to send.
    pub async fn admin_key(&self) -> String {
        let keys = self
            .call_session(
                "frappe.core.doctype.user.user.generate_keys",
                json!({"user": "Administrator"}),
            )
            .await;
        let secret = keys["message"]["api_secret"].as_str().unwrap().to_string();
        let user = self
            .call_session(
                "frappe.client.get_value",
                json!({"doctype": "User", "fieldname": "api_key", "filters": "Administrator"}),
            )
            .await;
        format!(
            "token {}:{secret}",
            user["message"]["api_key"].as_str().unwrap()
        )
    }

    /// Path to the site's folder.
    pub fn site_dir(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    /// Starts one more `docstream serve` of this site's folder (same database) on a port of
    /// its own, its stderr in `log` when given, and waits until it answers.
    pub async fn serve_another(&self, log: Option<&Path>) -> OtherProcess {
        let port = free_port();
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(self.dir.path())
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .stderr(stderr)
            .spawn()
            .unwrap();
        let other = OtherProcess { port, child };
        let health = format!("{}/health", other.url());
        eventually(20, "the other process answers", || async {
            self.client
                .get(&health)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        other
    }
}

/// `docstream site NAME verify [args]`: exit code, stdout and stderr.
pub fn cli_verify(c: &TestSite, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["site", &c.name, "--data-dir"])
        .arg(c.dir.path())
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Another process serving a test site; SIGKILLed when dropped.
pub struct OtherProcess {
    pub port: u16,
    pub child: Child,
}

impl OtherProcess {
    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        self.kill();
        if let Some(db) = self.pg_db.take() {
            // Best effort, on a thread of its own: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let _ = docstream::store::postgres_admin_execute(
                        PG_ADMIN,
                        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                    )
                    .await;
                });
            })
            .join();
        }
    }
}

/// Asserts an error response: status and Frappe exc_type, with the envelope's keys present.
pub fn assert_error(resp: &(StatusCode, Value), status: u16, exc_type: &str) {
    assert_eq!(
        resp.0.as_u16(),
        status,
        "unexpected status, body: {}",
        resp.1
    );
    assert_eq!(resp.1["exc_type"], exc_type, "body: {}", resp.1);
    // A missing document or type has no `exc` (see `assert_missing`); anything else has one.
    if !(status == 404 && exc_type == "DoesNotExistError") {
        assert!(
            resp.1["exc"].as_str().is_some_and(|e| e.contains(exc_type)),
            "exc missing: {}",
            resp.1
        );
    }
    assert!(
        resp.1["_server_messages"].is_string(),
        "_server_messages missing: {}",
        resp.1
    );
    assert!(
        !resp.1.to_string().contains("Traceback"),
        "traceback leaked"
    );
}

/// A missing document or type, answered as Frappe answers it: 404 `DoesNotExistError` with
/// `exception` and `_server_messages` and without `exc` (Frappe's clients then return None).
pub fn assert_missing(resp: &(StatusCode, Value)) {
    assert_error(resp, 404, "DoesNotExistError");
    assert!(resp.1.get("exc").is_none(), "exc present: {}", resp.1);
    assert!(
        resp.1["exception"].is_string(),
        "exception missing: {}",
        resp.1
    );
}

/// An unknown method or route: 404 with `exc`, so that no client takes it for an empty success.
pub fn assert_no_method(resp: &(StatusCode, Value)) {
    assert_error(resp, 404, "DoesNotExistError");
    assert!(resp.1["exc"].is_string(), "exc missing: {}", resp.1);
}

/// The `sid=...` cookie a login answer sets, to send back as the `cookie` header.
pub fn sid_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok().filter(|v| v.starts_with("sid=")))
        .expect("the login answer sets sid")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs an async test body for SQLite and, when reachable, PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(site) = TestSite::start(Backend::Sqlite).await {
                    ($body)(site).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(site) = TestSite::start(Backend::Postgres).await {
                    ($body)(site).await;
                }
            }
        }
    };
}

// ---- Fake Frappe sites ----

/// Serves a fake Frappe site on a free loopback port; its URL.
pub async fn serve_fake(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A request to a fake site: its path and its arguments (query and form body together).
pub async fn fake_request(
    req: axum::http::Request<axum::body::Body>,
) -> (String, Vec<(String, String)>) {
    let path = req.uri().path().to_string();
    let mut args: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    args.extend(serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).unwrap_or_default());
    (path, args)
}

/// An argument of a fake site's request.
pub fn arg(args: &[(String, String)], k: &str) -> Option<String> {
    args.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// A Frappe consumer's pull: a POST to `/` with `cmd`, as FrappeClient.post_request sends it.
pub async fn frappe_pull(
    p: &TestSite,
    auth: &str,
    consumer: &str,
    doctypes: &str,
    since: &str,
) -> Vec<Value> {
    let (s, b) = p
        .post_form(auth, "/", &[
            ("cmd", "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer"),
            ("event_consumer", consumer),
            ("doctypes", doctypes),
            ("last_update", since),
        ])
        .await;
    assert_eq!(s, 200, "{b}");
    let logs = b["message"].as_array().cloned().expect("a list of logs");
    for l in &logs {
        // What Frappe's consumer reads of each log.
        for k in ["update_type", "ref_doctype", "docname", "creation", "name"] {
            assert!(!l[k].is_null(), "{k} missing from {l}");
        }
        match l["update_type"].as_str().unwrap() {
            "Delete" => assert!(l["data"].is_null(), "{l}"),
            _ => assert!(l["data"].is_string(), "data is a JSON string: {l}"),
        }
    }
    logs
}

/// A log's `data`, parsed.
pub fn data_of(log: &Value) -> Value {
    serde_json::from_str(log["data"].as_str().unwrap()).unwrap()
}

// ---- Event streaming between two sites ----

/// Polls `f` until it returns Some, or fails after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the Event Subscriber with keys on a site; returns its `token key:secret`.
pub async fn subscriber(site: &TestSite) -> (String, String) {
    site.insert("User", json!({"email": "sync@example.com", "first_name": "Sync", "roles": [{"role": "System Manager"}]})).await;
    let (_, k) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.core.doctype.user.user.generate_keys",
            Some(json!({"user": "sync@example.com"})),
        )
        .await;
    let secret = k["message"]["api_secret"].as_str().unwrap().to_string();
    let (_, u) = site.get("/api/resource/User/sync@example.com").await;
    (u["data"]["api_key"].as_str().unwrap().to_string(), secret)
}

pub async fn start_pair() -> (TestSite, TestSite) {
    start_pair_on(Backend::Sqlite).await.unwrap()
}

/// A producer and a consumer on `backend`; `None` when that backend is not reachable.
pub async fn start_pair_on(backend: Backend) -> Option<(TestSite, TestSite)> {
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    let p = TestSite::start_with(backend, &settings).await?;
    let c = TestSite::start_with(backend, &settings).await?;
    Some((p, c))
}

/// Subscribes `consumer` to `rows` of `producer` and approves them all.
pub async fn subscribe(p: &TestSite, c: &TestSite, rows: Value) -> String {
    let (pkey, psecret) = subscriber(p).await;
    subscriber(c).await;
    subscribe_with_keys(p, c, rows, &pkey, &psecret).await;
    pkey
}

/// Subscribes `consumer` (whose Event Subscriber exists) to `rows` of `producer` with the
/// producer's Event Subscriber keys, and approves them all.
pub async fn subscribe_with_keys(
    p: &TestSite,
    c: &TestSite,
    rows: Value,
    pkey: &str,
    psecret: &str,
) {
    let (s, ep) = c.post("/api/resource/Event Producer", json!({"producer_url": p.public_url, "producer_doctypes": rows, "user": "sync@example.com", "api_key": pkey, "api_secret": psecret})).await;
    assert_eq!(
        s,
        200,
        "Event Producer insert failed: {ep}\nconsumer log: {}",
        c.log()
    );
    assert_eq!(ep["data"]["api_secret"], "*****");
    let (s, ec) = p
        .get(&format!("/api/resource/Event Consumer/{}", c.public_url))
        .await;
    assert_eq!(s, 200, "{ec}");
    let mut crow = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    assert!(
        crow.iter().all(|r| r["status"] == "Pending"),
        "new rows are Pending: {ec}"
    );
    for r in crow.iter_mut() {
        r["status"] = json!("Approved");
    }
    let (s, b) = p
        .put(
            &format!("/api/resource/Event Consumer/{}", c.public_url),
            json!({"consumer_doctypes": crow}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let url = p.public_url.clone();
    eventually(10, "approval mirrored on the consumer", || async {
        let (_, ep) = c.get(&format!("/api/resource/Event Producer/{url}")).await;
        ep["data"]["producer_doctypes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Approved")
            .then_some(())
    })
    .await;
}

/// Asserts a child row in an update log is whole, as Frappe's consumer reads it (it inserts
/// the row as it comes).
pub fn assert_whole_child_row(row: &Value) {
    for key in [
        "doctype",
        "name",
        "parent",
        "parentfield",
        "parenttype",
        "idx",
    ] {
        assert!(!row[key].is_null(), "{key} missing from the row {row}");
    }
}

/// Every document of `doctype` on a site, by name, with the text of one `field`: for
/// comparing what two sites hold.
pub async fn field_by_name(
    site: &TestSite,
    doctype: &str,
    field: &str,
) -> std::collections::BTreeMap<String, String> {
    let (s, b) = site
        .get(&format!(
            r#"/api/resource/{doctype}?fields=["name","{field}"]&limit_page_length=0"#
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r[field].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub async fn get_opt(site: &TestSite, path: impl Into<String>) -> Option<Value> {
    let (s, b) = site.get(&path.into()).await;
    (s == 200).then(|| b["data"].clone())
}

pub async fn count_of(site: &TestSite, doctype: &str, filters: Value) -> i64 {
    let (s, b) = site
        .request(
            &site.admin_auth,
            Method::POST,
            "/api/method/frappe.client.get_count",
            Some(json!({"doctype": doctype, "filters": filters})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["message"].as_i64().unwrap()
}

/// What a Sales Invoice needs on a site: UOM `Nos`, Item Group `All`, Item `I1`, Customer `Both`.
pub async fn seed_invoice_masters(site: &TestSite) {
    site.insert("UOM", json!({"uom_name": "Nos"})).await;
    site.insert("Item Group", json!({"item_group_name": "All"}))
        .await;
    site.insert("Item", json!({"item_code": "I1", "item_group": "All"}))
        .await;
    site.insert("Customer", json!({"customer_name": "Both"}))
        .await;
}
