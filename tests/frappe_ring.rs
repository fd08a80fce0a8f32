//! A ring with a Frappe site: Frappe re-logs what it applies, so a document this site sent it
//! comes back as Frappe's own Create. That echo is merged (what this site left empty is taken,
//! the rest kept), its sync log says "echo merged", and later edits made on the Frappe side
//! apply; a Create for a name this site holds that it never sent there stays a name clash.

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// The fake Frappe site's update log: what it re-logged after applying this site's ToDos.
#[derive(Default)]
struct FrappeLog {
    logs: Vec<Value>,
}

fn frappe_site(state: Arc<Mutex<FrappeLog>>) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::http::Request<axum::body::Body>| {
        let state = state.clone();
        async move {
            use axum::response::IntoResponse;
            let (path, args) = fake_request(req).await;
            let message = match path.as_str() {
                "/api/method/frappe.ping" => json!("pong"),
                "/api/method/frappe.auth.get_logged_user" => json!("es@example.com"),
                "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer" => {
                    json!("{\"last_update\": \"2026-12-01 09:00:00.000000\"}")
                }
                "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer" => {
                    let since = arg(&args, "last_update").unwrap_or_default();
                    let logs = state.lock().unwrap().logs.clone();
                    Value::Array(
                        logs.into_iter()
                            .filter(|l| l["creation"].as_str().unwrap_or("") > since.as_str())
                            .collect(),
                    )
                }
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
    })
}

/// A log as Frappe 14 serves it (data as a JSON string, named by a hash, ordered by creation).
fn log(n: u32, update_type: &str, docname: &str, data: Value) -> Value {
    log_of(n, "ToDo", update_type, docname, data)
}

/// [`log`] of another type.
fn log_of(n: u32, doctype: &str, update_type: &str, docname: &str, data: Value) -> Value {
    json!({"update_type": update_type, "ref_doctype": doctype, "docname": docname,
           "name": format!("log{n}"), "creation": format!("2026-12-01 10:00:{n:02}.000000"),
           "data": data.to_string()})
}

