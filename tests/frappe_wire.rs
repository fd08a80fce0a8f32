//! A docstream consumer against a Frappe 14 producer, replayed from the exchanges captured on
//! the wire (`../shared/reference/frappe-wire.md`): the producer's answers are those bytes, so
//! this checks that docstream reads what a real Frappe site sends (a JSON string inside
//! `message`, update logs without `seq`, `data` as a JSON string with dunder keys, integer log
//! names, the `last_update` cursor).

mod common;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// The types the fake Frappe consumer subscribes to.
const NOTE_AND_TODO: &str = "[\"Note\", \"ToDo\"]";

/// The three logs of the capture: Create, Update, then (once deleted) Delete.
fn captured_logs(deleted: bool) -> Vec<Value> {
    let mut logs = vec![
        json!({"update_type": "Create", "ref_doctype": "ToDo", "docname": "0c3f434e01",
               "data": "{\n \"__unsaved\": 1,\n \"allocated_to\": \"es@example.com\",\n \"creation\": \"2026-11-23 14:08:27.071306\",\n \"description\": \"sample doc\",\n \"docstatus\": 0,\n \"doctype\": \"ToDo\",\n \"idx\": 0,\n \"modified\": \"2026-11-23 14:08:27.071306\",\n \"modified_by\": \"es@example.com\",\n \"name\": \"0c3f434e01\",\n \"owner\": \"es@example.com\",\n \"priority\": \"Medium\",\n \"status\": \"Open\"\n}",
               "name": 3527, "creation": "2026-11-23 14:08:27.086014"}),
        json!({"update_type": "Update", "ref_doctype": "ToDo", "docname": "0c3f434e01",
               "data": "{\n \"added\": {},\n \"changed\": {\n  \"description\": \"sample doc edited\",\n  \"priority\": \"High\"\n },\n \"removed\": {},\n \"row_changed\": {}\n}",
               "name": 3528, "creation": "2026-11-23 14:08:27.132199"}),
    ];
    if deleted {
        logs.push(json!({"update_type": "Delete", "ref_doctype": "ToDo", "docname": "0c3f434e01", "data": null, "name": 3529, "creation": "2026-11-23 14:08:27.274695"}));
    }
    logs
}

/// A ToDo as Frappe's REST API returns it.
fn todo(name: &str, description: &str, modified: &str) -> Value {
    json!({"doctype": "ToDo", "name": name, "owner": "es@example.com", "creation": "2026-11-23 14:08:20.000000",
           "modified": modified, "modified_by": "es@example.com", "docstatus": 0, "idx": 0,
           "status": "Open", "priority": "Medium", "description": description})
}

#[derive(Default)]
struct Producer {
    /// The `data` argument of `register_consumer`, as received.
    registered: Option<Value>,
    /// `last_update` of every pull, in order.
    pulls: Vec<String>,
    deleted: bool,
    /// Answer as a Frappe v15 site with the `event_streaming` app: Frappe 14's module names
    /// fail as v15 fails them.
    v15: bool,
    /// Logs after the captured ones.
    later: Vec<Value>,
    /// What `frappe.client.get_list` and `GET /api/resource/ToDo/<name>` answer.
    docs: Vec<Value>,
    /// Logs the next pull sends again whatever their creation, before the rest, as Frappe
    /// 14 re-sends a document's unread logs.
    resend: Vec<Value>,
}

