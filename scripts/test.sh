#!/usr/bin/env bash
# The project's test command: formatting check, then every test (unit, HTTP integration on
# SQLite and PostgreSQL, CLI, the frappe-js-sdk client test, the desk's browser test).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/docstream-target}"
cargo fmt --check
# The desk's browser test drives Debian's Chromium headless (tests/desk.rs); install it if missing.
if ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi
if command -v npm >/dev/null && [ -f tests/js/package-lock.json ] && { [ ! -d tests/js/node_modules ] || [ ! -d tests/js/node_modules/playwright-core ]; }; then
  npm ci --prefix tests/js --no-audit --no-fund
fi
cargo test --no-fail-fast "$@"
