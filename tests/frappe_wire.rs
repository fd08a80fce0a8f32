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

#[derive(Default)]
struct Producer {
    /// The `data` argument of `register_consumer`, as received.
    registered: Option<Value>,
    /// `last_update` of every pull, in order.
    pulls: Vec<String>,
    deleted: bool,
}

fn arg(args: &[(String, String)], k: &str) -> Option<String> {
    args.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// Answers as Frappe 14 did in the capture.
async fn frappe14(State(st): State<Arc<Mutex<Producer>>>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let mut args: Vec<(String, String)> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    args.extend(serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).unwrap_or_default());
    let method = match path.strip_prefix("/api/method/") {
        Some(m) => m.to_string(),
        None => arg(&args, "cmd").unwrap_or_default(),
    };
    let message = match method.as_str() {
        "frappe.ping" => json!("pong"),
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
            Value::Array(
                captured_logs(st.deleted)
                    .into_iter()
                    .filter(|l| l["creation"].as_str().unwrap_or("") > since.as_str())
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
    let state = Arc::new(Mutex::new(Producer::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let producer_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(frappe14)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

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
    let (s, b) = c
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": producer_url, "user": "es@example.com", "api_key": "<producer key>", "api_secret": "<producer secret>",
                   "producer_doctypes": [{"ref_doctype": "ToDo", "use_same_name": 1}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", c.log());
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
