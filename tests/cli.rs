//! The command line: exit codes, one-line errors, nothing half-created, graceful shutdown.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or("").to_string()
}

#[test]
fn new_site_twice_bad_db_and_site_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nested/data");
    let (code, out, _) = run(&["new-site", "alpha", "--admin-password", "pw1"], &data);
    assert_eq!(code, 0);
    assert!(out.contains("alpha"));
    let cfg = data.join("alpha/site_config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600,
        "site_config.json is private"
    );
    assert!(data.join("alpha/site.sqlite3").is_file());
    // A second new-site with the same name: exit 1, one clear line, nothing changed.
    let before = std::fs::read(&cfg).unwrap();
    let (code, _, err) = run(&["new-site", "alpha", "--admin-password", "pw2"], &data);
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
    // A bad --db: exit 1, and no folder left behind.
    let (code, _, err) = run(
        &[
            "new-site",
            "beta",
            "--admin-password",
            "pw",
            "--db",
            "mysql://x",
        ],
        &data,
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("postgres"), "{err}");
    assert!(!data.join("beta").exists());
    let (code, _, err) = run(
        &[
            "new-site",
            "gamma",
            "--admin-password",
            "pw",
            "--db",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        &data,
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).starts_with("error:"), "{err}");
    assert!(!data.join("gamma").exists());
    // Usage errors exit 2.
    let out = Command::new(bin()).args(["new-site"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // site list-users / set-admin-password / drop.
    let (code, out, _) = run(&["site", "alpha", "list-users"], &data);
    assert_eq!((code, out.trim()), (0, "Administrator"));
    let (code, _, _) = run(&["site", "alpha", "set-admin-password", "newpw"], &data);
    assert_eq!(code, 0);
    let (code, _, err) = run(&["site", "nope", "list-users"], &data);
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("no site nope"), "{err}");
    let (code, _, _) = run(&["site", "alpha", "drop"], &data);
    assert_eq!(code, 0);
    assert!(!data.join("alpha").exists());
}

