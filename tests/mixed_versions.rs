//! Sites of different docstream versions stream with each other. `tests/fixtures/v0.1.0/` holds a
//! head office site made by docstream v0.1.0 (commit b00f2a1) and the exchanges between it and a
//! v0.1.0 branch, recorded on the wire (`live.json`: the streaming as it happened; `final.json`:
//! the branch's read requests sent again to the head office once it was done, with v0.1.0's
//! answers). Replayed both ways:
//!
//! - this version opens the v0.1.0 site in place and answers the v0.1.0 branch's requests as
//!   v0.1.0 did (pages byte for byte: a consumer that asks for no wire addition gets none), then
//!   streams on from it to a consumer of this version;
//! - a consumer of this version subscribes to a producer that answers as the recorded v0.1.0 head
//!   office did (and approves as it did), and ends up holding what the v0.1.0 branch held.

mod common;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v0.1.0")
        .join(name)
}

fn exchanges(name: &str) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

const PULL: &str = "get_update_logs_for_consumer";

/// The v0.1.0 head office's folder, as it was left, in a data folder of its own, to be served on
/// `port` (its config's database path and URL changed for where it now is, as a move needs).
fn v0_1_0_site(port: u16) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("ho");
    std::fs::create_dir(&dir).unwrap();
    let packed = std::fs::File::open(fixture("ho/site.sqlite3.zst")).unwrap();
    let db = std::fs::File::create(dir.join("site.sqlite3")).unwrap();
    zstd::stream::copy_decode(packed, db).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("ho/site_config.json")).unwrap())
            .unwrap();
    config["db_url"] = json!(format!("sqlite://{}", dir.join("site.sqlite3").display()));
    config["url"] = json!(format!("http://127.0.0.1:{port}"));
    std::fs::write(dir.join("site_config.json"), config.to_string()).unwrap();
    data
}

