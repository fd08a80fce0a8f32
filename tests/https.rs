//! HTTPS served by `serve` itself: a producer on `https://localhost` with a self-signed
//! certificate (its own, chosen by SNI), a consumer that trusts it through `ca_file` and pulls
//! over HTTPS, session cookies marked `Secure` over HTTPS, a renewed certificate taken without
//! a restart, and an `X-Forwarded-Proto` from an untrusted address ignored.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// A self-signed certificate for localhost, its key, in `dir` under `name`.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=localhost/O={name}"),
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn trusting(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// The `sid` cookie a login answer sets, with its attributes (`common::sid_cookie` keeps only
/// the value).
fn sid_with_attributes(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("sid="))
        .unwrap()
}

fn set_config(dir: &Path, settings: &[(&str, Value)]) {
    let p = dir.join("site_config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    for (k, v) in settings {
        cfg[*k] = v.clone();
    }
    std::fs::write(&p, cfg.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_pulls_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "first");
    let port = free_port();
    let url = format!("https://localhost:{port}");
    let out = Command::new(bin())
        .args(["new-site", "site1", "--data-dir"])
        .arg(dir.path())
        .args(["--admin-password", "admin", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_config(
        &dir.path().join("site1"),
        &[
            ("tls_cert", json!(cert.to_str().unwrap())),
            ("tls_key", json!(key.to_str().unwrap())),
            ("pull_interval", json!(1)),
        ],
    );
    let mut p = TestSite {
        dir,
        name: "site1".into(),
        port,
        url: url.clone(),
        public_url: url.clone(),
        child: None,
        client: trusting(&cert),
        admin_auth: String::new(),
        backend: Backend::Sqlite,
        pg_db: None,
    };
    p.serve().await;
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    // Logging in over HTTPS: the session cookie is Secure.
    let r = p
        .client
        .post(format!("{url}/api/method/login"))
        .form(&[("usr", "Administrator"), ("pwd", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sid = sid_with_attributes(&r);
    assert!(
        sid.ends_with("; Secure") && sid.contains("HttpOnly"),
        "{sid}"
    );
    p.admin_auth = p.admin_key().await;

    // A consumer that trusts the certificate through ca_file pulls over HTTPS.
    let c = TestSite::start_with(
        Backend::Sqlite,
        &[
            ("ca_file", json!(cert.to_str().unwrap())),
            ("pull_interval", json!(1)),
        ],
    )
    .await
    .unwrap();
    subscribe(&p, &c, json!([{"ref_doctype": "ToDo", "use_same_name": 1}])).await;
    let todo = p.insert("ToDo", json!({"description": "over https"})).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(20, "the ToDo over https", || {
        get_opt(&c, format!("/api/resource/ToDo/{todo}"))
    })
    .await;

    // A renewed certificate is served without a restart.
    let (renewed, renewed_key) = certificate(p.dir.path(), "renewed");
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed, &cert).unwrap();
    let after = trusting(&renewed);
    eventually(10, "the renewed certificate", || {
        let after = after.clone();
        let url = url.clone();
        async move {
            after
                .get(format!("{url}/health"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;

    // On plain HTTP, X-Forwarded-Proto from an address the site does not trust is ignored.
    let r = c
        .client
        .post(format!("{}/api/method/login", c.url))
        .header("x-forwarded-proto", "https")
        .form(&[("usr", "Administrator"), ("pwd", "admin")])
        .send()
        .await
        .unwrap();
    let sid = sid_with_attributes(&r);
    assert!(!sid.contains("Secure"), "{sid}");
}
