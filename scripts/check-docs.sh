#!/usr/bin/env bash
# Runs every ```sh block of README.md and docs/*.md against real sites, so the documentation
# cannot go stale.
#
# Convention: a fenced block tagged `sh` is executed; a block that must not run (cargo
# commands, steps that need a real Frappe site or PostgreSQL) is tagged `text` or `console`.
# Blocks tagged `bash`, `shell` or `zsh` are refused, so no command escapes the convention.
#
# The blocks of one file run in order in one bash session (a later block sees the variables an
# earlier one set), each with `set -euo pipefail`, so a failing command or check fails its
# block; shell functions a block defines carry over too. Before the first file, this script creates and serves two sites, exported as:
#   HO=http://127.0.0.1:$DOCS_PORT_BASE      head office, site "head-office" in $DATA/ho
#   BR=http://127.0.0.1:$((DOCS_PORT_BASE+1)) branch, site "branch" in $DATA/br
#   SITE=$HO                                  the single site of the README's examples
#   LAB_PORT=$((DOCS_PORT_BASE+2))            a free port for blocks that serve a site of their own
#   DOWN=http://127.0.0.1:$((DOCS_PORT_BASE+9)) an address where nothing listens
#   DATA                                      the data folder; `docstream` is on PATH
# Both sites have the user Administrator with password `admin`.
#
# Environment: DOCSTREAM_BIN (default ${CARGO_TARGET_DIR:-target}/release/docstream),
# DOCS_PORT_BASE (default 18150), DOCS_BLOCK_TIMEOUT (seconds per block, default 120),
# DOCS_FILES (the files to check, space-separated; default README.md and docs/*.md, in reading
# order), DOCS_KEEP=1 keeps the temporary folder. Needs curl, jq, sqlite3, zstd and openssl.
# Ends with the line `docs: N passed, M failed`; exits non-zero when M > 0.
set -euo pipefail

# ---- one file's session (the script calls itself with --session) ----
if [ "${1:-}" = "--session" ]; then
  __blockdir=$2 __results=$3 __label=$4
  echo $$ >"$__blockdir/session.pid"
  # Variables a block does not carry over: the shell's own, and this loop's (all named __*).
  __skip='^(BASH.*|FUNCNAME|PIPESTATUS|GROUPS|RANDOM|SRANDOM|SECONDS|LINENO|SHELLOPTS|PPID|UID|EUID|OPTIND|OPTARG|OPTERR|IFS|PS[0-9]|HISTCMD|EPOCHREALTIME|EPOCHSECONDS|PWD|OLDPWD|SHLVL|COLUMNS|LINES|DIRSTACK|COMP_.*|HOSTNAME|HOSTTYPE|MACHTYPE|OSTYPE|_|__.*)$'
  __dump_vars() {
    local __v
    for __v in $(compgen -v); do
      [[ $__v =~ $__skip ]] && continue
      [[ ${!__v@a} == *r* ]] && continue
      declare -p "$__v" 2>/dev/null || true
    done
    for __v in $(compgen -A function); do
      [[ $__v == __* ]] || declare -f "$__v"
    done
    printf 'cd %q\n' "$PWD"
  }
  while read -r __n __line; do
    __b="$__blockdir/$__n.sh"
    (
      set -euo pipefail
      # shellcheck disable=SC1090
      source "$__b"
      set +eu
      __dump_vars >"$__b.vars"
    ) >"$__b.out" 2>&1 </dev/null &
    __pid=$!
    ( sleep "${DOCS_BLOCK_TIMEOUT:-120}"; echo "block timed out" >>"$__b.out"; kill -TERM "$__pid" 2>/dev/null ) &
    __dog=$!
    __rc=0
    wait "$__pid" || __rc=$?
    kill "$__dog" 2>/dev/null || true
    wait "$__dog" 2>/dev/null || true
    if [ "$__rc" = 0 ] && [ -f "$__b.vars" ]; then
      set +u
      # shellcheck disable=SC1090
      source "$__b.vars" >/dev/null 2>&1 || true
      set -u
      echo "PASS $__label:$__line" >>"$__results"
    else
      echo "FAIL $__label:$__line (exit $__rc)" >>"$__results"
      sed 's/^/    | /' "$__b.out" | tail -n 25 >>"$__results"
    fi
  done <"$__blockdir/index"
  exit 0
fi

# ---- the run ----
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN="${DOCSTREAM_BIN:-${CARGO_TARGET_DIR:-target}/release/docstream}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
if [ ! -x "$BIN" ]; then
  echo "check-docs: no docstream binary at $BIN (build it with cargo build --release, or set DOCSTREAM_BIN)" >&2
  echo "docs: 0 passed, 1 failed"
  exit 1
fi
missing=""
for tool in curl jq sqlite3 setsid ps; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "check-docs: missing tools:$missing" >&2
  echo "docs: 0 passed, 1 failed"
  exit 1
fi