/// Every key of `want` is in `got` with the same value, recursively (lists item by item, of the
/// same length): what a v0.1.0 reader found is still there.
fn holds(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, v) in w {
                let g = g.get(k).unwrap_or_else(|| panic!("{at}.{k} is missing"));
                holds(g, v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: {got} against {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                holds(g, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v0_1_0_site_upgraded_in_place_answers_its_v0_1_0_consumer_as_before() {
    let recorded = exchanges("final.json");
    // The branch's own key on the head office, as its requests carried it.
    let auth = recorded
        .iter()
        .find_map(|x| x["request_headers"]["authorization"].as_str())
        .unwrap()
        .to_string();
    let port = free_port();
    let ho =
        TestSite::serve_existing(v0_1_0_site(port), "ho", port, &auth, Backend::Sqlite, None).await;
    let client = reqwest::Client::new();
    let mut pages = 0;
    for x in &recorded {
        let (method, path) = (x["method"].as_str().unwrap(), x["path"].as_str().unwrap());
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", ho.url));
        for (k, v) in x["request_headers"].as_object().unwrap() {
            req = req.header(k, v.as_str().unwrap());
        }
        let r = req
            .body(x["request_body"].as_str().unwrap().to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let what = format!("{method} {path} {}", x["request_body"]);
        assert_eq!(status, x["status"], "{what}: {text}");
        let (got, want): (Value, Value) = (
            serde_json::from_str(&text).unwrap(),
            serde_json::from_str(x["response_body"].as_str().unwrap()).unwrap(),
        );
        if path.ends_with("getdoctype") {
            // Asked by newer consumers only (v0.1.0's never reads a producer's definitions);
            // its shape is Frappe's now, `docs` at the top, as newer consumers read either.
            assert!(got["docs"].is_array(), "{what}: {text}");
            continue;
        }
        if path.ends_with(PULL) {
            // Byte for byte: the consumer checks the page's digest over these very bytes.
            assert_eq!(text, x["response_body"].as_str().unwrap(), "{what}");
            pages += 1;
        } else if x["probe"] == true {
            // A missing document or method: the same status and exception (Frappe's 404 shape
            // now, without `exc`, as Frappe answers it).
            assert_eq!(got["exc_type"], want["exc_type"], "{what}: {text}");
        } else {
            holds(&got, &want, &what);
        }
    }
    assert!(pages >= 5, "{pages} pages replayed");

    // It streams on: a consumer of this version takes everything from it, and what it writes
    // next.
    let c = TestSite::start(Backend::Sqlite).await.unwrap();
    // The branch's user on the head office subscribes this one too; the head office's
    // Administrator (a key made now, with the password the fixture was made with) approves.
    let mut ho = ho;
    ho.admin_auth = ho.admin_key().await;
    subscriber(&c).await;
    let (key, secret) = auth["token ".len()..].split_once(':').unwrap();
    subscribe_with_keys(
        &ho,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1}, {"ref_doctype": "Sales Invoice", "use_same_name": 1}]),
        key,
        secret,
    )
    .await;
    let held = ho_todos(&ho).await;
    assert_eq!(held.len(), 2, "{held:?}");
    let next = ho
        .insert("ToDo", json!({"description": "written after the upgrade"}))
        .await["name"]
        .as_str()
        .unwrap()
        .to_string();
    for name in held.iter().chain([&next]) {
        eventually(20, "the head office's ToDos", || {
            get_opt(&c, format!("/api/resource/ToDo/{name}"))
        })
        .await;
    }
    let inv = eventually(20, "the submitted invoice", || {
        get_opt(&c, "/api/resource/Sales Invoice/SINV-2026-00001")
    })
    .await;
    assert_eq!(inv["docstatus"], 1);
    assert_eq!(inv["grand_total"], 7.0);
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}

async fn ho_todos(ho: &TestSite) -> Vec<String> {
    let (s, b) = ho.get("/api/resource/ToDo?limit_page_length=0").await;
    assert_eq!(s, 200, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// A producer that answers as the recorded v0.1.0 head office did.
struct V010 {
    live: Vec<Value>,
    last: Vec<Value>,
    /// The pulls received: their arguments.
    pulls: Vec<Vec<(String, String)>>,
    /// Requests it had no recorded answer for.
    unknown: Vec<String>,
    /// The consumer's key, from `register_consumer`.
    consumer: Option<(String, String)>,
    /// This producer's URL.
    me: String,
}

impl V010 {
    /// The recorded answer to the first exchange that `pick` accepts.
    fn answer(&self, from_final: bool, pick: impl Fn(&Value) -> bool) -> Option<Response> {
        self.answer_with(from_final, ("", ""), pick)
    }

    /// The same, with the text `swap.0` replaced by `swap.1` in its body.
    fn answer_with(
        &self,
        from_final: bool,
        swap: (&str, &str),
        pick: impl Fn(&Value) -> bool,
    ) -> Option<Response> {
        let list = if from_final { &self.last } else { &self.live };
        let x = list.iter().find(|x| pick(x))?;
        let mut body = match &x["response_body"] {
            Value::String(s) => s.clone(),
            b => b["text"].as_str().unwrap_or_default().to_string(),
        };
        if !swap.0.is_empty() {
            body = body.replace(swap.0, swap.1);
        }
        Some(
            (
                StatusCode::from_u16(x["status"].as_u64().unwrap() as u16).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response(),
        )
    }
}

fn form_arg(body: &str, key: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

async fn v0_1_0_producer(State(st): State<Arc<Mutex<V010>>>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let (path, args) = fake_request(req).await;
    let arg = |k: &str| arg(&args, k);
    let found = {
        let mut st = st.lock().unwrap();
        if path.ends_with(PULL) {
            st.pulls.push(args.clone());
            let after = arg("after_seq").unwrap_or_default();
            let page = st.answer(true, |x| {
                x["path"].as_str().unwrap().ends_with(PULL)
                    && form_arg(x["request_body"].as_str().unwrap(), "after_seq").as_deref()
                        == Some(after.as_str())
            });
            if page.is_none() {
                st.unknown.push(format!("pull after_seq={after}"));
            }
            page
        } else if path.ends_with("register_consumer") {
            let data: Value =
                serde_json::from_str(&arg("data").unwrap_or_default()).unwrap_or_default();
            st.consumer = Some((
                data["api_key"].as_str().unwrap_or_default().into(),
                data["api_secret"].as_str().unwrap_or_default().into(),
            ));
            // The recorded producer's address becomes this one's, as its own answer names it.
            let me = st.me.clone();
            st.answer_with(false, ("http://127.0.0.1:18811", &me), |x| {
                x["path"].as_str().unwrap().ends_with("register_consumer")
            })
        } else {
            let a = st.answer(true, |x| {
                let asked: Vec<(String, String)> =
                    serde_urlencoded::from_str(x["request_body"].as_str().unwrap_or(""))
                        .unwrap_or_default();
                x["method"] == method.as_str()
                    && x["probe"] != true
                    && (x["path"] == raw_path.as_str() || x["path"] == path.as_str())
                    && asked.iter().all(|a| args.contains(a))
            });
            if a.is_none() {
                st.unknown.push(format!("{method} {raw_path}"));
            }
            a
        }
    };
    if path.ends_with(PULL) && arg("wait").is_some() {
        // A long poll in step: v0.1.0 holds it; a short hold keeps the consumer from spinning.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    found.unwrap_or_else(|| {
        // What v0.1.0 answered for what it did not have (the recorded probes).
        let st = st.lock().unwrap();
        let probe = if path.starts_with("/api/method/") {
            "docstream.no_such_method"
        } else {
            "no-such-todo"
        };
        st.answer(true, |x| {
            x["probe"] == true && x["path"].as_str().unwrap().contains(probe)
        })
        .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_consumer_streams_from_a_v0_1_0_producer_as_recorded() {
    let state = Arc::new(Mutex::new(V010 {
        live: exchanges("live.json")
            .into_iter()
            .filter(|x| x["via"] == "ho")
            .collect(),
        last: exchanges("final.json"),
        pulls: Vec::new(),
        unknown: Vec::new(),
        consumer: None,
        me: String::new(),
    }));
    let producer = serve_fake(
        axum::Router::new()
            .fallback(v0_1_0_producer)
            .with_state(state.clone()),
    )
    .await;
    state.lock().unwrap().me = producer.clone();
    let c = TestSite::start(Backend::Sqlite).await.unwrap();
    let (key, secret) = subscriber(&c).await;
    let (s, b) = c
        .post(
            "/api/resource/Event Producer",
            json!({"producer_url": producer, "user": "sync@example.com", "api_key": "<v0.1.0 key>", "api_secret": "<v0.1.0 secret>",
                   "producer_doctypes": [{"ref_doctype": "ToDo", "use_same_name": 1}, {"ref_doctype": "Sales Invoice", "use_same_name": 1, "sync_existing": 0}]}),
        )
        .await;
    assert_eq!(s, 200, "{b}\n{}", c.log());
    // v0.1.0 approves as the recording shows: it reads the consumer's Event Producer with the
    // key it was given, and puts its rows back Approved, with `incoming_change`.
    let given = state.lock().unwrap().consumer.clone().expect("registered");
    assert_eq!(given, (key.clone(), secret.clone()));
    let auth = format!("token {key}:{secret}");
    let path = format!("/api/resource/Event Producer/{producer}");
    let (s, ep) = c.request(&auth, reqwest::Method::GET, &path, None).await;
    assert_eq!(s, 200, "{ep}");
    let mut rows = ep["data"]["producer_doctypes"].as_array().unwrap().clone();
    for r in rows.iter_mut() {
        r["status"] = json!("Approved");
    }
    let (s, b) = c
        .request(
            &auth,
            reqwest::Method::PUT,
            &path,
            Some(json!({"producer_doctypes": rows, "incoming_change": 1})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // What the v0.1.0 branch held at the end of the recording.
    let todo = eventually(30, "the edited ToDo", || async {
        let t = get_opt(&c, "/api/resource/ToDo/25kenbredoo1oimf").await?;
        (t["status"] == "Closed").then_some(t)
    })
    .await;
    assert_eq!(todo["description"], "first, edited");
    let inv = eventually(20, "the submitted invoice", || async {
        let i = get_opt(&c, "/api/resource/Sales Invoice/SINV-2026-00001").await?;
        (i["docstatus"] == 1).then_some(i)
    })
    .await;
    assert_eq!(inv["customer"], "Acme");
    assert_eq!(inv["grand_total"], 7.0);
    assert_eq!(inv["items"][0]["item_code"], "I1");
    assert!(get_opt(&c, "/api/resource/ToDo/25ken9sg4wgw2zir")
        .await
        .is_some());
    assert!(
        get_opt(&c, "/api/resource/ToDo/25kenbsdrzx23i5f")
            .await
            .is_none(),
        "deleted"
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0,
        "{:?}",
        field_by_name(&c, "Event Sync Log", "error").await
    );
    // It pulled by seq, as a docstream consumer, and took v0.1.0's unbound pages without the
    // history it asked for.
    let (first, unknown) = {
        let st = state.lock().unwrap();
        (st.pulls[0].clone(), st.unknown.clone())
    };
    let first = &first;
    assert!(arg(first, "after_seq").is_some(), "{first:?}");
    assert!(arg(first, "last_update").is_none(), "{first:?}");
    // It asked for the wire additions (the newer side asks), and v0.1.0 ignored them.
    assert!(
        arg(first, "bound").is_some() && arg(first, "history").is_some(),
        "{first:?}"
    );
    // Nothing was asked that v0.1.0 had no answer for.
    let unknown: Vec<&String> = unknown
        .iter()
        .filter(|u| !u.starts_with("pull after_seq"))
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    let (_, lu) = c
        .get(&format!(
            "/api/resource/Event Producer Last Update/{producer}"
        ))
        .await;
    assert_eq!(
        lu["data"]["history_changed"].as_str().unwrap_or(""),
        "",
        "{lu}"
    );
    // 0.1 has no digests: verification reads its lists (as for Frappe) and finds it in step.
    let (code, said, err) = cli_verify(&c, &[]);
    assert_eq!(code, 0, "{said}{err}");
    assert!(
        said.contains("3 documents as of seq 7, 0 differences"),
        "{said}"
    );
}
