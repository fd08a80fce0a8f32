//! A docstream producer checks what its Frappe consumers hold. A Frappe consumer pulls by time,
//! keeps no digests, and logs as Synced an update it skipped (an Update of a document it no
//! longer has): the producer reads the consumer's REST lists with the keys the consumer gave
//! it, lists what is missing there (and, deep, what differs), shows it on its dashboard and in
//! `/metrics`, and says it cannot repair it. The consumer here answers as Frappe 14 does and
//! applies the pulled logs as Frappe's consumer does.

mod common;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The fake Frappe consumer: its documents by (type, name), and what it was asked.
#[derive(Default)]
struct Frappe {
    producer_url: String,
    docs: BTreeMap<(String, String), Value>,
    /// The `authorization` header of each list request.
    list_auth: Vec<String>,
    /// Names it gives the Notes it receives (its Note row does not use the producer's names).
    next_local: u32,
}

impl Frappe {
    /// Applies one pulled log as Frappe 14's consumer does: a Create of a name held is
    /// skipped, an Update of a name not held is skipped (both logged Synced there).
    fn apply(&mut self, log: &Value) {
        let doctype = log["ref_doctype"].as_str().unwrap().to_string();
        let name = log["docname"].as_str().unwrap().to_string();
        let local = self.local_name(&doctype, &name);
        match log["update_type"].as_str().unwrap() {
            "Create" => {
                if local.is_some() {
                    return;
                }
                let mut doc = data_of(log);
                let local = if doctype == "Note" {
                    self.next_local += 1;
                    doc["remote_docname"] = json!(name);
                    doc["remote_site_name"] = json!(self.producer_url);
                    format!("NOTE-LOCAL-{}", self.next_local)
                } else {
                    name
                };
                doc["name"] = json!(local);
                self.docs.insert((doctype, local), doc);
            }
            "Update" => {
                let Some(local) = local else { return };
                let diff = data_of(log);
                let doc = self.docs.get_mut(&(doctype, local)).unwrap();
                for (k, v) in diff["changed"].as_object().into_iter().flatten() {
                    doc[k] = v.clone();
                }
            }
            _ => {
                if let Some(local) = local {
                    self.docs.remove(&(doctype, local));
                }
            }
        }
    }

    /// The name a producer's document has here.
    fn local_name(&self, doctype: &str, name: &str) -> Option<String> {
        self.docs
            .iter()
            .find(|((t, n), d)| t == doctype && (n == name || d["remote_docname"] == name))
            .map(|((_, n), _)| n.clone())
    }
}

/// Answers as a Frappe 14 consumer site: its Event Producer (ToDo under the producer's names,
/// Note under its own through a mapping into Note), lists, documents, and the calls a producer
/// makes.
async fn frappe_site(State(st): State<Arc<Mutex<Frappe>>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (path, args) = fake_request(req).await;
    let path = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    let mut st = st.lock().unwrap();
    let url = st.producer_url.clone();
    let row = |n: u32, t: &str, same: u8, mapping: Option<&str>| {
        json!({"name": format!("row-{n}"), "idx": n, "ref_doctype": t, "status": "Approved",
               "has_mapping": u8::from(mapping.is_some()), "mapping": mapping, "use_same_name": same, "unsubscribe": 0})
    };
    let message = match (method.as_str(), path.as_str()) {
        ("GET", p) if p == format!("/api/resource/Event Producer/{url}") => {
            return axum::Json(json!({"data": {"name": url, "producer_url": url,
                "producer_doctypes": [row(1, "ToDo", 1, None), row(2, "Note", 0, Some("Note as is"))]}}))
            .into_response()
        }
        ("GET", "/api/resource/Document Type Mapping/Note as is") => {
            return axum::Json(json!({"data": {"name": "Note as is", "local_doctype": "Note",
                "remote_doctype": "Note", "field_mapping": []}}))
            .into_response()
        }
        ("PUT", p) if p.starts_with("/api/resource/Event Producer/") => {
            return axum::Json(json!({"data": {}})).into_response()
        }
        ("POST", "/api/method/frappe.client.get_count") => json!(0),
        ("POST", "/api/method/frappe.client.get_list") => {
            let doctype = arg(&args, "doctype").unwrap();
            if doctype == "Event Sync Log" {
                json!([])
            } else {
                st.list_auth.push(auth);
                let fields: Vec<String> =
                    serde_json::from_str(&arg(&args, "fields").unwrap()).unwrap();
                let filters: Value = arg(&args, "filters")
                    .map(|f| serde_json::from_str(&f).unwrap())
                    .unwrap_or(json!([]));
                let start: usize = arg(&args, "limit_start").unwrap().parse().unwrap();
                let len: usize = arg(&args, "limit_page_length").unwrap().parse().unwrap();
                let rows: Vec<Value> = st
                    .docs
                    .iter()
                    .filter(|((t, _), _)| *t == doctype)
                    .filter(|(_, d)| {
                        filters
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|f| d[f[0].as_str().unwrap()] == f[2])
                    })
                    .skip(start)
                    .take(len)
                    .map(|(_, d)| {
                        Value::Object(fields.iter().map(|f| (f.clone(), d[f].clone())).collect())
                    })
                    .collect();
                json!(rows)
            }
        }
        ("GET", p) if p.starts_with("/api/resource/") => {
            let rest = p.trim_start_matches("/api/resource/");
            let (doctype, name) = rest.split_once('/').unwrap();
            match st.docs.get(&(doctype.to_string(), name.to_string())) {
                Some(d) => return axum::Json(json!({"data": d})).into_response(),
                None => {
                    return (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(json!({"exc_type": "DoesNotExistError"})),
                    )
                        .into_response()
                }
            }
        }
        ("POST", p) if p.ends_with(".new_event_notification") => json!({}),
        (m, p) => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"exc_type": "DoesNotExistError", "exception": format!("{m} {p}")}),
                ),
            )
                .into_response()
        }
    };
    axum::Json(json!({ "message": message })).into_response()
}

