//! History identity: a producer restored from an older backup behind the server's back (its
//! SQLite files copied back; on PostgreSQL a `pg_dump` taken while it ran, restored with
//! `pg_restore` into its database made again) gives a sale's number out again to another
//! sale. The consumer notices at its next pull, says so on its dashboard, applies the
//! producer's logs again, keeps its copy of the earlier sale (the new one under the same name
//! is a Failed sync, never an overwrite), receives the sales made after the restore, and
//! verification lists the re-used name until a person settles it.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const FILES: [&str; 3] = ["site.sqlite3", "site.sqlite3-wal", "site.sqlite3-shm"];

fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in FILES {
        let _ = std::fs::remove_file(to.join(f));
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

fn db_dir(site: &TestSite) -> PathBuf {
    let dir = site.site_dir();
    assert!(dir.join(FILES[0]).exists(), "no SQLite file in {dir:?}");
    dir
}

async fn invoice(p: &TestSite, rate: i64) -> String {
    let inv = p
        .insert(
            "Sales Invoice",
            json!({"customer": "Both", "items": [{"item_code": "I1", "qty": 1, "rate": rate}]}),
        )
        .await;
    inv["name"].as_str().unwrap().to_string()
}

async fn total(c: &TestSite, name: &str) -> Option<f64> {
    get_opt(c, format!("/api/resource/Sales Invoice/{name}"))
        .await
        .and_then(|d| d["grand_total"].as_f64())
}

/// Takes a backup the way the operations guide says: SQLite's files while the server is
/// stopped; `pg_dump` while it runs.
async fn backup(p: &mut TestSite, to: &Path) {
    match p.backend {
        Backend::Sqlite => {
            p.kill();
            copy_db(&db_dir(p), to);
            p.serve().await;
        }
        Backend::Postgres => run(std::process::Command::new("pg_dump")
            .args(["-Fc", "-f"])
            .arg(to)
            .arg(pg_url(p))),
    }
}

/// Restores it behind the server's back: files copied back, or the database dropped, made
/// again and `pg_restore`d.
async fn restore(p: &mut TestSite, from: &Path) {
    p.kill();
    match p.backend {
        Backend::Sqlite => copy_db(from, &db_dir(p)),
        Backend::Postgres => {
            let db = p.pg_db.clone().unwrap();
            let admin = ["-h", "127.0.0.1", "-U", "postgres"];
            run(std::process::Command::new("dropdb")
                .args(admin)
                .args(["--force", &db]));
            run(std::process::Command::new("createdb").args(admin).arg(&db));
            run(std::process::Command::new("pg_restore")
                .args(["--no-owner", "-d", &pg_url(p)])
                .arg(from));
        }
    }
    p.serve().await;
}

fn pg_url(p: &TestSite) -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        p.pg_db.as_deref().unwrap()
    )
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("a PostgreSQL client tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_restored_from_an_older_backup_is_noticed_sqlite() {
    restored_from_an_older_backup(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_restored_from_an_older_backup_is_noticed_postgres() {
    restored_from_an_older_backup(Backend::Postgres).await;
}

async fn restored_from_an_older_backup(backend: Backend) {
    let Some((mut p, c)) = start_pair_on(backend).await else {
        return;
    };
    for site in [&p, &c] {
        seed_invoice_masters(site).await;
    }
    subscribe(
        &p,
        &c,
        json!([{"ref_doctype": "Sales Invoice", "use_same_name": 1}]),
    )
    .await;
    let first = invoice(&p, 10).await;
    eventually(15, "the first sale", || async {
        total(&c, &first).await.filter(|t| *t == 10.0)
    })
    .await;
    // The backup.
    let backup_at = p.dir.path().join("backup");
    backup(&mut p, &backup_at).await;
    let sale = invoice(&p, 91).await;
    eventually(15, "the sale of 91", || async {
        total(&c, &sale).await.filter(|t| *t == 91.0)
    })
    .await;
    // The restore, behind the server's back; then the same number goes to another sale.
    restore(&mut p, &backup_at).await;
    let again = invoice(&p, 26).await;
    assert_eq!(
        again, sale,
        "the restored producer gives the number out again"
    );
    let later = invoice(&p, 5).await;
    eventually(20, "the sale made after the restore", || async {
        total(&c, &later).await.filter(|t| *t == 5.0)
    })
    .await;
    assert_eq!(
        total(&c, &sale).await,
        Some(91.0),
        "the consumer's copy of the earlier sale is kept"
    );
    let (_, b) = c
        .get(&format!(
            r#"/api/resource/Event Sync Log?filters=[["producer_doc","=","{sale}"],["status","=","Failed"]]&fields=["name","error","next_retry"]"#
        ))
        .await;
    let failed = b["data"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{b}");
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("history changed:") && error.contains("grand_total"),
        "{error}"
    );
    assert_eq!(failed[0]["next_retry"], Value::Null, "a person decides it");
    // The first sale was passed over by the replay: synced once.
    assert_eq!(
        count_of(
            &c,
            "Event Sync Log",
            json!({"producer_doc": first, "status": "Synced"})
        )
        .await,
        1
    );
    let (_, lu) = c
        .get(&format!(
            "/api/resource/Event Producer Last Update/{}",
            p.public_url
        ))
        .await;
    let note = lu["data"]["history_changed"].as_str().unwrap_or_default();
    assert!(note.contains("restored from an older backup"), "{lu}");
    let (_, d) = c
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    let card = &d["message"]["producers"][0];
    assert_eq!(card["status"], "History changed", "{d}");
    assert_eq!(card["lag"], Value::Null, "never 'Up to date' meanwhile");
    // Verification lists the re-used name, and leaves it to the person its sync log waits for.
    let (s, v) = c
        .post(
            "/api/method/docstream.streaming.verify",
            json!({"event_producer": p.public_url, "repair": 1}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let diffs = v["message"]["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{v}");
    assert_eq!(
        (diffs[0]["kind"].as_str(), diffs[0]["name"].as_str()),
        (Some("different"), Some(sale.as_str()))
    );
    assert!(
        diffs[0]["repair"]
            .as_str()
            .unwrap()
            .contains("waits for a person"),
        "{v}"
    );
    assert_eq!(
        total(&c, &sale).await,
        Some(91.0),
        "not overwritten by a repair"
    );
    // Cleared by a person: the difference still shows until it is settled.
    let (s, b) = c
        .put(
            &format!("/api/resource/Event Producer Last Update/{}", p.public_url),
            json!({"history_changed": ""}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, d) = c
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(
        d["message"]["producers"][0]["status"], "Differences found",
        "{d}"
    );
    // The person takes the producer's version (Resync), verifies: in step, green.
    let (s, r) = c
        .post(
            "/api/method/frappe.event_streaming.doctype.event_producer.event_producer.resync",
            json!({"update": failed[0]["name"]}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), r["message"].as_str()),
        (200, Some("Synced")),
        "{r}"
    );
    let (_, v) = c
        .post(
            "/api/method/docstream.streaming.verify",
            json!({"event_producer": p.public_url}),
        )
        .await;
    assert_eq!(v["message"]["differences"], json!([]), "{v}");
    let (_, d) = c
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(d["message"]["producers"][0]["status"], "Active", "{d}");
}

/// A ToDo made on `p`; its name.
async fn todo(p: &TestSite, description: &str) -> String {
    p.insert("ToDo", json!({ "description": description }))
        .await["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Subscribes `c` to `p`'s ToDos, waits until a first one arrives, and backs `c` up (as the
/// operations guide says); the backup.
async fn subscribed_then_backed_up(p: &TestSite, c: &mut TestSite) -> PathBuf {
    subscribe(p, c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    let first = todo(p, "Before the backup").await;
    eventually(15, "the first ToDo", || {
        get_opt(c, format!("/api/resource/ToDo/{first}"))
    })
    .await;
    let backup_at = c.dir.path().join("consumer-backup");
    backup(c, &backup_at).await;
    backup_at
}

/// A consumer restored from an older backup pulls again from the checkpoint it had, receives
/// what came after it, and verification finds it in step.
async fn restored_consumer(backend: Backend) {
    let Some((p, mut c)) = start_pair_on(backend).await else {
        return;
    };
    let backup_at = subscribed_then_backed_up(&p, &mut c).await;
    let second = todo(&p, "After the backup").await;
    eventually(15, "the second ToDo", || {
        get_opt(&c, format!("/api/resource/ToDo/{second}"))
    })
    .await;
    restore(&mut c, &backup_at).await;
    eventually(15, "the second ToDo again, after the restore", || {
        get_opt(&c, format!("/api/resource/ToDo/{second}"))
    })
    .await;
    let (s, v) = c
        .post(
            "/api/method/docstream.streaming.verify",
            json!({"event_producer": p.public_url}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["message"]["documents"].clone(),
            v["message"]["differences"].clone()
        ),
        (json!(2), json!([])),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_consumer_catches_up_sqlite() {
    restored_consumer(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_consumer_catches_up_postgres() {
    restored_consumer(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_consumer_behind_pruned_logs_is_repaired_sqlite() {
    restored_behind_pruned_logs(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_consumer_behind_pruned_logs_is_repaired_postgres() {
    restored_behind_pruned_logs(Backend::Postgres).await;
}

/// A consumer restored from a backup older than the producer's oldest kept log (the producer
/// pruned the logs it had acknowledged since): the producer answers "history changed", the
/// consumer says so, and the verification that follows the replay fetches the documents whose
/// only logs were pruned, each as a repair.
async fn restored_behind_pruned_logs(backend: Backend) {
    let settings = [
        ("pull_interval", json!(1)),
        ("retry_base_seconds", json!(3600)),
    ];
    // The producer keeps its logs about a second once every consumer has them.
    let pruning = [
        settings[0].clone(),
        settings[1].clone(),
        ("update_log_retention_days", json!(1.0 / 86_400.0)),
    ];
    let Some(p) = TestSite::start_with(backend, &pruning).await else {
        return;
    };
    let mut c = TestSite::start_with(backend, &settings).await.unwrap();
    let backup_at = subscribed_then_backed_up(&p, &mut c).await;
    let later = [
        todo(&p, "After the backup 1").await,
        todo(&p, "After the backup 2").await,
    ];
    for name in &later {
        eventually(15, "the later ToDos", || {
            get_opt(&c, format!("/api/resource/ToDo/{name}"))
        })
        .await;
    }
    eventually(20, "the producer pruned every log", || async {
        (count_of(&p, "Event Update Log", json!({"ref_doctype": "ToDo"})).await == 0).then_some(())
    })
    .await;
    // The restored consumer lacks them (its checkpoint is that of the backup; the repair
    // below, whose sync logs are counted, is what brings them back).
    restore(&mut c, &backup_at).await;
    for name in &later {
        eventually(30, "the pruned ToDos, repaired by verification", || {
            get_opt(&c, format!("/api/resource/ToDo/{name}"))
        })
        .await;
    }
    let lu_path = format!("/api/resource/Event Producer Last Update/{}", p.public_url);
    let (_, lu) = c.get(&lu_path).await;
    let note = lu["data"]["history_changed"].as_str().unwrap_or("");
    assert!(note.contains("pruned"), "{lu}");
    let repairs = count_of(
        &c,
        "Event Sync Log",
        json!({"status": "Synced", "note": ["like", "%repair%"]}),
    )
    .await;
    assert_eq!(
        repairs,
        2,
        "{:?}",
        field_by_name(&c, "Event Sync Log", "note").await
    );
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0
    );
}
