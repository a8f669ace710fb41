#!/usr/bin/env bash
# Runs the official Durable Streams conformance suite against a freshly started Tether and
# fails unless every core test passes.
#
#   scripts/conformance.sh [path/to/tether] [postgres://user@host:port/maintenance-db]
#
# With a PostgreSQL URL, the server runs on a scratch database created on that server for
# the run and dropped after it. Needs Node.js and npm (the suite is an npm package, installed
# on first use), and psql for the PostgreSQL run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/tether}
pg_admin=${2:-}
expected=${CONFORMANCE_EXPECTED:-332}
suite=${DS_CONFORMANCE_SCRIPT:-$root/../shared/tools/ds-conformance.sh}

data=$(mktemp -d)
log=$(mktemp)
out=$(mktemp)
database=()
scratch=""
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$scratch" ] && psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $scratch WITH (FORCE)" >/dev/null
  rm -rf "$data" "$log" "$out"
}
trap cleanup EXIT

if [ -n "$pg_admin" ]; then
  scratch="tether_conformance_$$"
  psql "$pg_admin" -qc "CREATE DATABASE $scratch" >/dev/null
  database=(--database "${pg_admin%/*}/$scratch")
  echo "conformance: on PostgreSQL database $scratch"
fi

"$bin" serve --listen 127.0.0.1:0 --data-dir "$data" --long-poll-timeout 500ms --auth off "${database[@]}" >"$log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "tether exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "tether did not report its address" >&2; exit 1; }
echo "conformance: running the suite against $url"

status=0
"$suite" "$url" >"$out" 2>&1 || status=$?
# vitest colours its summary; strip that before reading it.
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E '^ +Tests ' | tail -n1 || true)
sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E ' FAIL |✗|×' | head -n 50 || true
echo "conformance: ${summary:-no summary}"
passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
failed=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
if [ "$status" -ne 0 ] || [ "$passed" -lt "$expected" ]; then
  echo "conformance: FAILED ($passed passed, $expected expected, exit $status)" >&2
  exit 1
fi
echo "conformance: $passed of $expected core tests"
echo "conformance: $passed passed, $failed failed"
