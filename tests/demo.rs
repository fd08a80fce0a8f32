//! `docstream demo`: two wired sites with sample data; an Item made on the head office reaches
//! the branch, the branch's invoice reaches the head office; Ctrl-C stops it cleanly.

mod common;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn login(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .post(format!("{url}/api/method/login"))
        .form(&[("usr", "Administrator"), ("pwd", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sid_cookie(&r)
}

async fn get(client: &reqwest::Client, url: &str, sid: &str, path: &str) -> (u16, Value) {
    let r = client
        .get(format!("{url}{path}"))
        .header("cookie", sid)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Prints what the demo wrote to stderr when the test fails (it says why the demo stopped).
struct StderrOnFailure(std::path::PathBuf);

impl Drop for StderrOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- demo stderr ---\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_wires_two_sites_and_streams_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("demo.stderr");
    let _show = StderrOnFailure(stderr_path.clone());
    // Two consecutive free ports.
    let port = loop {
        let p = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut child = Command::new(bin())
        .args(["demo", "--data-dir"])
        .arg(tmp.path())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // The demo's sites go by host names of their own under localhost (RFC 6761).
    let (head, branch) = (
        format!("http://ho.localhost:{port}"),
        format!("http://branch.localhost:{}", port + 1),
    );
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let client = reqwest::Client::builder()
        .resolve("ho.localhost", loopback)
        .resolve("branch.localhost", loopback)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = client
            .get(format!("{branch}/api/resource/Item"))
            .send()
            .await
            .map(|r| r.status().as_u16() == 403)
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "demo did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (hs, bs) = (login(&client, &head).await, login(&client, &branch).await);
    // Sample items reached the branch through the snapshot.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, items) = get(&client, &branch, &bs, "/api/resource/Item").await;
        if items["data"].as_array().map(|a| a.len()) == Some(3) {
            break;
        }
        assert!(
            Instant::now() < until,
            "items did not reach the branch: {items}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The branch's invoice reached the head office.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, inv) = get(&client, &head, &hs, "/api/resource/Sales Invoice").await;
        if inv["data"].as_array().map(|a| a.len()) == Some(1) {
            break;
        }
        assert!(
            Instant::now() < until,
            "invoice did not reach the head office: {inv}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new Item on the head office appears on the branch.
    let r = client
        .post(format!("{head}/api/resource/Item"))
        .header("cookie", &hs)
        .json(&json!({"item_code": "NEW-1", "item_group": "Products"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let until = Instant::now() + Duration::from_secs(20);
    while get(&client, &branch, &bs, "/api/resource/Item/NEW-1")
        .await
        .0
        != 200
    {
        assert!(Instant::now() < until, "new item did not stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The terminal tells the story: the branch's line names the streamed Item.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let told = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if told
            .lines()
            .any(|l| l.contains(&format!("branch <- {head}")) && l.contains("Item NEW-1 (Create)"))
        {
            assert!(
                told.contains("head-office <- "),
                "the head office's invoice line: {told}"
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "no line names the streamed Item: {told}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "demo exit status {status}");
            break;
        }
        assert!(Instant::now() < until, "demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains(&head) && out.contains(&branch) && out.contains("Administrator"),
        "{out}"
    );
    // The printed hint is a command a user can paste.
    assert!(
        out.contains(&format!(
            "curl -s -b /tmp/ho-cookies {head}/api/resource/Item"
        )),
        "{out}"
    );
}
