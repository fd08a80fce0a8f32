//! Running Node.js scripts from `tests/js` (the frappe-js-sdk client test, the desk's browser test).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `tests/js` in the source tree.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// True when `node --version` runs.
pub fn node_available() -> bool {
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
pub struct Outcome {
    /// `None` when it was killed for running past its time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// True when it exited with 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Status and output, for an assertion message.
    pub fn report(&self, what: &str) -> String {
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
pub async fn run(mut cmd: Command, scratch: &Path, label: &str, limit: Duration) -> Outcome {
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

/// Runs `npm ci` in `tests/js` when the package `probe` is missing from its node_modules.
pub async fn ensure_npm_packages(probe: &str, scratch: &Path) {
    let js = js_dir();
    if js
        .join("node_modules")
        .join(probe)
        .join("package.json")
        .exists()
    {
        return;
    }
    eprintln!(
        "tests/js/node_modules lacks {probe}: running `npm ci` in {}",
        js.display()
    );
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(&js);
    let out = run(npm, scratch, "npm-ci", Duration::from_secs(600)).await;
    assert!(
        out.success(),
        "{}",
        out.report("`npm ci` in tests/js failed")
    );
}
