//! A bad line between two real sites: the consumer pulls through a proxy that drops, delays,
//! cuts and flips bytes of the producer's answers. After healing, the consumer holds exactly
//! the producer's documents, each applied once.

mod common;
use common::fault_proxy::{FaultProxy, Faults};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pull_answers_lose_nothing_sqlite() {
    damaged_line(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pull_answers_lose_nothing_postgres() {
    damaged_line(Backend::Postgres).await;
}

async fn todos(site: &TestSite) -> BTreeMap<String, (String, String)> {
    let (s, b) = site
        .get(r#"/api/resource/ToDo?fields=["name","description","status"]&limit_page_length=0"#)
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                (
                    r["description"].as_str().unwrap_or("").to_string(),
                    r["status"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

async fn damaged_line(backend: Backend) {
    let proxy_port = free_port();
    let settings = [
        ("pull_interval", json!(0.3)),
        ("retry_base_seconds", json!(3600)),
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
    proxy.set(Faults {
        // Answers travel compressed: few chunks are large (a flip lands past the first 400
        // bytes), so each is damaged more often.
        flip: 0.4,
        cut: 0.15,
        drop: 0.15,
        max_delay_ms: 20,
        min_chunk: 420,
        ..Default::default()
    });
    // Writes on the producer go straight to it; only the consumer's line is bad.
    let mut names = Vec::new();
    for batch in 0..10 {
        let docs: Vec<Value> = (0..100)
            .map(|i| json!({"doctype": "ToDo", "description": format!("doc {batch}-{i} ünïcode \"quoted\"")}))
            .collect();
        names.extend(
            p.insert_many(docs)
                .await
                .iter()
                .map(|n| n.as_str().unwrap().to_string()),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in names.iter().step_by(4) {
        let (s, b) = p
            .put(
                &format!("/api/resource/ToDo/{n}"),
                json!({"status": "Closed", "description": format!("edited {n}")}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for n in names.iter().skip(1).step_by(10) {
        let (s, b) = p.delete(&format!("/api/resource/ToDo/{n}")).await;
        assert_eq!(s, 202, "{b}");
    }
    // Let the consumer pull through the bad line for a while.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.total() < 15 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let injected = format!("{:?}", proxy.injected);
    assert!(
        proxy.total() >= 5,
        "the proxy injected too little: {injected}"
    );
    proxy.heal();
    let want = todos(&p).await;
    assert_eq!(want.len(), 900);
    let got = eventually(90, "the consumer to converge after healing", || async {
        let got = todos(&c).await;
        (got == want).then_some(got)
    })
    .await;
    assert_eq!(got.len(), 900);
    // Each update was applied once: one Synced sync log per update log, none Failed.
    let synced = count_of(&c, "Event Sync Log", json!({"status": "Synced"})).await;
    let failed = count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await;
    assert_eq!(
        synced,
        1000 + 250 + 100,
        "faults injected: {injected}; consumer log: {}",
        c.log()
    );
    assert_eq!(failed, 0);
    assert!(
        c.log().contains("damaged") || c.log().contains("did not answer"),
        "the consumer logged its refused pulls"
    );
    eprintln!("faults injected: {injected}");
}

/// A shop's line: 256 kbit/s with 300 ms of delay each way (the bench's slow link). 500
/// invoices arrive whole, and no pull gave up on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_cross_a_slow_line_whole() {
    let link_port = free_port();
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    let p = TestSite::start_behind(Backend::Sqlite, &settings, Some(link_port))
        .await
        .unwrap();
    let link = docstream::bench::slow_link::SlowLink::start(
        link_port,
        p.port,
        256,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let c = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    for s in [&p, &c] {
        seed_invoice_masters(s).await;
    }
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1}]),
    )
    .await;
    let started = Instant::now();
    for batch in 0..5 {
        let docs: Vec<Value> = (0..100)
            .map(|i| json!({"doctype": "Sales Invoice", "customer": "Both", "items": [{"item_code": "I1", "qty": 1, "rate": batch * 100 + i + 1}]}))
            .collect();
        p.insert_many(docs).await;
    }
    eventually(180, "500 invoices over the slow line", || async {
        (count_of(&c, "Sales Invoice", json!({})).await == 500).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
    let log = c.log();
    assert!(
        !log.contains("timed out") && !log.contains("no byte for"),
        "a pull gave up on the slow line: {log}"
    );
    let down = link.bytes_down.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("500 invoices over 256 kbit/s, 300 ms: {took:?}, {down} bytes down");
}
