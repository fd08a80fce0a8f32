//! A shop on a weak line: answers compressed when the client asks (zstd, gzip), bodies taken
//! compressed and bounded by their decompressed size, sites streaming compressed between
//! them, a long poll that sends a heartbeat while it waits, and a consumer that gives up a
//! half-open line after 15 s without a byte instead of its whole wait.

mod common;
use common::fault_proxy::{FaultProxy, Faults};
use common::*;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use serde_json::{json, Value};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A client that hands over bodies as they came (no automatic decompression).
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_zstd()
        .no_gzip()
        .build()
        .unwrap()
}

fn unzstd(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn ungzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_bodies_travel_compressed() {
    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    for i in 0..200 {
        site.insert(
            "ToDo",
            json!({"description": format!("Count the stock of shelf {i} before the audit")}),
        )
        .await;
    }
    let raw = raw_client();
    let list = format!(
        r#"{}/api/resource/ToDo?fields=["*"]&limit_page_length=0"#,
        site.url
    );
    let get = |coding: &'static str| {
        raw.get(&list)
            .header("Authorization", &site.admin_auth)
            .header(ACCEPT_ENCODING, coding)
            .send()
    };
    let plain = get("identity").await.unwrap();
    assert_eq!(plain.headers().get(CONTENT_ENCODING), None);
    assert_eq!(plain.headers()[ACCEPT_ENCODING], "zstd, gzip", "RFC 7694");
    let plain = plain.bytes().await.unwrap();
    let as_json: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(as_json["data"].as_array().unwrap().len(), 200);
    for (coding, decode) in [
        ("zstd", unzstd as fn(&[u8]) -> Vec<u8>),
        ("gzip", ungzip as fn(&[u8]) -> Vec<u8>),
    ] {
        let r = get(if coding == "zstd" {
            "gzip, zstd"
        } else {
            "gzip"
        })
        .await
        .unwrap();
        assert_eq!(r.headers()[CONTENT_ENCODING], coding);
        assert!(r.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("accept-encoding"));
        let packed = r.bytes().await.unwrap();
        assert_eq!(decode(&packed), plain.to_vec(), "{coding}");
        assert!(
            packed.len() * 5 < plain.len(),
            "{coding}: {} bytes of {}",
            packed.len(),
            plain.len()
        );
    }

    // A ToDo sent with a Content-Encoding.
    let insert = |coding: &'static str, body: Vec<u8>| {
        raw.post(format!("{}/api/resource/ToDo", site.url))
            .header("Authorization", &site.admin_auth)
            .header("content-type", "application/json")
            .header(CONTENT_ENCODING, coding)
            .body(body)
            .send()
    };
    // A body sent compressed is taken ...
    let doc = json!({"description": "sent as zstd"}).to_string();
    let r = insert("zstd", zstd::bulk::compress(doc.as_bytes(), 3).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["data"]["description"], "sent as zstd");
    // ... bounded by what it becomes: 20 MB of spaces in a few kB is refused.
    let mut bomb = br#"{"description": "x""#.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 20 << 20));
    bomb.push(b'}');
    let packed = zstd::bulk::compress(&bomb, 3).unwrap();
    assert!(packed.len() < 100_000);
    let r = insert("zstd", packed).await.unwrap();
    let status = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (status, b["exc_type"].as_str()),
        (413, Some("ValidationError")),
        "{b}"
    );
    assert!(
        b["exception"]
            .as_str()
            .unwrap()
            .contains("once decompressed"),
        "{b}"
    );
    // A coding it does not read is refused, saying which it reads.
    let r = insert("br", doc.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["exception"].as_str().unwrap().contains("zstd, gzip"),
        "{b}"
    );
}

