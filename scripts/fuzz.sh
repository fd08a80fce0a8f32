#!/usr/bin/env bash
# Runs the property tests of the outside-input parsers (src/properties.rs) for longer than
# `cargo test` does: each target gets PROPTEST_CASES cases (default 20000), stopped after
# FUZZ_SECONDS (default 60) if it has not finished. Prints each target's time and outcome;
# exits non-zero when a target finds a failing input (proptest prints the smallest one).
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
limit="${FUZZ_SECONDS:-60}"
cargo test --release --lib --no-run
failed=0
for target in list_queries_never_carry_input_into_sql request_arguments_parse_or_refuse \
  diffs_see_every_change pull_pages_refuse_any_damage conditions_end_within_their_limits; do
  start=$(date +%s)
  set +e
  timeout "$limit" cargo test --release --lib -q "properties::$target" -- --exact > "/tmp/fuzz-$target.log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  case $rc in
    0) echo "fuzz $target: $PROPTEST_CASES cases, ${took}s, nothing found" ;;
    124) echo "fuzz $target: stopped after ${took}s (time bound), nothing found so far" ;;
    *) echo "fuzz $target: FAILED after ${took}s; see /tmp/fuzz-$target.log"; tail -20 "/tmp/fuzz-$target.log"; failed=1 ;;
  esac
done
exit $failed
