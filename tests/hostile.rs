//! What a second adversarial sweep found, each driven as the attacker drove it: a private file
//! leaking to another site through an Attach field, an upload body held whole in memory, a
//! pull page answering a request changed on the way, a newly approved type waiting out a long
//! poll, and hostile list queries answered with 500.

mod common;
use common::fault_proxy::{FaultProxy, Rewrite};
use common::*;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A user with these roles and API keys; its `token key:secret`.
async fn user_token(site: &TestSite, email: &str, roles: &[&str]) -> String {
    let roles: Vec<Value> = roles.iter().map(|r| json!({"role": r})).collect();
    site.insert(
        "User",
        json!({"email": email, "first_name": "U", "roles": roles}),
    )
    .await;
    let (_, k) = site
        .post(
            "/api/method/frappe.core.doctype.user.user.generate_keys",
            json!({ "user": email }),
        )
        .await;
    let (_, u) = site.get(&format!("/api/resource/User/{email}")).await;
    format!(
        "token {}:{}",
        u["data"]["api_key"].as_str().unwrap(),
        k["message"]["api_secret"].as_str().unwrap()
    )
}

async fn upload(site: &TestSite, auth: &str, name: &str, bytes: &[u8], private: bool) -> Value {
    let form = Form::new()
        .part(
            "file",
            Part::bytes(bytes.to_vec()).file_name(name.to_string()),
        )
        .text("is_private", if private { "1" } else { "0" });
    let r = site
        .client
        .post(format!("{}/api/method/upload_file", site.url))
        .header("authorization", auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["message"].clone()
}

/// The server's peak resident memory so far (VmHWM), in KiB.
fn peak_kib(site: &TestSite) -> u64 {
    let pid = site.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn private_files_stay_home(backend: Backend) {
    let Some((p, c)) = start_pair_on(backend).await else {
        return;
    };
    for site in [&p, &c] {
        let (s, b) = site
            .post(
                "/api/resource/Custom Field",
                json!({"dt": "Note", "fieldname": "attachment", "fieldtype": "Attach", "label": "Attachment"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let hr = user_token(&p, "hr@example.com", &[]).await;
    let clerk = user_token(&p, "clerk@example.com", &[]).await;
    let payroll = upload(&p, &hr, "payroll.txt", b"salaries", true).await;
    let payroll_url = payroll["file_url"].as_str().unwrap().to_string();
    assert_eq!(payroll_url, "/private/files/payroll.txt");
    // The clerk may write Notes but not read HR's file: naming it in an Attach field is
    // refused, on insert and on update, and nothing is written.
    let (s, b) = p
        .request(
            &clerk,
            Method::POST,
            "/api/resource/Note",
            Some(json!({"title": "grab", "attachment": payroll_url})),
        )
        .await;
    assert_error(&(s, b), 403, "PermissionError");
    let (s, b) = p
        .request(
            &clerk,
            Method::POST,
            "/api/resource/Note",
            Some(json!({"title": "mine"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let note = b["data"]["name"].as_str().unwrap().to_string();
    let (s, b) = p
        .request(
            &clerk,
            Method::PUT,
            &format!("/api/resource/Note/{note}"),
            Some(json!({"attachment": payroll_url})),
        )
        .await;
    assert_error(&(s, b), 403, "PermissionError");
    // A private file of the clerk's own travels with the Note.
    let own = upload(&p, &clerk, "own.txt", b"my notes", true).await;
    let own_url = own["file_url"].as_str().unwrap().to_string();
    let (s, b) = p
        .request(
            &clerk,
            Method::PUT,
            &format!("/api/resource/Note/{note}"),
            Some(json!({"attachment": own_url})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(15, "the clerk's note and file on the consumer", || async {
        let d = get_opt(&c, format!("/api/resource/Note/{note}")).await?;
        (d["attachment"] == own_url.as_str()
            && count_of(&c, "File", json!({"file_url": own_url})).await == 1)
            .then_some(())
    })
    .await;
    // A System Manager may attach it: it then travels, since on a docstream producer the
    // writer was checked.
    assert_eq!(
        count_of(&c, "File", json!({"file_url": payroll_url})).await,
        0,
        "HR's file never reached the consumer"
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_stay_home_sqlite() {
    private_files_stay_home(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_stay_home_postgres() {
    private_files_stay_home(Backend::Postgres).await;
}

/// Sends `total` bytes of small multipart form fields to `upload_file` over a raw connection;
/// returns the status line the server answered (empty if it closed without one).
async fn flood_upload(site: &TestSite, auth: &str, total: usize) -> String {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", site.port))
        .await
        .unwrap();
    let field = "--XBOUNDARY\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\n";
    let head = format!(
        "POST /api/method/upload_file HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=XBOUNDARY\r\nContent-Length: {total}\r\n{}\r\n",
        if auth.is_empty() { String::new() } else { format!("Authorization: {auth}\r\n") }
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = field.repeat(64 * 1024 / field.len());
    let mut sent = 0;
    while sent < total {
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

both_backends!(
    uploads_are_bounded_before_they_are_read,
    |site: TestSite| async move {
        let user = user_token(&site, "up@example.com", &[]).await;
        let before = peak_kib(&site);
        // A visitor is refused before the body is read; a user's many small fields are cut
        // off once they pass the small bound of form fields.
        let guest = flood_upload(&site, "", 150 << 20).await;
        assert!(guest.contains(" 403 "), "{guest}");
        let flood = flood_upload(&site, &user, 150 << 20).await;
        assert!(flood.contains(" 413 "), "{flood}");
        let grown = peak_kib(&site).saturating_sub(before);
        assert!(grown < 40 * 1024, "peak memory grew by {grown} KiB");
        // The site still serves, and a real upload still works.
        let ok = upload(&site, &user, "fine.txt", b"fine", false).await;
        assert_eq!(ok["file_url"], "/files/fine.txt");
        // Another user's private file name does not tell whether a guessed content is right:
        // the right guess and a wrong one both get a URL of their own.
        let hr = user_token(&site, "hr2@example.com", &[]).await;
        upload(&site, &hr, "payroll.txt", b"salaries", true).await;
        let right = upload(&site, &user, "payroll.txt", b"salaries", true).await;
        let wrong = upload(&site, &user, "payroll.txt", b"guess", true).await;
        for got in [&right, &wrong] {
            let url = got["file_url"].as_str().unwrap();
            assert!(url.starts_with("/private/files/payroll-"), "{url}");
        }
    }
);

/// Rewrites `after_seq=N` in a form body to `after_seq=N+3`.
fn plus_three() -> Rewrite {
    Arc::new(|body: &str| {
        body.split('&')
            .map(|kv| match kv.strip_prefix("after_seq=") {
                Some(n) => format!("after_seq={}", n.parse::<i64>().unwrap_or(0) + 3),
                None => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

async fn todo_names(site: &TestSite) -> Vec<String> {
    let (_, b) = site
        .get("/api/resource/ToDo?limit_page_length=0&order_by=name%20asc")
        .await;
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

async fn pages_bound_to_their_request(backend: Backend) {
    let proxy_port = free_port();
    // No long poll: one waiting from before the rewrite would ask honestly and may bring
    // several of the logs below at once (as many as were committed when it woke), a race
    // under load; every pull after the switch goes through the rewrite.
    let settings = [
        ("pull_interval", json!(0.5)),
        ("retry_base_seconds", json!(3600)),
        ("pull_wait_seconds", json!(0)),
    ];
    let Some(p) = TestSite::start_behind(backend, &settings, Some(proxy_port)).await else {
        return;
    };
    let proxy = FaultProxy::start(proxy_port, p.port).await;
    let c = TestSite::start_with(backend, &settings).await.unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    p.insert("ToDo", json!({"description": "first"})).await;
    eventually(15, "the first ToDo", || async {
        (todo_names(&c).await.len() == 1).then_some(())
    })
    .await;
    // Every pull's after_seq is moved on by 3 on the way: the producer answers what it was
    // asked, bound to that request, and the consumer refuses a page for another request.
    proxy.rewrite(Some(plus_three()));
    for i in 0..12 {
        p.insert("ToDo", json!({"description": format!("moved {i}")}))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The long poll already waiting asked honestly: it may bring the first of them, no more.
    let held = todo_names(&c).await.len();
    assert!(held <= 2, "{held} applied through a rewritten request");
    let (s, b) = c
        .post(
            "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node",
            json!({"event_producer": p.public_url}),
        )
        .await;
    assert!(s != 200, "a manual pull says what failed: {b}");
    assert!(
        b.to_string().contains("another request"),
        "the refusal names the cause: {b}"
    );
    // A consumer that has had bound pages refuses an unbound one (an older server, or a
    // proxy dropping the request's `bound`).
    proxy.rewrite(Some(Arc::new(|body: &str| {
        body.replace("&bound=1", "").replace("bound=1&", "")
    })));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(todo_names(&c).await.len(), held, "nothing applied unbound");
    proxy.rewrite(None);
    eventually(20, "all 13 ToDos once the line is honest", || async {
        (todo_names(&c).await == todo_names(&p).await).then_some(())
    })
    .await;
    assert_eq!(todo_names(&c).await.len(), 13);
    // A pull that does not ask for a bound page gets today's page, byte for byte.
    let (s, b) = p
        .post_form(
            &p.admin_auth,
            "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer",
            &[
                ("event_consumer", c.public_url.as_str()),
                ("doctypes", r#"["ToDo"]"#),
                ("after_seq", "0"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["message", "last_seq", "count", "has_more", "sha256"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_bound_to_their_request_sqlite() {
    pages_bound_to_their_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_bound_to_their_request_postgres() {
    pages_bound_to_their_request(Backend::Postgres).await;
}

async fn a_new_type_is_live_at_once(backend: Backend) {
    // No interval pulls to speak of: only the long poll (and Pull Now) bring documents.
    let settings = [
        ("pull_interval", json!(3600)),
        ("retry_base_seconds", json!(3600)),
    ];
    let Some(p) = TestSite::start_with(backend, &settings).await else {
        return;
    };
    let c = TestSite::start_with(backend, &settings).await.unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    p.insert("ToDo", json!({"description": "warm"})).await;
    eventually(15, "the first ToDo", || async {
        (todo_names(&c).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The consumer subscribes to Notes too while its long poll waits; the producer approves.
    subscribe_more(&p, &c, "Note").await;
    let note = p.insert("Note", json!({"title": "first note"})).await;
    let name = note["name"].as_str().unwrap().to_string();
    let started = Instant::now();
    eventually(10, "the first Note on the consumer", || async {
        get_opt(&c, format!("/api/resource/Note/{name}")).await
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the first document of a newly approved type took {took:?}"
    );
    // Pull Now brings a newly approved type's document too, whatever the long poll does.
    subscribe_more(&p, &c, "UOM").await;
    p.insert("UOM", json!({"uom_name": "Box"})).await;
    let (s, b) = c
        .post(
            "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node",
            json!({"event_producer": p.public_url}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        get_opt(&c, "/api/resource/UOM/Box").await.is_some(),
        "Pull Now answered {b} without the UOM"
    );
}

/// Adds a row for `doctype` to the consumer's Event Producer and approves it on the producer.
async fn subscribe_more(p: &TestSite, c: &TestSite, doctype: &str) {
    let ep = format!("/api/resource/Event Producer/{}", p.public_url);
    let (_, b) = c.get(&ep).await;
    let mut rows = b["data"]["producer_doctypes"].as_array().unwrap().clone();
    let n = rows.len() + 1;
    rows.push(json!({"ref_doctype": doctype, "use_same_name": 1, "sync_existing": 0}));
    let (s, b) = c.put(&ep, json!({"producer_doctypes": rows})).await;
    assert_eq!(s, 200, "{b}");
    let ec = format!("/api/resource/Event Consumer/{}", c.public_url);
    let rows = eventually(10, "the new row on the producer", || async {
        let (_, b) = p.get(&ec).await;
        let rows = b["data"]["consumer_doctypes"].as_array()?.clone();
        (rows.len() == n).then_some(rows)
    })
    .await;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|mut r| {
            r["status"] = json!("Approved");
            r
        })
        .collect();
    let (s, b) = p.put(&ec, json!({"consumer_doctypes": rows})).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_is_live_at_once_sqlite() {
    a_new_type_is_live_at_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_type_is_live_at_once_postgres() {
    a_new_type_is_live_at_once(Backend::Postgres).await;
}

both_backends!(hostile_requests_get_a_4xx, |site: TestSite| async move {
    for i in 0..3 {
        site.insert(
            "ToDo",
            json!({"description": format!("t{i}"), "priority": "Low"}),
        )
        .await;
    }
    let list = |q: &str| format!("/api/resource/ToDo?{q}");
    let big_in: Vec<String> = (0..70_000).map(|i| i.to_string()).collect();
    let many_or: Vec<Value> = (0..15_000)
        .map(|i| json!(["description", "=", format!("x{i}")]))
        .collect();
    let cases = [
        list("fields=[\"name\"]&order_by=count(name)%20desc"),
        list("limit_start=9223372036854775808"),
        list("limit_page_length=9223372036854775808"),
        list("fields=[\"name%20as%20%60%60\"]"),
        list("fields=[\"name%20as%20%22%22\"]"),
    ];
    for path in &cases {
        let r = site.get(path).await;
        assert_error(&r, 417, "ValidationError");
    }
    // Too many values for one statement, and a chain of or_filters deeper than SQLite's
    // expression limit (now balanced, so it runs).
    let r = site
        .post_form(
            &site.admin_auth,
            "/api/method/frappe.client.get_list",
            &[
                ("doctype", "ToDo"),
                ("filters", &json!([["name", "in", big_in]]).to_string()),
            ],
        )
        .await;
    assert_error(&r, 417, "ValidationError");
    let (s, b) = site
        .post_form(
            &site.admin_auth,
            "/api/method/frappe.client.get_list",
            &[
                ("doctype", "ToDo"),
                ("or_filters", &Value::Array(many_or).to_string()),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A LIKE pattern that ends in a backslash matches a backslash.
    site.insert("ToDo", json!({"description": "ends in \\"}))
        .await;
    let (s, b) = site
        .get(&list(
            "filters=[[\"description\",\"like\",\"%25\\\\\"]]&fields=[\"description\"]",
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 1, "{b}");
    // A sum past 2^63 (a Custom Field holding large integers).
    let (s, b) = site
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "ToDo", "fieldname": "big", "fieldtype": "Int", "label": "Big"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for _ in 0..2 {
        site.insert("ToDo", json!({"description": "big", "big": i64::MAX}))
            .await;
    }
    let r = site.get(&list("fields=[\"sum(big)%20as%20s\"]")).await;
    assert_error(&r, 417, "ValidationError");
    // set_value with a fieldname that is neither a field nor JSON, or that holds a NUL.
    let todo = site.insert("ToDo", json!({"description": "v"})).await;
    let name = todo["name"].as_str().unwrap();
    for fieldname in ["{\"description\": ", "description\u{0}", "no_such_field"] {
        let r = site
            .post_form(
                &site.admin_auth,
                "/api/method/frappe.client.set_value",
                &[
                    ("doctype", "ToDo"),
                    ("name", name),
                    ("fieldname", fieldname),
                    ("value", "changed"),
                ],
            )
            .await;
        assert!(matches!(r.0.as_u16(), 400 | 417), "{fieldname:?}: {:?}", r);
    }
    // A user with no role writing Has Role rows is refused for want of permission.
    let nobody = user_token(&site, "nobody@example.com", &[]).await;
    let (s, b) = site
            .request(
                &nobody,
                Method::POST,
                "/api/resource/Has Role",
                Some(json!({"parent": "nobody@example.com", "parenttype": "User", "parentfield": "roles", "role": "System Manager"})),
            )
            .await;
    assert_error(&(s, b), 403, "PermissionError");
    // A shop's tunnel poll with a wait that is not a number.
    let (s, b) = site
        .post_form(
            &site.admin_auth,
            "/api/method/docstream.tunnel.poll",
            &[("producer_url", "http://127.0.0.1:1"), ("wait", "NaN")],
        )
        .await;
    assert!(matches!(s.as_u16(), 400 | 403), "{s} {b}");
    let (s, b) = site.get("/api/method/frappe.ping").await;
    assert_eq!(s, 200, "the site still serves: {b}");
});

async fn pages_keep_to_their_bound(backend: Backend) {
    // Pages of at most 1 MiB (half the 2 MiB body bound).
    let settings = [
        ("pull_interval", json!(0.5)),
        ("retry_base_seconds", json!(3600)),
        ("max_body_bytes", json!(2 << 20)),
        ("max_file_bytes", json!(100_000)),
    ];
    let Some(p) = TestSite::start_with(backend, &settings).await else {
        return;
    };
    let c = TestSite::start_with(backend, &settings).await.unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    // Ten notes of 300 kB travel in several pages; one of 1.5 MB cannot travel at all.
    for batch in 0..2 {
        let docs: Vec<Value> = (0..5)
            .map(|i| json!({"doctype": "Note", "title": format!("n{batch}-{i}"), "content": "x".repeat(300_000)}))
            .collect();
        p.insert_many(docs).await;
    }
    let huge = p
        .insert(
            "Note",
            json!({"title": "huge", "content": "y".repeat(1_500_000)}),
        )
        .await;
    let huge_name = huge["name"].as_str().unwrap().to_string();
    p.insert("Note", json!({"title": "after"})).await;
    eventually(30, "the ten notes and the one after", || async {
        (count_of(&c, "Note", json!({})).await == 11).then_some(())
    })
    .await;
    let failed = eventually(10, "a Failed sync naming the huge note", || async {
        let (_, b) = c
            .get(r#"/api/resource/Event Sync Log?filters=[["status","=","Failed"]]&fields=["producer_doc","error"]"#)
            .await;
        b["data"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(failed["producer_doc"], huge_name.as_str(), "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("page bound"), "{error}");
    assert!(get_opt(&c, format!("/api/resource/Note/{huge_name}"))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_to_their_bound_sqlite() {
    pages_keep_to_their_bound(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_keep_to_their_bound_postgres() {
    pages_keep_to_their_bound(Backend::Postgres).await;
}

/// A Frappe 14 producer of Notes with an Attach field, as Frappe behaves: it attaches any
/// private URL saved in the field, whoever saved it (its File list then shows the original
/// owner's File beside the one made for the document).
async fn frappe_notes(req: axum::http::Request<axum::body::Body>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (path, args) = fake_request(req).await;
    let note = |name: &str, file: &str| {
        json!({"name": name, "doctype": "Note", "title": name, "attachment": file,
               "owner": "clerk@example.com", "modified_by": "clerk@example.com",
               "creation": "2026-12-01 10:00:00.000000", "modified": "2026-12-01 10:00:00.000000"})
    };
    let log = |n: i64, name: &str, file: &str| {
        json!({"update_type": "Create", "ref_doctype": "Note", "docname": name, "name": n,
               "creation": format!("2026-12-01 10:00:0{n}.000000"), "data": note(name, file).to_string()})
    };
    let message = match path.as_str() {
        "/api/method/frappe.ping" => json!("pong"),
        "/api/method/frappe.auth.get_logged_user" => json!("es@example.com"),
        "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer" => {
            json!("{\"last_update\": \"2026-12-01 09:00:00.000000\"}")
        }
        "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer" => {
            let since = arg(&args, "last_update").unwrap_or_default();
            let logs = [
                log(1, "grab", "/private/files/payroll.txt"),
                log(2, "mine", "/private/files/own.txt"),
            ];
            Value::Array(
                logs.into_iter()
                    .filter(|l| l["creation"].as_str().unwrap_or("") > since.as_str())
                    .collect(),
            )
        }
        "/api/method/frappe.client.get_list" => {
            let filters = arg(&args, "filters").unwrap_or_default();
            if filters.contains("payroll.txt") {
                json!([{"owner": "hr@example.com", "file_name": "payroll.txt", "is_private": 1},
                       {"owner": "clerk@example.com", "file_name": "payroll.txt", "is_private": 1}])
            } else {
                json!([{"owner": "clerk@example.com", "file_name": "own.txt", "is_private": 1}])
            }
        }
        "/api/resource/Note/grab" => return axum::Json(json!({"data": note("grab", "/private/files/payroll.txt")})).into_response(),
        "/api/resource/Note/mine" => return axum::Json(json!({"data": note("mine", "/private/files/own.txt")})).into_response(),
        "/private/files/payroll.txt" => return "salaries".into_response(),
        "/private/files/own.txt" => return "my notes".into_response(),
        other => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"exc_type": "DoesNotExistError", "exception": other})),
            )
                .into_response()
        }
    };
    axum::Json(json!({ "message": message })).into_response()
}

/// From a Frappe producer, a private file travels only when every File there with its URL is
/// the document's owner's or last modifier's; otherwise the sync log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_producer_sends_only_its_writers_private_files() {
    let producer = serve_fake(axum::Router::new().fallback(frappe_notes)).await;
    let c = TestSite::start_with(Backend::Sqlite, &[("pull_interval", json!(1))])
        .await
        .unwrap();
    let (s, b) = c
        .post(
            "/api/resource/Custom Field",
            json!({"dt": "Note", "fieldname": "attachment", "fieldtype": "Attach", "label": "Attachment"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    user_token(&c, "es@example.com", &["System Manager"]).await;
    let (s, b) = c
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": producer, "user": "es@example.com", "api_key": "k", "api_secret": "s",
                   "producer_doctypes": [{"ref_doctype": "Note", "use_same_name": 1}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", c.log());
    eventually(15, "the writer's own file", || async {
        (count_of(&c, "File", json!({"file_url": "/private/files/own.txt"})).await == 1)
            .then_some(())
    })
    .await;
    let failed = eventually(10, "the refused file's sync log", || async {
        let (_, b) = c
            .get(r#"/api/resource/Event Sync Log?filters=[["status","=","Failed"]]&fields=["producer_doc","error"]"#)
            .await;
        b["data"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(failed["producer_doc"], "grab", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("payroll.txt") && error.contains("hr@example.com"),
        "{error}"
    );
    assert_eq!(
        count_of(
            &c,
            "File",
            json!({"file_url": "/private/files/payroll.txt"})
        )
        .await,
        0
    );
}