/// Answers as Frappe 14 did in the capture.
async fn frappe14(State(st): State<Arc<Mutex<Producer>>>, req: Request<Body>) -> Response {
    let (path, args) = fake_request(req).await;
    let method = match path.strip_prefix("/api/method/") {
        Some(m) => m.to_string(),
        None => arg(&args, "cmd").unwrap_or_default(),
    };
    let v15 = st.lock().unwrap().v15;
    let method = match method.strip_prefix("event_streaming.event_streaming.") {
        Some(rest) if v15 => format!("frappe.event_streaming.{rest}"),
        _ if v15 && method.starts_with("frappe.event_streaming.") => {
            return (
                axum::http::StatusCode::EXPECTATION_FAILED,
                axum::Json(json!({"exc_type": "ValidationError", "exception": format!(
                    "frappe.exceptions.ValidationError: Failed to get method for command {method} with No module named 'frappe.event_streaming'")})),
            )
                .into_response();
        }
        _ => method,
    };
    let message = match method.as_str() {
        "frappe.ping" => json!("pong"),
        "frappe.client.get_list" => {
            let st = st.lock().unwrap();
            let start: usize = arg(&args, "limit_start").and_then(|v| v.parse().ok()).unwrap_or(0);
            let len: usize = arg(&args, "limit_page_length").and_then(|v| v.parse().ok()).unwrap_or(20);
            let mut docs = st.docs.clone();
            docs.sort_by_key(|d| d["name"].as_str().unwrap().to_string());
            Value::Array(
                docs.iter()
                    .skip(start)
                    .take(len)
                    .map(|d| json!({"name": d["name"], "modified": d["modified"]}))
                    .collect(),
            )
        }
        "" if path.starts_with("/api/resource/ToDo/") => {
            let name = path.trim_start_matches("/api/resource/ToDo/");
            let st = st.lock().unwrap();
            return match st.docs.iter().find(|d| d["name"] == name) {
                Some(d) => axum::Json(json!({"data": d})).into_response(),
                None => (
                    axum::http::StatusCode::NOT_FOUND,
                    axum::Json(json!({"exc_type": "DoesNotExistError", "exception": format!("frappe.exceptions.DoesNotExistError: ToDo {name} not found")})),
                )
                    .into_response(),
            };
        }
        "frappe.auth.get_logged_user" => json!("es@example.com"),
        "frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer" => {
            let data: Value = serde_json::from_str(&arg(&args, "data").unwrap_or_default())
                .unwrap_or(Value::Null);
            st.lock().unwrap().registered = Some(data);
            json!("{\"last_update\": \"2026-11-23 14:08:16.898034\"}")
        }
        "frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer" => {
            let since = arg(&args, "last_update").unwrap_or_default();
            let mut st = st.lock().unwrap();
            st.pulls.push(since.clone());
            let again = std::mem::take(&mut st.resend);
            Value::Array(
                again
                    .into_iter()
                    .chain(
                        captured_logs(st.deleted)
                            .into_iter()
                            .chain(st.later.clone())
                            .filter(|l| l["creation"].as_str().unwrap_or("") > since.as_str()),
                    )
                    .collect(),
            )
        }
        other => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"exc_type": "DoesNotExistError", "exception": format!("frappe.exceptions.DoesNotExistError: {other}")})),
            )
                .into_response()
        }
    };
    axum::Json(json!({ "message": message })).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_14_producer_as_captured_on_the_wire() {
    replay_producer(false).await;
}

/// The same exchanges with a Frappe v15 producer, whose methods are the `event_streaming`
/// app's: docstream finds them after Frappe 14's names fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_15_event_streaming_app_producer() {
    replay_producer(true).await;
}

