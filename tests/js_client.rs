//! The real `frappe-js-sdk` npm client (which we did not write) driven against a live site.
//!
//! Runs `node tests/js/sdk_test.mjs <url> <api_key:api_secret>`; see that script for the steps.
//! Skipped, loudly, when Node.js is not installed. Installs the npm dependencies from
//! `tests/js/package-lock.json` (`npm ci`) when `tests/js/node_modules` is missing.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `tests/js` in the source tree.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// True when `node --version` runs.
fn node_available() -> bool {
    match Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "`node --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(_) => false,
    }
}

/// What a finished (or timed-out) child process left behind.
struct Outcome {
    /// `None` when it was killed for running past its time limit.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn report(&self, what: &str) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed after its time limit".to_string(),
        };
        format!(
            "{what}: {status}\n----- stdout -----\n{}\n----- stderr -----\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with stdout/stderr captured in files under `scratch`, killing it after `limit`.
/// Polls without blocking the runtime (the server under test is a separate process anyway).
async fn run(mut cmd: Command, scratch: &Path, label: &str, limit: Duration) -> Outcome {
    let out_path = scratch.join(format!("{label}.stdout"));
    let err_path = scratch.join(format!("{label}.stderr"));
    let out_file = std::fs::File::create(&out_path).unwrap();
    let err_file = std::fs::File::create(&err_path).unwrap();
    cmd.stdin(Stdio::null()).stdout(out_file).stderr(err_file);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot start {label} ({cmd:?}): {e}"),
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Outcome {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frappe_js_sdk_against_live_site() {
    if !node_available() {
        eprintln!(
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!!!!!!! Node.js (`node`) is not on PATH: the frappe-js-sdk client test is SKIPPED !!!!!!!!\n\
             !!!!!!!! Install Node.js >= 18 and npm to run tests/js/sdk_test.mjs           !!!!!!!!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }

    let js = js_dir();
    let scratch = tempfile::tempdir().unwrap();

    if !js
        .join("node_modules")
        .join("frappe-js-sdk")
        .join("package.json")
        .exists()
    {
        eprintln!(
            "tests/js/node_modules is missing: running `npm ci` in {}",
            js.display()
        );
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(&js);
        let out = run(npm, scratch.path(), "npm-ci", Duration::from_secs(600)).await;
        assert!(
            out.success(),
            "{}",
            out.report("`npm ci` in tests/js failed")
        );
    }

    let site = TestSite::start(Backend::Sqlite).await.unwrap();
    let token = site
        .admin_auth
        .strip_prefix("token ")
        .unwrap_or_else(|| panic!("unexpected admin_auth: {}", site.admin_auth))
        .to_string();

    let mut node = Command::new("node");
    node.arg(js.join("sdk_test.mjs"))
        .arg(&site.url)
        .arg(&token)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = run(node, scratch.path(), "sdk-test", Duration::from_secs(180)).await;
    eprintln!("{}", out.stdout);
    assert!(
        out.success(),
        "{}\n----- server log -----\n{}",
        out.report("node tests/js/sdk_test.mjs failed"),
        site.log()
    );
    assert!(
        out.stdout.contains("frappe-js-sdk steps passed"),
        "{}",
        out.report("sdk_test.mjs did not finish")
    );
}