/// The producer's long-poll counter.
async fn long_polls(p: &TestSite) -> u64 {
    let text = p
        .client
        .get(format!("{}/metrics", p.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("docstream_long_poll_requests_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_are_compressed_and_a_waiting_pull_sends_heartbeats() {
    let proxy_port = free_port();
    let settings = [("pull_interval", json!(600))];
    let p = TestSite::start_behind(Backend::Sqlite, &settings, Some(proxy_port))
        .await
        .unwrap();
    let proxy = FaultProxy::start(proxy_port, p.port).await;
    let c = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    let (key, secret) = subscriber(&p).await;
    subscriber(&c).await;
    subscribe_with_keys(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1}]),
        &key,
        &secret,
    )
    .await;
    // One transaction: the consumer gets them in pages, not one by one.
    let docs: Vec<Value> = (0..300)
        .map(|i| json!({"doctype": "ToDo", "description": format!("Count the stock of shelf {i} before the audit")}))
        .collect();
    let (s, b) = p
        .post(
            "/api/method/frappe.client.insert_many",
            json!({"docs": Value::Array(docs).to_string()}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    eventually(30, "300 ToDos at the consumer", || async {
        (count_of(&c, "ToDo", json!({})).await == 300).then_some(())
    })
    .await;
    // What crossed the line, against what the same documents weigh as JSON.
    let wire = proxy.injected.bytes_down.load(Ordering::SeqCst);
    let (_, all) = p
        .get(r#"/api/resource/ToDo?fields=["*"]&limit_page_length=0"#)
        .await;
    let plain = all.to_string().len() as u64;
    assert!(
        wire * 3 < plain,
        "{wire} bytes on the wire for {plain} bytes of documents"
    );

    // A pull that waits: a space every 5 s (through zstd), then the page.
    // Nothing is pruned: the newest seq is the number of logs.
    let newest = count_of(&p, "Event Update Log", json!({})).await;
    let started = Instant::now();
    let mut r = raw_client()
        .post(format!(
            "{}/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer",
            p.url
        ))
        .header("Authorization", format!("token {key}:{secret}"))
        .header(ACCEPT_ENCODING, "zstd")
        .form(&[
            ("event_consumer", c.public_url.as_str()),
            ("doctypes", "[\"ToDo\"]"),
            ("after_seq", &newest.to_string()),
            ("wait", "14"),
            ("heartbeat", "1"),
        ])
        .send()
        .await
        .unwrap();
    let headers_after = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-docstream-heartbeat"], "5");
    assert_eq!(r.headers()[CONTENT_ENCODING], "zstd");
    let mut wire = Vec::new();
    let mut arrivals = Vec::new();
    let mut inserted = false;
    while let Some(chunk) = r.chunk().await.unwrap() {
        arrivals.push(started.elapsed());
        wire.extend_from_slice(&chunk);
        if !inserted && started.elapsed() > Duration::from_secs(7) {
            inserted = true;
            p.insert("ToDo", json!({"description": "the one it waited for"}))
                .await;
        }
    }
    let body = unzstd(&wire);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with(' '), "heartbeats first: {text:.60}");
    let page: Value = serde_json::from_str(&text).unwrap();
    let logs = page["message"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{page}");
    assert!(
        headers_after >= Duration::from_secs(4) && headers_after < Duration::from_secs(7),
        "the answer starts at the first heartbeat: {headers_after:?}"
    );
    assert!(
        arrivals.len() >= 2 && arrivals[0] < Duration::from_secs(7),
        "a heartbeat came before the page: {arrivals:?}"
    );
    let done = *arrivals.last().unwrap();
    assert!(
        done < Duration::from_secs(12),
        "the page came when its log did: {done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_line_is_given_up_after_15_s() {
    let proxy_port = free_port();
    let settings = [
        ("pull_interval", json!(600)),
        ("pull_wait_seconds", json!(25)),
    ];
    let p = TestSite::start_behind(Backend::Sqlite, &settings, Some(proxy_port))
        .await
        .unwrap();
    let proxy = FaultProxy::start(proxy_port, p.port).await;
    let c = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    // A first long poll tells the consumer that this producer sends heartbeats; the next one
    // is bound by them.
    eventually(20, "a first long poll", || async {
        (long_polls(&p).await >= 1).then_some(())
    })
    .await;
    let n = p
        .insert("ToDo", json!({"description": "wakes the first poll"}))
        .await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(20, "the ToDo", || {
        get_opt(&c, format!("/api/resource/ToDo/{n}"))
    })
    .await;
    let before = long_polls(&p).await;
    eventually(20, "a second long poll", || async {
        (long_polls(&p).await > before).then_some(())
    })
    .await;
    // The line goes half-open under the waiting poll: its heartbeats are lost, for good.
    proxy.set(Faults {
        hold: true,
        ..Faults::default()
    });
    let held_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();
    let stalled = long_polls(&p).await;
    eventually(40, "a new long poll after the silent one", || async {
        (long_polls(&p).await > stalled).then_some(())
    })
    .await;
    let took = held_at.elapsed();
    // Given up 15 s after its last byte (at most 5 s before the hold), asked again, counted
    // at its first heartbeat: well before the 60 s its timeout alone would take.
    assert!(took < Duration::from_secs(28), "{took:?}");
}
