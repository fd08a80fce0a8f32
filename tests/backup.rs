//! `docstream site NAME backup FILE` and `restore FILE`, driven as an operator would: a backup
//! taken while the site takes writes is one point in time (the documents written before it,
//! in order, and none after); a restore is refused while the site is served; a restored site
//! serves what the backup held, on either backend; and a restored producer's consumer is told,
//! at its next pull, that the producer was restored, even when it was in step with the backup.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;

fn site_cmd(data_dir: &Path, name: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(["site", name, "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn backup(site: &TestSite, file: &Path) -> String {
    ok(&site_cmd(
        site.dir.path(),
        &site.name,
        &["backup", file.to_str().unwrap()],
    ))
}

/// The ToDos' descriptions, oldest first.
async fn descriptions(site: &TestSite) -> Vec<String> {
    let (s, b) = site
        .get(r#"/api/resource/ToDo?fields=["description"]&order_by=creation%20asc&limit_page_length=0"#)
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["description"].as_str().unwrap().to_string())
        .collect()
}

/// Serves the site restored as `name` in `into` (on PostgreSQL into `db`, dropped with it),
/// with the keys of the site it was backed up from.
async fn serve_restored(
    from: &TestSite,
    into: tempfile::TempDir,
    name: &str,
    db: Option<&str>,
) -> TestSite {
    TestSite::serve_existing(into, name, free_port(), &from.admin_auth, from.backend, db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_while_writing_restores_one_point_in_time_sqlite() {
    backup_while_writing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_while_writing_restores_one_point_in_time_postgres() {
    backup_while_writing(Backend::Postgres).await;
}

async fn backup_while_writing(backend: Backend) {
    let Some(site) = TestSite::start(backend).await else {
        return;
    };
    let file = site.dir.path().join("site.backup");
    // A writer that goes on through the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, auth, stop) = (
            site.client.clone(),
            site.url.clone(),
            site.admin_auth.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = client
                    .post(format!("{url}/api/resource/ToDo"))
                    .header("Authorization", &auth)
                    .json(&json!({"description": format!("todo {n:05}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let said = tokio::task::spawn_blocking({
        let (dir, name, file) = (
            site.dir.path().to_path_buf(),
            site.name.clone(),
            file.clone(),
        );
        move || ok(&site_cmd(&dir, &name, &["backup", file.to_str().unwrap()]))
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(said.starts_with("Backed up site site1 to "), "{said}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds the site's key");

    // Refused while the site is served: nothing changes.
    let refused = site_cmd(
        site.dir.path(),
        &site.name,
        &["restore", file.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is being served"), "{err}");
    assert_eq!(descriptions(&site).await.len(), written);

    // Restored as another site (another folder; on PostgreSQL another database).
    let into = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_pg_database().await),
    };
    let mut args = vec!["restore", file.to_str().unwrap()];
    if let Some(db) = &db {
        args.extend(["--db", db]);
    }
    let said = ok(&site_cmd(into.path(), "copy", &args));
    assert!(said.contains("Restored site copy from"), "{said}");
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(into.path().join("copy/site_config.json")).unwrap(),
    )
    .unwrap();
    let db_url = config["db_url"].as_str().unwrap();
    match &db {
        None => assert_eq!(
            db_url,
            format!(
                "sqlite://{}/copy/site.sqlite3",
                into.path().canonicalize().unwrap().display()
            ),
            "paths are rewritten for the folder restored into, absolute"
        ),
        Some(db) => assert_eq!(db_url, db),
    }
    let copy = serve_restored(&site, into, "copy", db.as_deref()).await;
    // The same keys log in: the backup carried the users and the site's encryption key.
    let held = descriptions(&copy).await;
    assert!(
        !held.is_empty() && held.len() < written,
        "{} of {written}",
        held.len()
    );
    let expected: Vec<String> = (1..=held.len()).map(|n| format!("todo {n:05}")).collect();
    assert_eq!(
        held, expected,
        "the first writes, in order, and nothing after"
    );
    // Its update log stops where its documents stop.
    let (_, b) = copy
        .get(r#"/api/resource/Event Update Log?fields=["count(name) as n"]"#)
        .await;
    let logs = b["data"][0]["n"].as_i64().unwrap_or(0);
    assert!(
        logs == 0 || logs as usize == held.len(),
        "{logs} logs, {} ToDos",
        held.len()
    );
    let (s, _) = copy
        .post("/api/resource/ToDo", json!({"description": "after"}))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_producer_is_named_to_its_consumer_sqlite() {
    restored_producer(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_producer_is_named_to_its_consumer_postgres() {
    restored_producer(Backend::Postgres).await;
}

async fn restored_producer(backend: Backend) {
    let Some((mut p, c)) = start_pair_on(backend).await else {
        return;
    };
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    let first = p.insert("ToDo", json!({"description": "before"})).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(15, "the first ToDo", || {
        get_opt(&c, format!("/api/resource/ToDo/{first}"))
    })
    .await;
    // Backed up while the consumer is in step with it: no seq is past the backup.
    let file = p.dir.path().join("producer.backup");
    backup(&p, &file);
    p.kill();
    ok(&site_cmd(
        p.dir.path(),
        &p.name,
        &["restore", file.to_str().unwrap()],
    ));
    p.serve().await;
    let lu_path = format!("/api/resource/Event Producer Last Update/{}", p.public_url);
    let note = eventually(30, "the consumer told of the restore", || async {
        let (_, lu) = c.get(&lu_path).await;
        lu["data"]["history_changed"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    })
    .await;
    assert!(
        note.contains("restored with `docstream site ... restore`")
            && note.contains("from a backup made at"),
        "{note}"
    );
    let (_, d) = c
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(
        d["message"]["producers"][0]["status"], "History changed",
        "{d}"
    );
    // Streaming goes on from the restored producer.
    let later = p.insert("ToDo", json!({"description": "after"})).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(20, "the ToDo made after the restore", || {
        get_opt(&c, format!("/api/resource/ToDo/{later}"))
    })
    .await;
    assert_eq!(
        count_of(&c, "Event Sync Log", json!({"status": "Failed"})).await,
        0,
        "the replay passed over what the consumer already held"
    );
}

/// What the streaming dashboard shows of the scheduled backups.
async fn backups_shown(site: &TestSite) -> Value {
    let (s, d) = site
        .get("/api/method/docstream.desk.streaming_dashboard")
        .await;
    assert_eq!(s, 200, "{d}");
    d["message"]["backups"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_once_per_interval_across_processes_sqlite() {
    scheduled_backups(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_run_once_per_interval_across_processes_postgres() {
    scheduled_backups(Backend::Postgres).await;
}

/// Two processes serve one site with backups every 2 s, the newest 2 kept: between them one
/// backup is written per interval (the site's backup lock and its record), old ones go, the
/// dashboard and `/metrics` say how it went, and the newest restores.
async fn scheduled_backups(backend: Backend) {
    const EVERY_S: f64 = 2.0;
    let began = std::time::Instant::now();
    let Some(site) = TestSite::start_with(
        backend,
        &[
            ("backup_interval_hours", json!(EVERY_S / 3600.0)),
            ("backup_keep", json!(2)),
        ],
    )
    .await
    else {
        return;
    };
    let log2 = site.dir.path().join("serve2.log");
    let other = site.serve_another(Some(&log2)).await;
    site.insert("ToDo", json!({"description": "held by the schedule"}))
        .await;
    // Files the schedule reports, until three written after the ToDo.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{seen:?}: {}",
            site.log()
        );
        if let Some(f) = backups_shown(&site).await["last_file"].as_str() {
            seen.insert(f.to_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    drop(other);
    let logs = site.log() + &std::fs::read_to_string(&log2).unwrap();
    let written = logs.matches("scheduled backup written").count();
    assert!(
        written as f64 <= elapsed / EVERY_S + 1.0,
        "{written} backups in {elapsed:.1} s from two processes: more than one per interval"
    );
    let b = backups_shown(&site).await;
    assert_eq!(b["enabled"], true, "{b}");
    assert_eq!(b["failures_in_a_row"], 0, "{b}");
    assert_eq!(b["last_error"], Value::Null, "{b}");
    assert_eq!(b["overdue"], false, "{b}");
    // The newest two are kept.
    let folder = site.site_dir().join("backups");
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let newest = b["last_file"].as_str().unwrap();
    assert_eq!(files[1], newest);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(newest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, m) = site
        .request(&site.admin_auth, reqwest::Method::GET, "/metrics", None)
        .await;
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("docstream_backup_failures 0"), "{m}");
    assert!(
        !m.contains("docstream_backup_last_success_timestamp_seconds 0\n"),
        "{m}"
    );
    // The newest restores, with the ToDo.
    let into = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_pg_database().await),
    };
    let mut args = vec!["restore", newest];
    if let Some(db) = &db {
        args.extend(["--db", db]);
    }
    ok(&site_cmd(into.path(), "copy", &args));
    let copy = serve_restored(&site, into, "copy", db.as_deref()).await;
    assert!(descriptions(&copy)
        .await
        .contains(&"held by the schedule".to_string()));
}

/// A schedule that cannot write shows as failing on the dashboard and in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheduled_backup_is_shown() {
    let site = TestSite::start_with(
        Backend::Sqlite,
        &[
            ("backup_interval_hours", json!(1.0 / 3600.0)),
            ("backup_dir", json!("/dev/null/backups")),
        ],
    )
    .await
    .unwrap();
    let b = eventually(15, "two failed backups", || async {
        let b = backups_shown(&site).await;
        (b["failures_in_a_row"].as_i64() >= Some(2)).then_some(b)
    })
    .await;
    let why = b["last_error"].as_str().unwrap();
    assert!(why.contains("/dev/null/backups"), "{b}");
    assert_eq!(b["last_ok"], Value::Null, "{b}");
    let (_, m) = site
        .request(&site.admin_auth, reqwest::Method::GET, "/metrics", None)
        .await;
    let m = m.as_str().unwrap();
    assert!(
        m.lines().any(|l| l
            .strip_prefix("docstream_backup_failures ")
            .and_then(|n| n.parse::<u32>().ok())
            >= Some(2)),
        "{m}"
    );
    assert!(
        m.contains("docstream_backup_last_success_timestamp_seconds 0\n"),
        "{m}"
    );
}