#[tokio::test]
async fn set_admin_password_takes_effect_and_port_in_use_is_clear() {
    let mut site = TestSite::start(Backend::Sqlite).await.unwrap();
    site.kill();
    let (code, _, _) = run(
        &["site", &site.name.clone(), "set-admin-password", "changed"],
        site.dir.path(),
    );
    assert_eq!(code, 0);
    site.serve().await;
    let ok = site
        .post_form(
            "",
            "/api/method/login",
            &[("usr", "Administrator"), ("pwd", "changed")],
        )
        .await;
    assert_eq!(ok.0, 200);
    // The port is taken by the running server.
    let out = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(site.dir.path())
        .args(["--bind", &format!("127.0.0.1:{}", site.port)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(last_line(&err).contains("cannot listen"), "{err}");
}

#[tokio::test]
async fn sigterm_exits_zero_quickly_and_restarts_on_same_port() {
    let mut site = TestSite::start(Backend::Sqlite).await.unwrap();
    site.insert("ToDo", serde_json::json!({"description": "before restart"}))
        .await;
    let child = site.child.take().unwrap();
    let started = Instant::now();
    unsafe_kill(child.id(), "TERM");
    let status = wait_with_timeout(child, Duration::from_secs(10));
    assert_eq!(status, Some(0), "exit 0 within 10 s");
    assert!(started.elapsed() < Duration::from_secs(10));
    site.serve().await;
    let (_, l) = site
        .get("/api/resource/ToDo?fields=[\"description\"]")
        .await;
    assert_eq!(l["data"][0]["description"], "before restart");
}

fn unsafe_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serves_several_sites_by_host() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    for (name, url) in [
        ("north", format!("http://127.0.0.1:{port}")),
        ("south", "http://south.local:8000".to_string()),
    ] {
        let (code, _, err) = run(
            &["new-site", name, "--admin-password", "pw", "--url", &url],
            tmp.path(),
        );
        assert_eq!(code, 0, "{err}");
    }
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = |host: &'static str| {
        let c = client.clone();
        async move {
            c.get(format!("http://127.0.0.1:{port}/health"))
                .header("host", host)
                .send()
                .await
                .unwrap()
        }
    };
    let by_url: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_url["site"], "north");
    let by_name: serde_json::Value = health("south:9999").await.json().await.unwrap();
    assert_eq!(by_name["site"], "south");
    let r = client
        .get(format!("http://127.0.0.1:{port}/api/resource/ToDo"))
        .header("host", "unknown.example:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["exc_type"],
        "DoesNotExistError"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `bench` end to end on a few documents: every measure the spec lists comes out as a number,
/// in the table and in the JSON file (the figures themselves are checked by running it, not here).
#[test]
fn bench_prints_and_writes_every_measure() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("bench.json");
    let out = Command::new(bin())
        .args(["bench", "--docs", "40", "--json"])
        .arg(&json_path)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "raw_insert",
        "producer_write, streaming off",
        "producer_write, 10 consumers",
        "stream_apply",
        "latency p99",
        "catch_up_memory",
        "update log cost, 10 consumer(s)",
        "latency_longpoll p99",
        "waiting_pulls: extra RSS",
        "concurrent_write sqlite, streaming off",
        "fanout p99, last of 2 consumers",
        "verify, find and repair 10",
    ] {
        assert!(stdout.contains(row), "table lacks {row}:\n{stdout}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("concurrent_write: PostgreSQL skipped"),
        "without --db the PostgreSQL figures are skipped with a notice"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let positive = |p: &str| {
        let x = v.pointer(p).and_then(serde_json::Value::as_f64);
        assert!(x.is_some_and(|x| x > 0.0), "{p} is {x:?} in {v}");
    };
    for p in [
        "/raw_insert_per_s",
        "/extra/verify/in_step_seconds",
        "/extra/verify/ten_differences_found_and_repaired_seconds",
        "/producer_write_per_s/off",
        "/producer_write_per_s/1",
        "/producer_write_per_s/10",
        "/stream_apply_per_s",
        "/latency_ms/p50",
        "/latency_ms/p99",
        "/catch_up_peak_rss_mb",
        "/extra/latency_longpoll_ms/p99",
        "/extra/waiting_pulls/extra_rss_mb",
        "/extra/concurrent_write/sqlite/off/16",
        "/extra/concurrent_write/sqlite/1_consumer/1",
        "/extra/fanout/p99_ms_to_last_consumer",
        "/extra/fanout/producer_cpu_us_per_write",
    ] {
        positive(p);
    }
    assert_eq!(v["docs"], 40);
    assert_eq!(v["extra"]["stream_apply_missing_deps_failed"], 0);
    assert_eq!(v["extra"]["waiting_pulls"]["woken_with_the_write"], 1000);
}

/// A write made through the CLI goes through the same write path as the API: its hooks run
/// (a bad document is refused, nothing written) and it logs its update, which a subscribed
/// consumer then receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_insert_is_logged_and_streamed() {
    let (mut p, c) = start_pair().await;
    subscribe(
        &p,
        &c,
        serde_json::json!([{"ref_doctype": "ToDo", "use_same_name": 1, "sync_existing": 0}]),
    )
    .await;
    p.kill();
    let file = p.dir.path().join("todos.json");
    std::fs::write(
        &file,
        r#"[{"doctype": "ToDo", "description": "made on the command line"},
            {"doctype": "ToDo", "description": "and another"}]"#,
    )
    .unwrap();
    let data_dir = p.dir.path().to_path_buf();
    let (code, out, err) = run(
        &["site", &p.name, "insert", file.to_str().unwrap()],
        &data_dir,
    );
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(names.len(), 2, "{out}");
    // A document the hooks refuse (a User without a valid email) writes nothing at all.
    std::fs::write(
        &file,
        r#"[{"doctype": "ToDo", "description": "never written"},
            {"doctype": "User", "email": "not an email", "first_name": "X"}]"#,
    )
    .unwrap();
    let (code, _, err) = run(
        &["site", &p.name, "insert", file.to_str().unwrap()],
        &data_dir,
    );
    assert_eq!(code, 1);
    assert!(last_line(&err).contains("email"), "{err}");
    p.serve().await;
    let (_, logs) = p
        .get(r#"/api/resource/Event Update Log?fields=["docname","update_type"]&filters=[["ref_doctype","=","ToDo"]]&limit_page_length=0"#)
        .await;
    for n in &names {
        assert!(
            logs["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["docname"] == n.as_str() && l["update_type"] == "Create"),
            "no Create logged for {n}: {logs}"
        );
    }
    assert_eq!(count_of(&p, "ToDo", serde_json::json!({})).await, 2);
    for n in names {
        eventually(15, "the CLI's ToDo on the consumer", || async {
            get_opt(&c, format!("/api/resource/ToDo/{n}")).await
        })
        .await;
    }
}

/// A site made with a relative `--data-dir` stores absolute paths, so `serve` started from
/// another folder opens it; its first log line names the version.
#[tokio::test]
async fn a_relative_data_dir_is_stored_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .current_dir(tmp.path())
        .args([
            "new-site",
            "rel",
            "--data-dir",
            "data",
            "--admin-password",
            "pw",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("data/rel/site_config.json")).unwrap(),
    )
    .unwrap();
    let real = tmp.path().canonicalize().unwrap();
    assert_eq!(
        config["db_url"],
        format!("sqlite://{}/data/rel/site.sqlite3", real.display())
    );
    let port = free_port();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .current_dir(elsewhere.path())
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(real.join("data"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let first = log.lines().find(|l| l.contains("serving")).unwrap_or("");
    assert!(
        first.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && first.contains(&format!("addr=127.0.0.1:{port}"))
            && first.contains("sites=rel")
            && !first.contains("Some("),
        "{log}"
    );
}