BASE=${DOCS_PORT_BASE:-18150}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/docstream-docs.XXXXXX")
PIDS=()
SESSIONS=()
cleanup() {
  local p
  for p in "${SESSIONS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${DOCS_KEEP:-0}" = 1 ]; then echo "check-docs: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$BASE" "$((BASE + 1))" "$((BASE + 2))" "$((BASE + 9))"; do
  if listening "$p"; then
    echo "check-docs: port $p is in use; set DOCS_PORT_BASE to another base" >&2
    echo "docs: 0 passed, 1 failed"
    exit 1
  fi
done

mkdir -p "$TMP/bin" "$TMP/data" "$TMP/work"
ln -s "$BIN" "$TMP/bin/docstream"
export PATH="$TMP/bin:$PATH"
export DATA="$TMP/data"
export HO="http://127.0.0.1:$BASE" BR="http://127.0.0.1:$((BASE + 1))"
export SITE="$HO" LAB_PORT="$((BASE + 2))" DOWN="http://127.0.0.1:$((BASE + 9))"

# The two sites of the docs, made as docs/admin-guide.md shows.
docstream new-site head-office --data-dir "$DATA/ho" --admin-password admin --url "$HO" >/dev/null
docstream new-site branch --data-dir "$DATA/br" --admin-password admin --url "$BR" >/dev/null
docstream serve --data-dir "$DATA/ho" --bind "127.0.0.1:$BASE" >"$TMP/ho.log" 2>&1 &
PIDS+=("$!")
docstream serve --data-dir "$DATA/br" --bind "127.0.0.1:$((BASE + 1))" >"$TMP/br.log" 2>&1 &
PIDS+=("$!")
for url in "$HO" "$BR"; do
  for _ in $(seq 200); do
    curl -sf "$url/health" >/dev/null && break
    sleep 0.1
  done
  if ! curl -sf "$url/health" >/dev/null; then
    echo "check-docs: $url did not start" >&2
    cat "$TMP/ho.log" "$TMP/br.log" >&2
    echo "docs: 0 passed, 1 failed"
    exit 1
  fi
done
for p in "${PIDS[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "check-docs: a server exited at start" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

RESULTS="$TMP/results"
: >"$RESULTS"
refused=0
if [ -n "${DOCS_FILES:-}" ]; then
  read -r -a files <<<"$DOCS_FILES"
else
  files=(README.md docs/README.md docs/admin-guide.md docs/operations.md docs/protocol.md docs/design-choices.md)
  for extra in docs/*.md; do
    case " ${files[*]} " in *" $extra "*) ;; *) files+=("$extra") ;; esac
  done
fi
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  id=$(echo "$f" | tr '/.' '__')
  blockdir="$TMP/blocks/$id"
  mkdir -p "$blockdir"
  # Blocks: ```sh ... ``` (the fence may be indented); the index gives each block's line.
  awk -v dir="$blockdir" -v file="$f" '
    function fence_tag(s) { sub(/^[ \t]*```/, "", s); sub(/[ \t].*$/, "", s); return s }
    /^[ \t]*```/ {
      if (!open) {
        open = 1; tag = fence_tag($0)
        if (tag == "sh") { n++; out = sprintf("%s/%03d.sh", dir, n); printf "" > out; printf "%03d %d\n", n, NR >> (dir "/index") }
        else if (tag == "bash" || tag == "shell" || tag == "zsh") { printf "%s:%d\n", file, NR >> (dir "/refused") }
        next
      }
      # A trailing ":" line: bash 5.2 may exec the last external command of a sourced file in
      # place of the session, which then ends without its checks (counted failed, exit 0).
      if ($0 ~ /^[ \t]*```[ \t]*$/) { if (tag == "sh") { print ":" > out; close(out) } open = 0; tag = ""; next }
    }
    open && tag == "sh" { print > out }
  ' "$f"
  if [ -f "$blockdir/refused" ]; then
    while read -r where; do
      echo "FAIL $where (a block tagged bash/shell/zsh: tag it sh to run it, or text to show it)" >>"$RESULTS"
      refused=$((refused + 1))
    done <"$blockdir/refused"
  fi
  [ -f "$blockdir/index" ] || continue
  work="$TMP/work/$id"
  mkdir -p "$work"
  # A session of its own, so that anything a block left running (a server it started) can be
  # stopped with it by its process group.
  (cd "$work" && setsid --wait bash "$ROOT/scripts/check-docs.sh" --session "$blockdir" "$RESULTS" "$f") &
  runner=$!
  for _ in $(seq 50); do [ -s "$blockdir/session.pid" ] && break; sleep 0.1; done
  sess=$(cat "$blockdir/session.pid" 2>/dev/null || true)
  [ -n "$sess" ] && SESSIONS+=("$sess")
  wait "$runner" || true
  [ -n "$sess" ] && kill -TERM -- "-$sess" 2>/dev/null || true
done

passed=$(grep -c '^PASS ' "$RESULTS" || true)
failed=$(grep -c '^FAIL ' "$RESULTS" || true)
cat "$RESULTS"
for p in "${PIDS[@]}"; do
  if ! kill -0 "$p" 2>/dev/null; then
    echo "check-docs: a docs site server died during the run; its log:" >&2
    cat "$TMP/ho.log" "$TMP/br.log" >&2
  fi
done
echo "docs: $passed passed, $failed failed"
[ "$failed" = 0 ]
