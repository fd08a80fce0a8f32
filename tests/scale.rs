//! The correctness half of scaling out: many consumers of one producer, and one PostgreSQL
//! producer served by three processes under concurrent writers, one of them SIGKILLed.
//! (The figures are `docstream bench`'s.)

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_consumers_of_one_producer_converge() {
    let settings = [
        ("pull_interval", json!(3600)),
        ("retry_base_seconds", json!(3600)),
    ];
    let p = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    let (pkey, psecret) = subscriber(&p).await;
    let mut consumers = Vec::new();
    for _ in 0..20 {
        let c = TestSite::start_with(Backend::Sqlite, &settings)
            .await
            .unwrap();
        subscriber(&c).await;
        subscribe_with_keys(
            &p,
            &c,
            json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
            &pkey,
            &psecret,
        )
        .await;
        consumers.push(c);
    }
    // Writes while all twenty hold their long polls: created, then some updated and deleted.
    let mut names = Vec::new();
    for i in 0..60 {
        let d = p
            .insert("ToDo", json!({"description": format!("for everyone {i}")}))
            .await;
        names.push(d["name"].as_str().unwrap().to_string());
    }
    for n in names.iter().take(20) {
        let (s, b) = p
            .put(
                &format!("/api/resource/ToDo/{n}"),
                json!({"description": format!("{n} updated")}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for n in names.iter().skip(50) {
        let (s, b) = p.delete(&format!("/api/resource/ToDo/{n}")).await;
        assert_eq!(s, 202, "{b}");
    }
    let want = field_by_name(&p, "ToDo", "description").await;
    assert_eq!(want.len(), 50);
    for (i, c) in consumers.iter().enumerate() {
        eventually(30, &format!("consumer {i} converged"), || async {
            (field_by_name(c, "ToDo", "description").await == want).then_some(())
        })
        .await;
        let synced = count_of(c, "Event Sync Log", json!({"status": "Synced"})).await;
        assert_eq!(synced, 90, "consumer {i}: each change applied once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_producer_lose_nothing() {
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    let Some(p) = TestSite::start_with(Backend::Postgres, &settings).await else {
        return;
    };
    let c = TestSite::start_with(Backend::Sqlite, &settings)
        .await
        .unwrap();
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    // Two more processes serve the producer's site (same folder, same database).
    let mut others = vec![p.serve_another(None).await, p.serve_another(None).await];
    let client = reqwest::Client::new();
    let urls: Vec<String> = std::iter::once(p.url.clone())
        .chain(others.iter().map(|o| o.url()))
        .collect();
    // Eight writers spread over the three processes; the third process is SIGKILLed midway.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, urls, auth) = (client.clone(), urls.clone(), p.admin_auth.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let url = &urls[(w + i) % urls.len()];
                    let _ = client
                        .post(format!("{url}/api/resource/ToDo"))
                        .header("authorization", &auth)
                        .json(&json!({"description": format!("writer {w} doc {i}")}))
                        .send()
                        .await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(others.pop());
    for w in writers {
        w.await.unwrap();
    }
    // What committed is what the producer holds (a write cut by the kill may or may not have).
    let want = field_by_name(&p, "ToDo", "description").await;
    assert!(want.len() >= 200, "most writes landed: {}", want.len());
    // Seqs are unique and gap-free across the processes, and creation never goes back as seq
    // grows (writers take their clock before they queue for the seq).
    let (s, logs) = p
        .get(r#"/api/resource/Event Update Log?fields=["seq","docname","creation"]&limit_page_length=0&order_by=seq asc"#)
        .await;
    assert_eq!(s, 200, "{logs}");
    let seqs: Vec<i64> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    let first = seqs[0];
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == first + i as i64),
        "seqs gap-free and unique"
    );
    assert_eq!(seqs.len(), want.len(), "one log per committed write");
    let creations: Vec<&str> = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["creation"].as_str().unwrap())
        .collect();
    assert!(
        creations.windows(2).all(|w| w[0] <= w[1]),
        "creation grows with seq: {creations:?}"
    );
    eventually(
        60,
        "the consumer holds exactly the producer's documents",
        || async { (field_by_name(&c, "ToDo", "description").await == want).then_some(()) },
    )
    .await;
    let synced = count_of(&c, "Event Sync Log", json!({"status": "Synced"})).await;
    assert_eq!(synced as usize, want.len(), "each applied once");
    drop(others);
}