async fn an_echo_is_merged(backend: Backend) {
    let state = Arc::new(Mutex::new(FrappeLog::default()));
    let frappe = serve_fake(frappe_site(state.clone())).await;
    let d = TestSite::start_with(backend, &[("pull_interval", json!(1))])
        .await
        .unwrap();
    d.insert(
        "User",
        json!({"email": "es@example.com", "first_name": "ES", "roles": [{"role": "System Manager"}]}),
    )
    .await;
    let (s, b) = d
        .post(
            "/api/method/frappe.core.doctype.user.user.generate_keys",
            json!({"user": "es@example.com"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A Note of this site's that a ToDo refers to: the Frappe site fetches it as a dependency
    // (it consumes ToDos only) and re-logs it as its own Create.
    let terms = d.insert("Note", json!({"title": "Acme terms"})).await;
    let terms = terms["name"].as_str().unwrap().to_string();
    // A ToDo made before the Frappe site subscribed (it goes out with the first snapshot).
    let early = d
        .insert(
            "ToDo",
            json!({"description": "Ring the bank", "priority": "Low"}),
        )
        .await;
    let early = early["name"].as_str().unwrap().to_string();
    // The Frappe site subscribes to this site's ToDos; the row is approved here.
    let (s, b) = d
        .post(
            "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer",
            json!({"data": json!({"event_consumer": frappe, "user": "es@example.com", "api_key": "k",
                                  "api_secret": "s", "consumer_doctypes": "[{\"doctype\": \"ToDo\"}]"}).to_string()}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let ec = format!("/api/resource/Event Consumer/{frappe}");
    let (_, b) = d.get(&ec).await;
    let rows: Vec<Value> = b["data"]["consumer_doctypes"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(|mut r| {
            r["status"] = json!("Approved");
            r
        })
        .collect();
    let (s, b) = d.put(&ec, json!({"consumer_doctypes": rows})).await;
    assert_eq!(s, 200, "{b}");
    // A ToDo made after (its Create is logged), then edited here.
    let sent = d
        .insert(
            "ToDo",
            json!({"description": "Call Acme", "priority": "Medium"}),
        )
        .await;
    let sent = sent["name"].as_str().unwrap().to_string();
    let (s, b) = d
        .put(
            &format!("/api/resource/ToDo/{sent}"),
            json!({"priority": "High"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // A ToDo this site made under a name the Frappe site had used for one of its own (sent
    // there and skipped by Frappe, which keeps its own): not an echo, its content differs.
    let clash = d.insert("ToDo", json!({"description": "Ours"})).await;
    let clash = clash["name"].as_str().unwrap().to_string();
    // What the Frappe site re-logged: the echoes of this site's ToDos as it received them
    // (with a date it filled), then a real edit made there.
    let frappe_doc = |name: &str, description: &str, priority: &str| {
        json!({"name": name, "doctype": "ToDo", "description": description, "priority": priority,
               "status": "Open", "date": "2026-12-10", "_assign": "[]",
               "owner": "es@example.com", "modified_by": "es@example.com",
               "creation": "2026-12-01 10:00:01.000000", "modified": "2026-12-01 10:00:01.000000"})
    };
    {
        let mut st = state.lock().unwrap();
        st.logs.push(log(
            1,
            "Create",
            &early,
            frappe_doc(&early, "Ring the bank", "Low"),
        ));
        st.logs.push(log(
            2,
            "Create",
            &sent,
            frappe_doc(&sent, "Call Acme", "Medium"),
        ));
        st.logs.push(log(
            3,
            "Update",
            &sent,
            json!({"changed": {"description": "Call Acme Corp"}, "added": {}, "removed": {}, "row_changed": {}}),
        ));
        st.logs.push(log_of(
            4,
            "Note",
            "Create",
            &terms,
            json!({"name": terms, "doctype": "Note", "title": "Acme terms", "public": 0, "notify_on_login": 0,
                   "content": "<p>Net 30</p>", "seen_by": []}),
        ));
    }
    // This site subscribes to the Frappe site's ToDos: a ring.
    let (s, b) = d
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": frappe, "user": "es@example.com", "api_key": "k", "api_secret": "s",
                   "producer_doctypes": [{"ref_doctype": "ToDo", "use_same_name": 1},
                                         {"ref_doctype": "Note", "use_same_name": 1}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", d.log());
    let todo = eventually(15, "the edit made on the Frappe side", || async {
        let t = get_opt(&d, &format!("/api/resource/ToDo/{sent}")).await?;
        (t["description"] == "Call Acme Corp").then_some(t)
    })
    .await;
    assert_eq!(todo["priority"], "High", "this site's later value is kept");
    assert_eq!(todo["date"], "2026-12-10", "what was empty here is taken");
    let (_, first) = d.get(&format!("/api/resource/ToDo/{early}")).await;
    assert_eq!(first["data"]["date"], "2026-12-10", "{first}");
    // The dependency the Frappe site fetched comes back merged too, not as a name clash.
    let note = eventually(15, "the fetched Note's echo", || async {
        let n = get_opt(&d, &format!("/api/resource/Note/{terms}")).await?;
        (n["content"] == "<p>Net 30</p>").then_some(n)
    })
    .await;
    assert_eq!(note["title"], "Acme terms");
    assert_eq!(
        count_of(&d, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
    let (_, b) = d
        .get(&format!(
            r#"/api/resource/Event Sync Log?filters=[["producer_doc","=","{sent}"]]&fields=["update_type","status","note","error"]&order_by=seq asc, creation asc"#
        ))
        .await;
    let logs = b["data"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{b}");
    assert!(logs.iter().all(|l| l["status"] == "Synced"), "{b}");
    let note = logs[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("echo merged") && note.contains("date"),
        "{note}"
    );
    // A Create for a name held here that this site never sent there is still a name clash.
    state.lock().unwrap().logs.push(log(
        6,
        "Create",
        &clash,
        json!({"name": clash, "doctype": "ToDo", "description": "Theirs", "status": "Open"}),
    ));
    let failed = eventually(15, "the clash's sync log", || async {
        let (_, b) = d
            .get(&format!(r#"/api/resource/Event Sync Log?filters=[["producer_doc","=","{clash}"]]&fields=["status","error"]"#))
            .await;
        b["data"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("name clash"),
        "{failed}"
    );
    let (_, ours) = d.get(&format!("/api/resource/ToDo/{clash}")).await;
    assert_eq!(ours["data"]["description"], "Ours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_is_merged_sqlite() {
    an_echo_is_merged(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_is_merged_postgres() {
    an_echo_is_merged(Backend::Postgres).await;
}