/// A consumer subscribed to ToDos of the fake Frappe producer: the producer's state, URL and
/// the consumer.
async fn subscribed(v15: bool) -> (Arc<Mutex<Producer>>, String, TestSite) {
    subscribed_to(v15, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await
}

/// [`subscribed`] with the Event Producer's `rows`.
async fn subscribed_to(v15: bool, rows: Value) -> (Arc<Mutex<Producer>>, String, TestSite) {
    subscribed_with(v15, rows, json!([])).await
}

/// [`subscribed_to`], the consumer's Document Type `mappings` made first.
async fn subscribed_with(
    v15: bool,
    rows: Value,
    mappings: Value,
) -> (Arc<Mutex<Producer>>, String, TestSite) {
    let state = Arc::new(Mutex::new(Producer {
        v15,
        ..Default::default()
    }));
    let producer_url = serve_fake(
        axum::Router::new()
            .fallback(frappe14)
            .with_state(state.clone()),
    )
    .await;

    let c = TestSite::start_with(Backend::Sqlite, &[("pull_interval", json!(1))])
        .await
        .unwrap();
    c.insert("User", json!({"email": "es@example.com", "first_name": "ES", "roles": [{"role": "System Manager"}]}))
        .await;
    let (s, b) = c
        .post(
            "/api/method/frappe.core.doctype.user.user.generate_keys",
            json!({"user": "es@example.com"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for m in mappings.as_array().unwrap() {
        let (s, b) = c
            .post("/api/resource/Document Type Mapping", m.clone())
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = c
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": producer_url, "user": "es@example.com", "api_key": "<producer key>", "api_secret": "<producer secret>",
                   "producer_doctypes": rows}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", c.log());
    (state, producer_url, c)
}

/// Waits until the consumer holds the captured ToDo as its Update left it.
async fn captured_todo_applied(c: &TestSite) {
    eventually(15, "the captured ToDo", || async {
        let t = get_opt(c, "/api/resource/ToDo/0c3f434e01").await?;
        (t["description"] == "sample doc edited").then_some(())
    })
    .await;
}

/// Verification against a Frappe producer (no digests): its REST lists give each document's
/// `modified`, compared with the creation of the last log applied here for it. An update the
/// consumer never received and a document it was never sent are found and repaired; a
/// document gone from the producer is listed, never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_producer_is_verified_through_its_lists() {
    let (state, _, c) = subscribed(false).await;
    captured_todo_applied(&c).await;
    // One more log moves the consumer's cursor past the other changes below.
    state.lock().unwrap().later = vec![
        json!({"update_type": "Create", "ref_doctype": "ToDo", "docname": "later00001",
        "data": todo("later00001", "sent", "2026-11-23 14:08:28.000000").to_string(),
        "name": 3530, "creation": "2026-11-23 14:08:28.000000"}),
    ];
    eventually(15, "the later ToDo", || {
        get_opt(&c, "/api/resource/ToDo/later00001")
    })
    .await;
    // Behind the consumer's back: the first ToDo changed without a log reaching it, and a
    // ToDo it was never sent.
    state.lock().unwrap().docs = vec![
        todo(
            "0c3f434e01",
            "changed without a log",
            "2026-11-23 14:08:27.500000",
        ),
        todo("later00001", "sent", "2026-11-23 14:08:28.000000"),
        todo("missed0001", "never sent", "2026-11-23 14:08:27.900000"),
    ];
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("different ToDo 0c3f434e01"), "{out}");
    assert!(out.contains("missing here ToDo missed0001"), "{out}");
    assert!(!out.contains("later00001"), "in step: {out}");
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    let t = get_opt(&c, "/api/resource/ToDo/0c3f434e01").await.unwrap();
    assert_eq!(t["description"], "changed without a log");
    let t = get_opt(&c, "/api/resource/ToDo/missed0001").await.unwrap();
    assert_eq!(t["description"], "never sent");
    // The repairs recorded the versions they applied: in step now.
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // Changed on the producer behind its server's back, `modified` kept: only a deep
    // verification, which reads whole documents, sees it.
    state.lock().unwrap().docs[1]["description"] = json!("changed in the database");
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli_verify(&c, &["--deep"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(r#"different ToDo later00001: description (here "sent", there "changed in the database")"#),
        "{out}"
    );
    // Gone from the producer: listed, kept.
    state
        .lock()
        .unwrap()
        .docs
        .retain(|d| d["name"] != "later00001");
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("only here ToDo later00001"), "{out}");
    assert!(get_opt(&c, "/api/resource/ToDo/later00001").await.is_some());
}

/// A row with a mapping, against a Frappe producer: which mapped copies are held is compared
/// with the producer's list (their content is this site's), and a copy gone is repaired
/// through the mapping; one the producer no longer has is listed, never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_row_from_a_frappe_producer_is_verified_by_presence() {
    let (state, _, c) = subscribed_with(
        false,
        json!([{"ref_doctype": "Note", "has_mapping": 1, "mapping": "Note from ToDo",
                "use_same_name": 1, "sync_existing": 1}]),
        json!([{"mapping_name": "Note from ToDo", "local_doctype": "Note", "remote_doctype": "ToDo",
                "field_mapping": [{"local_fieldname": "title", "remote_fieldname": "description"}]}]),
    )
    .await;
    eventually(15, "the mapped Note", || async {
        let n = get_opt(&c, "/api/resource/Note/0c3f434e01").await?;
        (n["title"] == "sample doc edited").then_some(())
    })
    .await;
    // The captured ToDo, and one made before the subscription (Sync Existing: due here).
    state.lock().unwrap().docs = vec![
        todo(
            "0c3f434e01",
            "sample doc edited",
            "2026-11-23 14:08:27.071306",
        ),
        todo("missed0001", "never sent", "2026-11-23 14:08:27.100000"),
    ];
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("missing here Note missed0001"), "{out}");
    assert!(!out.contains("Note 0c3f434e01"), "held: {out}");
    assert!(out.contains("not compared: the content of Note"), "{out}");
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    let n = get_opt(&c, "/api/resource/Note/missed0001")
        .await
        .expect("repaired through the mapping");
    assert_eq!(n["title"], "never sent");
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{out}{err}");
    state
        .lock()
        .unwrap()
        .docs
        .retain(|d| d["name"] != "0c3f434e01");
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("only here Note 0c3f434e01"), "{out}");
    assert!(get_opt(&c, "/api/resource/Note/0c3f434e01").await.is_some());
}

