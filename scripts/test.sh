#!/usr/bin/env bash
# The project's test command: formatting check, then every test (unit, HTTP integration on
# SQLite and PostgreSQL, CLI, the frappe-js-sdk client test, the desk's browser test).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
# The desk's browser test drives Debian's Chromium headless (tests/desk.rs); install it if missing.
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  echo "test.sh: installing Debian's chromium (for the desk's browser test)" >&2
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi
if command -v npm >/dev/null && [ -f tests/js/package-lock.json ] && { [ ! -d tests/js/node_modules ] || [ ! -d tests/js/node_modules/playwright-core ]; }; then
  echo "test.sh: installing the npm packages of tests/js (npm ci)" >&2
  npm ci --prefix tests/js --no-audit --no-fund
fi
# The documentation's shell examples (scripts/check-docs.sh) need curl, jq, sqlite3, zstd,
# openssl (tests/https.rs makes its certificates with openssl too), nginx and
# systemd-analyze (Debian's systemd package).
for pair in curl:curl jq:jq sqlite3:sqlite3 zstd:zstd openssl:openssl nginx:nginx \
            systemd-analyze:systemd; do
  tool=${pair%%:*} package=${pair#*:}
  if ! command -v "$tool" >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    echo "test.sh: installing $package with apt-get (for scripts/check-docs.sh)" >&2
    apt-get install -y "$package" || { apt-get update && apt-get install -y "$package"; }
  fi
done
# tests/py_client.rs makes the Python virtual environment tests/python/.venv (pip, pinned
# versions) the first time, and says so.
# The release profile, in the same target folder as `cargo run --release -- demo`: the tests
# reuse the demo's build (and the other way round) instead of compiling everything twice.
cargo test --release --no-fail-fast "$@"
# Every `sh` block of README.md and docs/ runs against real sites, so the docs cannot go stale.
./scripts/check-docs.sh
