//! Long-poll pulls: a producer holds a pull until a log for the consumer commits, holding no
//! connection or lock meanwhile; a consumer the producer cannot reach still gets each change
//! at once through the pull it keeps open.

mod common;
use common::fault_proxy::FaultProxy;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PULL: &str = "/api/method/frappe.event_streaming.doctype.event_update_log.event_update_log.get_update_logs_for_consumer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_consumer_gets_changes_at_once_sqlite() {
    unreachable_consumer(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_consumer_gets_changes_at_once_postgres() {
    unreachable_consumer(Backend::Postgres).await;
}

/// Settings under which a consumer pulls, and retries, only hourly on its own: whatever
/// arrives within seconds came through its long poll.
fn hourly_pulls() -> [(&'static str, Value); 2] {
    [
        ("pull_interval", json!(3600)),
        ("retry_base_seconds", json!(3600)),
    ]
}

/// The consumer sits behind a line the producer cannot open (cut after the handshake), and
/// pulls only hourly on its interval: what it receives within seconds came by the long poll.
async fn unreachable_consumer(backend: Backend) {
    let settings = hourly_pulls();
    let Some(p) = TestSite::start_with(backend, &settings).await else {
        return;
    };
    let proxy_port = free_port();
    let c = TestSite::start_behind(backend, &settings, Some(proxy_port))
        .await
        .unwrap();
    let proxy = FaultProxy::start(proxy_port, c.port).await;
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    proxy.cut();
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        let name = p
            .insert("ToDo", json!({"description": format!("shop change {i}")}))
            .await["name"]
            .as_str()
            .unwrap()
            .to_string();
        eventually(5, "the change on the unreachable consumer", || async {
            get_opt(&c, format!("/api/resource/ToDo/{name}")).await
        })
        .await;
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(3),
        "each change arrives within seconds by the long poll (slowest {slowest:?})"
    );
    let synced = count_of(&c, "Event Sync Log", json!({"status": "Synced"})).await;
    assert_eq!(synced, 5, "each change applied once");
    // Nothing reached the consumer through the cut line: the producer's notifications failed
    // or were not sent, and the changes came all the same.
    assert_eq!(count_of(&c, "ToDo", json!({})).await, 5);
}

/// The producer's seq now, read from a pull that does not wait.
async fn producer_seq(p: &TestSite, consumer: &str) -> i64 {
    let (s, b) = p
        .post_form(
            &p.admin_auth,
            PULL,
            &[
                ("event_consumer", consumer),
                ("doctypes", r#"["ToDo"]"#),
                ("after_seq", "0"),
                ("limit", "5000"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["last_seq"].as_i64().unwrap()
}

async fn waiting_pull(p: &TestSite, consumer: &str, after: i64, wait: &str) -> (Duration, Value) {
    let t = Instant::now();
    let after = after.to_string();
    let (s, b) = p
        .post_form(
            &p.admin_auth,
            PULL,
            &[
                ("event_consumer", consumer),
                ("doctypes", r#"["ToDo"]"#),
                ("after_seq", &after),
                ("wait", wait),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (t.elapsed(), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_pulls_hold_nothing_and_wake_together() {
    let settings = [
        ("pull_interval", json!(3600)),
        ("retry_base_seconds", json!(3600)),
        ("max_pull_wait_seconds", json!(4)),
    ];
    let p = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    let c = TestSite::start_with(Backend::Sqlite, &[("pull_wait_seconds", json!(4))])
        .await
        .unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0},
               {"ref_doctype": "Note", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    let consumer = c.public_url.clone();
    let after = producer_seq(&p, &consumer).await;

    // A wait with nothing to come ends at its time, empty, the checkpoint unchanged.
    let (took, b) = waiting_pull(&p, &consumer, after, "1").await;
    assert!(
        took >= Duration::from_millis(900),
        "held for its wait: {took:?}"
    );
    assert_eq!(b["message"], json!([]), "{b}");
    assert_eq!(b["last_seq"], after, "{b}");

    // A wait is bounded by the producer's max_pull_wait_seconds.
    let (took, _) = waiting_pull(&p, &consumer, after, "600").await;
    assert!(
        took < Duration::from_secs(8),
        "held no longer than the producer allows: {took:?}"
    );

    // A wait that is not a number is refused.
    let (s, b) = p
        .post_form(
            &p.admin_auth,
            PULL,
            &[
                ("event_consumer", consumer.as_str()),
                ("doctypes", r#"["ToDo"]"#),
                ("after_seq", "0"),
                ("wait", "soon"),
            ],
        )
        .await;
    assert_error(&(s, b), 400, "ValidationError");

    // Forty pulls wait at once (more than the database's connections), then one write wakes
    // them all; the write itself is not held up by them.
    let pulls: Vec<_> = (0..40)
        .map(|_| {
            let (p, consumer) = (&p, consumer.clone());
            async move { waiting_pull(p, &consumer, after, "4").await }
        })
        .collect();
    let writer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let doc = p.insert("ToDo", json!({"description": "wake up"})).await;
        (t.elapsed(), doc["name"].as_str().unwrap().to_string())
    };
    let (answers, (write_took, name)) = tokio::join!(futures_util::future::join_all(pulls), writer);
    assert!(
        write_took < Duration::from_secs(1),
        "40 waiting pulls do not hold up a write: {write_took:?}"
    );
    for (took, b) in &answers {
        assert!(
            *took < Duration::from_secs(3),
            "woken by the write, not by the time: {took:?}"
        );
        let logs = b["message"].as_array().unwrap();
        assert_eq!(logs.len(), 1, "{b}");
        assert_eq!(logs[0]["docname"], name.as_str());
    }

    // A log the pull does not ask for (a Note, when it pulls ToDos) does not end the wait;
    // the page it ends with passes over it.
    let after = answers[0].1["last_seq"].as_i64().unwrap();
    let pull = waiting_pull(&p, &consumer, after, "3");
    let note = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.insert("Note", json!({"title": "not asked for"})).await;
    };
    let ((took, b), ()) = tokio::join!(pull, note);
    assert!(
        took >= Duration::from_millis(2500),
        "kept waiting past the Note: {took:?}"
    );
    assert_eq!(b["message"], json!([]), "{b}");
    assert!(b["last_seq"].as_i64().unwrap() > after, "{b}");

    // The consumer keeps its own long poll open meanwhile: a pull asked of it now runs at
    // once (the waiting pull holds no pull lock), and it has what the producer has.
    let t = Instant::now();
    let (s, b) = c
        .post(
            "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node",
            json!({"event_producer": p.public_url}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "pull_from_node is not held by the open long poll: {:?}",
        t.elapsed()
    );
    eventually(5, "the consumer has the ToDo", || async {
        get_opt(&c, format!("/api/resource/ToDo/{name}")).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_set_back_during_a_long_poll_pulls_again_sqlite() {
    checkpoint_set_back(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_set_back_during_a_long_poll_pulls_again_postgres() {
    checkpoint_set_back(Backend::Postgres).await;
}

/// An administrator sets the consumer's checkpoint back (to receive everything again) while
/// its long poll waits. The page that poll brings was asked after the old checkpoint: it is
/// not applied as it is, and the consumer pulls again from where the checkpoint now stands.
async fn checkpoint_set_back(backend: Backend) {
    let settings = hourly_pulls();
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
    let todo = |name: &str| format!("/api/resource/ToDo/{name}");
    let first = p
        .insert("ToDo", json!({"description": "before the reset"}))
        .await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(5, "the first change on the consumer", || async {
        get_opt(&c, todo(&first)).await
    })
    .await;
    let checkpoint = format!("/api/resource/Event Producer Last Update/{}", p.url);
    let before = c.get(&checkpoint).await.1["data"]["last_seq"]
        .as_i64()
        .unwrap();
    assert!(before > 0, "the checkpoint moved past the first change");
    let (s, _) = c.delete(&todo(&first)).await;
    assert_eq!(s, 202);
    let (s, body) = c.put(&checkpoint, json!({"last_seq": 0})).await;
    assert_eq!(s, 200, "{body}");
    // The long poll, asked after `before`, brings only the second change: the consumer gets
    // the first one back too, because it pulls again from 0.
    let second = p
        .insert("ToDo", json!({"description": "after the reset"}))
        .await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(5, "the second change on the consumer", || async {
        get_opt(&c, todo(&second)).await
    })
    .await;
    eventually(
        5,
        "the first change pulled again from the reset checkpoint",
        || async { get_opt(&c, todo(&first)).await },
    )
    .await;
    let after = c.get(&checkpoint).await.1["data"]["last_seq"]
        .as_i64()
        .unwrap();
    assert!(after > before, "the checkpoint is past both changes again");
}