/// Frappe 14 sends a document's older logs again with a new one: those applied here are
/// passed over (re-applied, they rolled the document back and raised a conflict over this
/// site's own edit). A new Create of a document received before (the producer restored from
/// an older backup) is a conflict, never written over what is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_sent_again_are_passed_over_and_a_new_create_is_a_conflict() {
    let (state, _, c) = subscribed(false).await;
    captured_todo_applied(&c).await;
    let (s, b) = c
        .put(
            "/api/resource/ToDo/0c3f434e01",
            json!({"description": "edited here"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    {
        let mut st = state.lock().unwrap();
        st.resend = captured_logs(false);
        st.later = vec![
            json!({"update_type": "Update", "ref_doctype": "ToDo", "docname": "0c3f434e01",
            "data": json!({"added": {}, "changed": {"priority": "Low"}, "removed": {}, "row_changed": {}}).to_string(),
            "name": 3531, "creation": "2026-11-23 14:08:29.000000"}),
        ];
    }
    let t = eventually(15, "the new update", || async {
        let t = get_opt(&c, "/api/resource/ToDo/0c3f434e01").await?;
        (t["priority"] == "Low").then_some(t)
    })
    .await;
    assert_eq!(t["description"], "edited here", "{t}");
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?fields=["update_type","status","note","error"]&order_by=creation%20asc&limit_page_length=0"#)
        .await;
    let logs = logs["data"].as_array().unwrap().clone();
    assert!(logs.iter().all(|l| l["status"] == "Synced"), "{logs:?}");
    let again = logs
        .iter()
        .filter(|l| {
            l["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("sent again by the producer"))
        })
        .count();
    assert_eq!(again, 2, "{logs:?}");
    // The producer's history changed: the same name made anew, with other content.
    state.lock().unwrap().later.push(json!({"update_type": "Create", "ref_doctype": "ToDo", "docname": "0c3f434e01",
        "data": json!({"doctype": "ToDo", "name": "0c3f434e01", "status": "Open", "description": "another ToDo after a restore",
                       "modified": "2026-11-23 14:08:30.000000", "creation": "2026-11-23 14:08:30.000000"}).to_string(),
        "name": 3532, "creation": "2026-11-23 14:08:30.000000"}));
    let failed = eventually(15, "the new Create's conflict", || async {
        let (_, l) = c
            .get(r#"/api/resource/Event Sync Log?fields=["status","error"]&filters=[["status","=","Failed"]]"#)
            .await;
        l["data"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("history changed")
            && error.contains("description")
            && error.contains("priority"),
        "the priority it no longer has counts too: {error}"
    );
    let t = get_opt(&c, "/api/resource/ToDo/0c3f434e01").await.unwrap();
    assert_eq!(
        (t["description"].clone(), t["priority"].clone()),
        (json!("edited here"), json!("Low")),
        "kept: {t}"
    );
}

/// Verification by lists counts as "should be here" what the producer changed after the first
/// of its logs applied here; a document this site fetched itself (a repair, a dependency)
/// carries its own `modified`, however old, and must not move that start back: a ToDo made
/// before the subscription (Sync Existing off) stays out of the comparison after a repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_fetched_here_do_not_move_where_the_producers_log_began() {
    let (state, _, c) = subscribed_to(
        false,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    captured_todo_applied(&c).await;
    // The captured ToDo as the producer holds it (its `modified` older than its Create log),
    // and one made before the subscription, never sent.
    state.lock().unwrap().docs = vec![
        todo(
            "0c3f434e01",
            "sample doc edited",
            "2026-11-23 14:08:27.071306",
        ),
        todo("before0001", "made before", "2026-11-23 14:08:27.080000"),
    ];
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let out = std::process::Command::new("sqlite3")
        .arg(c.site_dir().join("site.sqlite3"))
        .arg(r#"DELETE FROM "tabToDo" WHERE name = '0c3f434e01'"#)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, out, err) = cli_verify(&c, &["--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("missing here ToDo 0c3f434e01"), "{out}");
    let (code, out, err) = cli_verify(&c, &[]);
    assert_eq!(
        code, 0,
        "the repair's old version moved nothing: {out}{err}"
    );
    assert!(!out.contains("before0001"), "{out}");
}

async fn replay_producer(v15: bool) {
    let (state, producer_url, c) = subscribed(v15).await;
    // What Frappe's register_consumer expects: consumer_doctypes as a JSON string.
    let data = state
        .lock()
        .unwrap()
        .registered
        .clone()
        .expect("registered");
    assert_eq!(data["event_consumer"], c.url.as_str());
    assert_eq!(data["user"], "es@example.com");
    let types: Value = serde_json::from_str(data["consumer_doctypes"].as_str().unwrap()).unwrap();
    assert_eq!(types[0]["doctype"], "ToDo");

    let todo = eventually(
        15,
        "the ToDo created and updated on the Frappe producer",
        || async {
            let t = get_opt(&c, "/api/resource/ToDo/0c3f434e01").await?;
            (t["description"] == "sample doc edited").then_some(t)
        },
    )
    .await;
    assert_eq!(todo["priority"], "High");
    assert_eq!(todo["allocated_to"], "es@example.com");
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Synced"})).await,
        2
    );
    assert_eq!(
        state.lock().unwrap().pulls.first().map(String::as_str),
        Some("2026-11-23 14:08:16.898034"),
        "the first pull starts at register_consumer's last_update"
    );
    state.lock().unwrap().deleted = true;
    eventually(15, "the delete", || async {
        get_opt(&c, "/api/resource/ToDo/0c3f434e01")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let (_, cursor) = c
        .get(&format!(
            "/api/resource/Event Producer Last Update/{producer_url}"
        ))
        .await;
    assert_eq!(
        cursor["data"]["last_update"], "2026-11-23 14:08:27.274695",
        "the cursor is the creation of the last applied log"
    );
    // Nothing is applied twice: later pulls ask from the cursor and get nothing.
    let n = state.lock().unwrap().pulls.len();
    eventually(10, "another pull", || async {
        (state.lock().unwrap().pulls.len() > n + 1).then_some(())
    })
    .await;
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({})).await,
        3,
        "each captured log applied once"
    );
}

/// What a fake Frappe 14 consumer site received from a docstream producer.
#[derive(Default)]
struct Consumer {
    /// The producer's notifications: their `producer_url`.
    notified: Vec<String>,
    /// Bodies of the PUTs on the consumer's Event Producer (the approval mirrored).
    producer_updates: Vec<Value>,
    /// Requests it does not know, as "METHOD path".
    unknown: Vec<String>,
    producer_url: String,
}

/// Answers a docstream producer's calls as a Frappe 14 consumer does: its Event Producer
/// (one plain row, one through a mapping whose remote type is ToDo), that mapping, and
/// `new_event_notification` (which returns None, so `{}`).
async fn frappe14_consumer(State(st): State<Arc<Mutex<Consumer>>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let mut st = st.lock().unwrap();
    let url = st.producer_url.clone();
    let producer_doc = || {
        json!({"name": url, "doctype": "Event Producer", "producer_url": url, "user": "sync@example.com",
               "producer_doctypes": [
                   {"name": "row-note", "doctype": "Event Producer Document Type", "parent": url, "parentfield": "producer_doctypes", "parenttype": "Event Producer", "idx": 1,
                    "ref_doctype": "Note", "status": "Pending", "has_mapping": 0, "use_same_name": 1, "unsubscribe": 0},
                   {"name": "row-task", "doctype": "Event Producer Document Type", "parent": url, "parentfield": "producer_doctypes", "parenttype": "Event Producer", "idx": 2,
                    "ref_doctype": "Task", "status": "Pending", "has_mapping": 1, "mapping": "Task from ToDo", "use_same_name": 0, "unsubscribe": 0}]})
    };
    let event_producer = format!("/api/resource/Event Producer/{url}");
    let answer = match (method.as_str(), path.as_str()) {
        ("GET", p) if p == event_producer => json!({"data": producer_doc()}),
        ("PUT", p) if p == event_producer => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            st.producer_updates.push(patch.clone());
            let mut doc = producer_doc();
            for (k, v) in patch.as_object().into_iter().flatten() {
                doc[k] = v.clone();
            }
            json!({"data": doc})
        }
        ("GET", "/api/resource/Document Type Mapping/Task from ToDo") => {
            json!({"data": {"name": "Task from ToDo", "doctype": "Document Type Mapping", "local_doctype": "Task", "remote_doctype": "ToDo", "field_mapping": []}})
        }
        ("POST", "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.new_event_notification") => {
            let args: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            st.notified.push(arg(&args, "producer_url").unwrap_or_default());
            json!({})
        }
        (m, p) => {
            st.unknown.push(format!("{m} {p}"));
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"exc_type": "DoesNotExistError"})),
            )
                .into_response();
        }
    };
    axum::Json(answer).into_response()
}

/// A Frappe 14 consumer against a docstream producer, in the requests Frappe's code sends
/// (register_consumer with its arguments in the query string, pulls by `last_update` through
/// `cmd`) and checked against the fields Frappe's consumer reads in what docstream sends back
/// and calls (its Event Producer mirrored with the mapped row's status, notifications).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_14_consumer_as_frappe_speaks_it() {
    let p = TestSite::start_with(Backend::Sqlite, &[]).await.unwrap();
    let (pkey, psecret) = subscriber(&p).await;
    let auth = format!("token {pkey}:{psecret}");
    let state = Arc::new(Mutex::new(Consumer {
        producer_url: p.public_url.clone(),
        ..Default::default()
    }));
    let consumer = serve_fake(
        axum::Router::new()
            .fallback(frappe14_consumer)
            .with_state(state.clone()),
    )
    .await;

    // Event Producer.create_event_consumer: FrappeClient.post_api puts `data` in the query.
    let data = json!({"event_consumer": consumer,
                      "consumer_doctypes": json!([{"doctype": "Note", "condition": null}, {"doctype": "ToDo", "condition": null}]).to_string(),
                      "user": "sync@example.com", "api_key": "consumer-key", "api_secret": "consumer-secret"});
    let query = serde_urlencoded::to_string([("data", data.to_string())]).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer?{query}", p.url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let reply: Value =
        serde_json::from_str(b["message"].as_str().expect("message is a JSON string")).unwrap();
    let mut since = reply["last_update"]
        .as_str()
        .expect("last_update")
        .to_string();

    // Approval is mirrored as Frappe's Event Consumer.update_consumer_status does: the mapped
    // row (local Task, remote ToDo) takes the ToDo row's status.
    let (_, ec) = p
        .get(&format!("/api/resource/Event Consumer/{consumer}"))
        .await;
    let mut rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        r["status"] = json!(if r["ref_doctype"] == "ToDo" {
            "Approved"
        } else {
            "Rejected"
        });
    }
    let (s, b) = p
        .put(
            &format!("/api/resource/Event Consumer/{consumer}"),
            json!({"consumer_doctypes": rows}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let update = eventually(10, "the approval mirrored on the consumer", || async {
        state.lock().unwrap().producer_updates.last().cloned()
    })
    .await;
    assert_eq!(update["incoming_change"], 1, "{update}");
    let statuses: Vec<(&str, &str)> = update["producer_doctypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("row-note", "Rejected"), ("row-task", "Approved")]
    );
    for r in rows.iter_mut() {
        r["status"] = json!("Approved");
    }
    let (s, b) = p
        .put(
            &format!("/api/resource/Event Consumer/{consumer}"),
            json!({"consumer_doctypes": rows}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Create, then an Update that adds, changes and removes child rows.
    p.insert(
        "User",
        json!({"email": "seen1@example.com", "first_name": "S1"}),
    )
    .await;
    p.insert(
        "User",
        json!({"email": "seen2@example.com", "first_name": "S2"}),
    )
    .await;
    let note = p
        .insert(
            "Note",
            json!({"title": "wire", "seen_by": [{"user": "seen1@example.com"}]}),
        )
        .await;
    let note_name = note["name"].as_str().unwrap().to_string();
    let first_row = note["seen_by"][0]["name"].as_str().unwrap().to_string();
    let (s, b) = p
        .put(
            &format!("/api/resource/Note/{note_name}"),
            json!({"seen_by": [{"user": "seen2@example.com"}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(10, "a notification", || async {
        state.lock().unwrap().notified.first().cloned()
    })
    .await;
    assert_eq!(state.lock().unwrap().notified[0], p.public_url);

    let logs = frappe_pull(&p, &auth, &consumer, NOTE_AND_TODO, &since).await;
    let kinds: Vec<&str> = logs
        .iter()
        .map(|l| l["update_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Create", "Update"], "{logs:?}");
    let created = data_of(&logs[0]);
    assert_eq!(
        (created["doctype"].as_str(), created["name"].as_str()),
        (Some("Note"), Some(note_name.as_str()))
    );
    assert_eq!(created["seen_by"][0]["parentfield"], "seen_by");
    let diff = data_of(&logs[1]);
    let added = &diff["added"]["seen_by"][0];
    assert_whole_child_row(added);
    assert_eq!(added["parent"], note_name.as_str());
    assert_eq!(added["parenttype"], "Note");
    assert_eq!(added["user"], "seen2@example.com");
    assert_eq!(diff["removed"]["seen_by"], json!([first_row]));
    since = logs.last().unwrap()["creation"]
        .as_str()
        .unwrap()
        .to_string();

    // A rename reaches a Frappe consumer as a Delete of the old name, then a Create of the
    // whole document under the new one (Frappe would lose an Update of a name it lacks).
    let todo = p
        .insert(
            "ToDo",
            json!({"description": "to be renamed", "priority": "High"}),
        )
        .await;
    let old = todo["name"].as_str().unwrap().to_string();
    since = frappe_pull(&p, &auth, &consumer, NOTE_AND_TODO, &since)
        .await
        .last()
        .unwrap()["creation"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = p
        .post(
            "/api/method/frappe.client.rename_doc",
            json!({"doctype": "ToDo", "old_name": old, "new_name": "renamed-todo"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let logs = frappe_pull(&p, &auth, &consumer, NOTE_AND_TODO, &since).await;
    let seen: Vec<(&str, &str)> = logs
        .iter()
        .map(|l| {
            (
                l["update_type"].as_str().unwrap(),
                l["docname"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("Delete", old.as_str()), ("Create", "renamed-todo")]);
    let created = data_of(&logs[1]);
    assert_eq!(created["name"], "renamed-todo");
    assert_eq!(created["doctype"], "ToDo");
    assert_eq!(created["description"], "to be renamed");
    assert_eq!(created["priority"], "High");
    assert_eq!(
        logs[0]["creation"], logs[1]["creation"],
        "one cursor for both"
    );
    // A docstream consumer still gets the rename itself.
    let (_, page) = p
        .post_form(&auth, "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer", &[
            ("event_consumer", consumer.as_str()), ("doctypes", "[\"ToDo\"]"), ("after_seq", "0"),
        ])
        .await;
    let renames: Vec<&Value> = page["message"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["docname"] == "renamed-todo")
        .collect();
    assert_eq!(renames.len(), 1, "{page}");
    assert_eq!(data_of(renames[0])["old_name"], old.as_str());

    // Frappe's consumer drops a notification that comes while its pull job runs, and pulls on
    // nothing else: a notification no pull followed is sent again, until one does.
    since = frappe_pull(&p, &auth, &consumer, NOTE_AND_TODO, &since)
        .await
        .last()
        .unwrap()["creation"]
        .as_str()
        .unwrap()
        .to_string();
    let told = state.lock().unwrap().notified.len();
    p.insert("ToDo", json!({"description": "told twice"})).await;
    eventually(
        10,
        "the notification, and another with no pull after it",
        || async { (state.lock().unwrap().notified.len() >= told + 2).then_some(()) },
    )
    .await;
    let logs = frappe_pull(&p, &auth, &consumer, NOTE_AND_TODO, &since).await;
    assert_eq!(logs.len(), 1, "{logs:?}");
    let told = state.lock().unwrap().notified.len();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        state.lock().unwrap().notified.len(),
        told,
        "once it pulled, it is not told again"
    );

    // A consumer that long-polls (a docstream one) hears of changes through its poll: while it
    // does, and for 2 s after its last poll, it is not notified as well (that would make it
    // pull twice); once it has stopped long-polling, notifications resume.
    let pull = |after: i64, wait: &'static str| {
        let (p, auth, consumer) = (&p, &auth, &consumer);
        async move {
            let after = after.to_string();
            p.post_form(auth, "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer", &[
                ("event_consumer", consumer.as_str()), ("doctypes", "[\"ToDo\"]"),
                ("after_seq", after.as_str()), ("limit", "5000"), ("wait", wait),
            ])
            .await
            .1
        }
    };
    let high = pull(0, "0").await["last_seq"].as_i64().unwrap();
    let told = state.lock().unwrap().notified.len();
    let (polled, _) = tokio::join!(pull(high, "5"), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        p.insert("ToDo", json!({"description": "heard by the long poll"}))
            .await
    });
    assert_eq!(polled["count"], 1, "{polled}");
    // Written between two polls: the next poll brings it.
    p.insert("ToDo", json!({"description": "between two polls"}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        state.lock().unwrap().notified.len(),
        told,
        "a consumer that long-polls is not notified"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    p.insert("ToDo", json!({"description": "after the polls stopped"}))
        .await;
    eventually(5, "a notification once the long polls stopped", || async {
        (state.lock().unwrap().notified.len() > told).then_some(())
    })
    .await;
    assert!(
        state.lock().unwrap().unknown.is_empty(),
        "{:?}",
        state.lock().unwrap().unknown
    );
}

/// Frappe sends no document that existed before the subscription: with Sync Existing, once the
/// producer approves the row the consumer fetches them itself (one verification with repairs
/// by the producer's lists), each with a sync log noted "repair".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_producers_existing_documents_arrive() {
    let (state, producer_url, c) = subscribed(false).await;
    state.lock().unwrap().docs = vec![todo(
        "exist00001",
        "made before the subscription",
        "2026-11-23 14:08:10.000000",
    )];
    // Frappe's producer mirrors its approval onto the consumer's Event Producer.
    let path = format!("/api/resource/Event Producer/{producer_url}");
    let (_, ep) = c.get(&path).await;
    let mut rows = ep["data"]["producer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        assert_eq!(r["sync_existing"], 1, "the default: {r}");
        r["status"] = json!("Approved");
    }
    let (s, b) = c
        .put(
            &path,
            json!({"producer_doctypes": rows, "incoming_change": 1}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let t = eventually(15, "the ToDo that existed before", || {
        get_opt(&c, "/api/resource/ToDo/exist00001")
    })
    .await;
    assert_eq!(t["description"], "made before the subscription");
    let (_, logs) = c
        .get(r#"/api/resource/Event Sync Log?filters=[["producer_doc","=","exist00001"]]&fields=["status","note"]"#)
        .await;
    let log = &logs["data"][0];
    assert_eq!(log["status"], "Synced", "{logs}");
    assert!(
        log["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("repair"),
        "{logs}"
    );
}
