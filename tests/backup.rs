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
    let mut copy = TestSite {
        dir: into,
        name: "copy".into(),
        port: free_port(),
        url: String::new(),
        public_url: String::new(),
        child: None,
        client: site.client.clone(),
        admin_auth: site.admin_auth.clone(),
        backend,
        pg_db: db
            .as_ref()
            .and_then(|u| u.rsplit('/').next())
            .map(str::to_string),
    };
    copy.url = format!("http://127.0.0.1:{}", copy.port);
    copy.serve().await;
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
