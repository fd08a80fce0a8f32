//! The real `frappe-client` PyPI package (which we did not write) driven against a live site.
//!
//! Runs `python tests/python/client_test.py <url>` (see that script for the checks) with the
//! interpreter of a virtual environment holding the versions pinned in
//! `tests/python/requirements.txt`. The environment is `tests/python/.venv`, or
//! `$DOCSTREAM_PY_VENV` when set; it is made (or remade) from the pinned files when it lacks
//! one of the pinned versions, with `python3 -m venv` (`$DOCSTREAM_PYTHON` instead of `python3`
//! when set) and pip from PyPI. Skipped, loudly, when there is no Python 3.
//!
//! `DOCSTREAM_TEST_UPLOAD=0` in the environment is passed on: the script then leaves out
//! `/api/method/upload_file`.

mod common;
use common::node::run;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `tests/python` in the source tree.
fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("python")
}

/// The interpreter that makes the virtual environment.
fn base_python() -> String {
    std::env::var("DOCSTREAM_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// True when `<python> --version` runs.
fn python_available(python: &str) -> bool {
    matches!(
        Command::new(python)
            .arg("--version")
            .stdin(Stdio::null())
            .output(),
        Ok(out) if out.status.success()
    )
}

/// `name==version` with the name in PEP 503 form (lower case, runs of `-_.` as `-`).
fn normalized_pin(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let (name, version) = line.split_once("==")?;
    let mut norm = String::new();
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !norm.ends_with('-') {
                norm.push('-');
            }
        } else {
            norm.push(c.to_ascii_lowercase());
        }
    }
    Some(format!("{norm}=={}", version.trim()))
}

/// The pins of `tests/python/build-requirements.txt` and `requirements.txt`.
fn wanted_pins() -> Vec<String> {
    ["build-requirements.txt", "requirements.txt"]
        .iter()
        .flat_map(|f| {
            let p = py_dir().join(f);
            std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
                .lines()
                .filter_map(normalized_pin)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The pinned versions `venv_python` lacks (all of them when it cannot run pip).
async fn missing_pins(venv_python: &Path, scratch: &Path) -> Vec<String> {
    let wanted = wanted_pins();
    if !venv_python.exists() {
        return wanted;
    }
    let mut freeze = Command::new(venv_python);
    freeze.args([
        "-m",
        "pip",
        "freeze",
        "--all",
        "--disable-pip-version-check",
    ]);
    let out = run(freeze, scratch, "pip-freeze", Duration::from_secs(120)).await;
    if !out.success() {
        return wanted;
    }
    let have: Vec<String> = out.stdout.lines().filter_map(normalized_pin).collect();
    wanted.into_iter().filter(|p| !have.contains(p)).collect()
}

/// The virtual environment's interpreter, with every pinned version installed.
async fn ensure_venv(python: &str, scratch: &Path) -> PathBuf {
    let dir = py_dir();
    let venv = std::env::var_os("DOCSTREAM_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(".venv"));
    let venv_python = venv.join("bin").join("python");
    let missing = missing_pins(&venv_python, scratch).await;
    if missing.is_empty() {
        return venv_python;
    }
    eprintln!(
        "{} lacks {}: making it from tests/python/requirements.txt",
        venv.display(),
        missing.join(", ")
    );
    let mut make = Command::new(python);
    make.args(["-m", "venv", "--clear"]).arg(&venv);
    let out = run(make, scratch, "venv", Duration::from_secs(300)).await;
    assert!(out.success(), "{}", out.report("`python3 -m venv` failed"));

    // frappe-client is a source archive: its pinned build backend first, then everything
    // else built with that one (no isolated build environment with the newest setuptools).
    let steps: [(&str, &[&str]); 2] = [
        ("pip-build", &["-r", "build-requirements.txt"]),
        (
            "pip-install",
            &["--no-build-isolation", "-r", "requirements.txt"],
        ),
    ];
    for (label, args) in steps {
        let mut pip = Command::new(&venv_python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(args)
            .current_dir(&dir);
        let out = run(pip, scratch, label, Duration::from_secs(600)).await;
        assert!(
            out.success(),
            "{}",
            out.report(&format!("`pip install {}` failed", args.join(" ")))
        );
    }
    let missing = missing_pins(&venv_python, scratch).await;
    assert!(
        missing.is_empty(),
        "after pip install, {} still lacks {}",
        venv.display(),
        missing.join(", ")
    );
    venv_python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frappe_client_python_against_live_site() {
    let python = base_python();
    if !python_available(&python) {
        eprintln!(
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!!!!!!! `{python}` is not on PATH: the Python frappe-client test is SKIPPED !!!!!!!!\n\
             !!!!!!!! Install Python >= 3.11 with venv and pip to run tests/python/client_test.py !!!!!!!!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }

    let scratch = tempfile::tempdir().unwrap();
    let venv_python = ensure_venv(&python, scratch.path()).await;

    let site = TestSite::start(Backend::Sqlite).await.unwrap();

    let mut py = Command::new(&venv_python);
    py.arg(py_dir().join("client_test.py"))
        .arg(&site.url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = run(py, scratch.path(), "py-client", Duration::from_secs(180)).await;
    eprintln!("{}", out.stdout);
    assert!(
        out.success(),
        "{}\n----- server log -----\n{}",
        out.report("python tests/python/client_test.py failed"),
        site.log()
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("python client: ") && l.ends_with(" passed, 0 failed")),
        "{}",
        out.report("client_test.py did not finish")
    );
}
