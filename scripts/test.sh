#!/usr/bin/env bash
# The project's test command: formatting check, then every test (unit, HTTP integration on
# SQLite and PostgreSQL, CLI, the frappe-js-sdk client test).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/docstream-target}"
cargo fmt --check
if command -v npm >/dev/null && [ ! -d tests/js/node_modules ] && [ -f tests/js/package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund
fi
cargo test --no-fail-fast "$@"
