//! The real `frappe-js-sdk` npm client (which we did not write) driven against a live site.
//!
//! Runs `node tests/js/sdk_test.mjs <url> <api_key:api_secret>`; see that script for the steps.
//! Skipped, loudly, when Node.js is not installed. Installs the npm dependencies from
//! `tests/js/package-lock.json` (`npm ci`) when `tests/js/node_modules` is missing.

mod common;
use common::node::{ensure_npm_packages, js_dir, node_available, run};
use common::*;
use std::process::Command;
use std::time::Duration;

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

    ensure_npm_packages("frappe-js-sdk", scratch.path()).await;

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