/// The streaming dashboard's card of `consumer`.
async fn consumer_card(p: &TestSite, consumer: &str) -> Value {
    let (s, b) = p
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(s, 200, "{b}");
    b["message"]["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["url"] == consumer)
        .cloned()
        .unwrap_or_else(|| panic!("no card for {consumer}: {b}"))
}

/// Differences as (kind, doctype, name), sorted.
fn kinds(report: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let t = |k: &str| d[k].as_str().unwrap().to_string();
            (t("kind"), t("doctype"), t("name"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frappe_consumer_is_checked_through_its_lists() {
    // Checks of consumers are due every 3 s here.
    let settings = [
        ("pull_interval", json!(0.5)),
        ("verify_interval_minutes", json!(0.05)),
    ];
    let p = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    let (pkey, psecret) = subscriber(&p).await;
    let auth = format!("token {pkey}:{psecret}");
    let state = Arc::new(Mutex::new(Frappe {
        producer_url: p.public_url.clone(),
        ..Default::default()
    }));
    let consumer = serve_fake(
        axum::Router::new()
            .fallback(frappe_site)
            .with_state(state.clone()),
    )
    .await;
    let data = json!({"event_consumer": consumer,
                      "consumer_doctypes": json!([{"doctype": "ToDo", "condition": null}, {"doctype": "Note", "condition": null}]).to_string(),
                      "user": "sync@example.com", "api_key": "consumer-key", "api_secret": "consumer-secret"});
    let (s, b) = p
        .post_form(
            &auth,
            "/api/method/frappe.event_streaming.doctype.event_consumer.event_consumer.register_consumer",
            &[("data", data.to_string().as_str())],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let reply: Value = serde_json::from_str(b["message"].as_str().unwrap()).unwrap();
    let mut since = reply["last_update"].as_str().unwrap().to_string();
    let path = format!("/api/resource/Event Consumer/{consumer}");
    let (_, ec) = p.get(&path).await;
    let mut rows = ec["data"]["consumer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        r["status"] = json!("Approved");
    }
    let (s, b) = p.put(&path, json!({"consumer_doctypes": rows})).await;
    assert_eq!(s, 200, "{b}");
    // Frappe's consumer rewrites its rows when its Event Producer is edited, without Sync
    // Existing: they stay approved and keep sending nothing that existed before.
    let frappe_rows = json!([{"ref_doctype": "ToDo", "status": "Pending", "unsubscribed": 0},
                             {"ref_doctype": "Note", "status": "Pending", "unsubscribed": 0}]);
    let (s, b) = p
        .request(
            &auth,
            reqwest::Method::PUT,
            &path,
            Some(json!({"consumer_doctypes": frappe_rows, "incoming_change": 1})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for r in b["data"]["consumer_doctypes"].as_array().unwrap() {
        assert_eq!(
            (&r["status"], &r["sync_existing"]),
            (&json!("Approved"), &json!(0)),
            "{b}"
        );
    }

    let mut todos = vec![];
    for i in 1..=3 {
        let t = p
            .insert("ToDo", json!({"description": format!("task {i}")}))
            .await;
        todos.push(t["name"].as_str().unwrap().to_string());
    }
    let mut notes = vec![];
    for i in 1..=2 {
        let n = p
            .insert("Note", json!({"title": format!("note {i}")}))
            .await;
        notes.push(n["name"].as_str().unwrap().to_string());
    }
    const TYPES: &str = "[\"ToDo\", \"Note\"]";
    let failed_there = notes[1].clone();
    let pull = |since: String| {
        let (p, auth, consumer, state, failed) = (&p, &auth, &consumer, &state, &failed_there);
        async move {
            let logs = frappe_pull(p, auth, consumer, TYPES, &since).await;
            let mut st = state.lock().unwrap();
            for l in &logs {
                // The second Note's Create failed on the Frappe site (a Failed sync there).
                if l["update_type"] == "Create" && l["docname"] == failed.as_str() {
                    continue;
                }
                st.apply(l);
            }
            logs.last()
                .map(|l| l["creation"].as_str().unwrap().to_string())
                .unwrap_or(since)
        }
    };
    since = pull(since).await;
    {
        let mut st = state.lock().unwrap();
        // A person on the Frappe site deleted the third ToDo and edited the second one.
        st.docs.remove(&("ToDo".into(), todos[2].clone()));
        st.docs.get_mut(&("ToDo".into(), todos[1].clone())).unwrap()["description"] =
            json!("edited at the branch");
    }
    // The producer changes the third ToDo: Frappe skips the Update of a document it lacks.
    let (s, b) = p
        .put(
            &format!("/api/resource/ToDo/{}", todos[2]),
            json!({"description": "task 3, later"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    since = pull(since).await;
    // The pull after acknowledges every log by time: no lag on the dashboard.
    pull(since.clone()).await;
    let card = eventually(5, "the Frappe consumer's acknowledgement", || async {
        let card = consumer_card(&p, &consumer).await;
        (card["lag"] == 0).then_some(card)
    })
    .await;
    assert!(card["acknowledged"].as_i64().unwrap() > 0, "{card}");

    // Light: what the lists lack; each says it is not repaired.
    let (s, report) = p
        .post(
            "/api/method/docstream.streaming.verify_consumer",
            json!({"event_consumer": consumer}),
        )
        .await;
    assert_eq!(s, 200, "{report}");
    let report = &report["message"];
    assert_eq!(report["consumer"], consumer.as_str(), "{report}");
    assert_eq!(report["documents"], 5, "{report}");
    let missing = |t: &str, n: &str| ("missing there".to_string(), t.to_string(), n.to_string());
    let mut expected = vec![missing("Note", &notes[1]), missing("ToDo", &todos[2])];
    expected.sort();
    assert_eq!(kinds(report), expected, "{report}");
    for d in report["differences"].as_array().unwrap() {
        assert!(
            d["repair"].as_str().unwrap().starts_with("not repaired"),
            "{d}"
        );
    }
    assert!(
        state
            .lock()
            .unwrap()
            .list_auth
            .iter()
            .all(|a| a == "token consumer-key:consumer-secret"),
        "lists are read with the keys the consumer gave"
    );

    // Deep, from the command line: the edited ToDo differs too, field by field.
    let (code, out, err) = cli_verify(&p, &["--consumer", &consumer, "--deep"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("5 documents as of seq"), "{out}");
    assert!(out.contains("3 differences"), "{out}");
    assert!(
        out.contains(&format!(
            "different there ToDo {}: description (here \"task 2\", there \"edited at the branch\")",
            todos[1]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("missing there ToDo {}", todos[2])),
        "{out}"
    );
    assert!(
        out.contains("not compared: Note: ") && out.contains("compared by presence only"),
        "a row mapped into the same type is compared by presence: {out}"
    );
    let card = consumer_card(&p, &consumer).await;
    assert_eq!(card["status"], "Differences found", "{card}");
    assert_eq!(card["verified"]["differences"], 3, "{card}");
    assert!(
        card["error"].as_str().unwrap().contains(&todos[2]),
        "{card}"
    );
    let (_, metrics) = p
        .request(&p.admin_auth, reqwest::Method::GET, "/metrics", None)
        .await;
    let metrics = metrics.as_str().unwrap();
    let line = format!("docstream_consumer_verify_differences{{consumer=\"{consumer}\"}} 3");
    assert!(metrics.contains(&line), "{metrics}");

    // The Frappe site is mended by hand; the scheduled check finds it in step by itself.
    {
        let mut st = state.lock().unwrap();
        let mut t3 = json!({"name": todos[2], "description": "task 3, later"});
        t3["doctype"] = json!("ToDo");
        st.docs.insert(("ToDo".into(), todos[2].clone()), t3);
        st.docs.get_mut(&("ToDo".into(), todos[1].clone())).unwrap()["description"] =
            json!("task 2");
        st.docs.insert(
            ("Note".into(), "NOTE-LOCAL-9".into()),
            json!({"name": "NOTE-LOCAL-9", "title": "note 2", "remote_docname": notes[1],
                   "remote_site_name": p.public_url}),
        );
    }
    let card = eventually(15, "a scheduled check in step", || async {
        let card = consumer_card(&p, &consumer).await;
        (card["verified"]["differences"] == 0).then_some(card)
    })
    .await;
    assert_ne!(card["status"], "Differences found", "{card}");
    assert_eq!(card["verified"]["documents"], 5, "{card}");
    assert!(card["verified"]["in_step_at"].is_string(), "{card}");
    let (code, out, err) = cli_verify(&p, &["--consumer", &consumer, "--deep"]);
    assert_eq!(code, 0, "{out}\n{err}");
}
