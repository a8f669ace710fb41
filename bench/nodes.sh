#!/usr/bin/env bash
# shellcheck disable=SC2016 # '$PORT' is a placeholder that start_server (lib.sh) fills in.
# Measures Tether on PostgreSQL with one node and with three nodes on one database, beside the
# embedded SQLite store, in one run: builds Tether, creates a scratch database per deployment,
# starts the servers, runs the same workloads against each in turn (alternating rounds), and
# writes the medians to bench/results/nodes.md. The three-node rows spread the bench's
# connections (writers, subscribers, workers) over the nodes in turn.
#
# Settings (environment): ROUNDS (3), DURATION (10s), WARMUP (2s), CONNECTIONS (64),
# STREAMS (100), SUBSCRIBERS (100), FANOUT_MESSAGES (200), MESSAGES (200000),
# LIFECYCLE_WORKERS (32), IDLE_SUBSCRIBERS (10000), DATABASE_URL
# (postgres://postgres@127.0.0.1:5432/postgres: the server to create the scratch databases on).
# TETHER_BIN uses that server binary instead of building one; BENCH uses that load generator
# command instead of building `tether-bench`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-64}"
STREAMS="${STREAMS:-100}"
SUBSCRIBERS="${SUBSCRIBERS:-100}"
FANOUT_MESSAGES="${FANOUT_MESSAGES:-200}"
MESSAGES="${MESSAGES:-200000}"
LIFECYCLE_WORKERS="${LIFECYCLE_WORKERS:-32}"
IDLE_SUBSCRIBERS="${IDLE_SUBSCRIBERS:-10000}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/dist"
TETHER="${TETHER_BIN:-$RELEASE/tether}"
read -r -a BENCH <<<"${BENCH:-$RELEASE/tether-bench}"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tether-nodes.XXXXXX")"
SERVER_PIDS=()
DATABASES=()
cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        stop_server "$pid"
    done
    for db in "${DATABASES[@]}"; do
        psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${TETHER_BIN:-}" ]]; then
    say "building tether (profile dist: fat LTO)"
    cargo build --profile dist -p tether
fi
if [[ -z "${BENCH:-}" ]]; then
    say "building tether-bench (profile dist)"
    cargo build --profile dist -p tether-bench
fi

# scratch_database NAME: creates it on DATABASE_URL's server; sets SCRATCH_URL to its URL.
scratch_database() {
    local name="tether_bench_$1_$$"
    psql "$DATABASE_URL" -qc "CREATE DATABASE $name" >/dev/null
    DATABASES+=("$name")
    SCRATCH_URL="${DATABASE_URL%/*}/$name"
}

# node LABEL N DATABASE...: starts node N of a deployment; appends its URL to URLS[LABEL].
declare -A URLS PIDS
node() {
    local label="$1" n="$2"
    shift 2
    start_server "$label node $n" "$WORK/$label-$n.log" \
        "$TETHER" serve --listen '127.0.0.1:$PORT' --data-dir "$WORK/$label-$n" --auth off \
        --max-concurrent 100000 "$@"
    URLS[$label]="${URLS[$label]:+${URLS[$label]},}http://127.0.0.1:$STARTED_PORT"
    PIDS[$label]="${PIDS[$label]:-$STARTED_PID}"
}

LABELS=(pg-3-nodes pg-1-node sqlite)
scratch_database three
for n in 1 2 3; do node pg-3-nodes "$n" --database "$SCRATCH_URL"; done
scratch_database one
node pg-1-node 1 --database "$SCRATCH_URL"
node sqlite 1

CONTEXT=(
    "load: ${STREAMS} streams, ${CONNECTIONS} connections for ${DURATION} after ${WARMUP} warm-up; SSE ${SUBSCRIBERS} subscribers x ${FANOUT_MESSAGES} appends; catch-up of ${MESSAGES} JSON messages; ${IDLE_SUBSCRIBERS} idle SSE subscribers; task lifecycle with ${LIFECYCLE_WORKERS} workers (submit, claim, 20 events in 4 batches, finish); bench client and every server on the same machine"
    "Tether $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit yet'), \`tether serve --auth off --max-concurrent 100000\`; pg-*: \`--database\` on PostgreSQL $(psql "$DATABASE_URL" -tAc 'SHOW server_version' 2>/dev/null || echo '?') on this machine, default settings (synchronous_commit on); pg-3-nodes: three nodes on one database, connections spread over them in turn; memory rows are of the first node"
    "load average when the rounds started: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
)

for round in $(seq "$ROUNDS"); do
    for label in "${LABELS[@]}"; do
        say "round $round of $ROUNDS: $label"
        mkdir -p "$WORK/$label"
        if ! "${BENCH[@]}" --url "${URLS[$label]}" --label "$label" --server-pid "${PIDS[$label]}" \
            --workload all --with-lifecycle --workers "$LIFECYCLE_WORKERS" \
            --streams "$STREAMS" --connections "$CONNECTIONS" \
            --duration "$DURATION" --warmup "$WARMUP" --subscribers "$SUBSCRIBERS" \
            --fanout-messages "$FANOUT_MESSAGES" --messages "$MESSAGES" \
            --catchup-stream bench-catchup --idle-subscribers "$IDLE_SUBSCRIBERS" --json "$WORK/$label/round-$round.json"; then
            say "round $round: $label had failures (listed above and in the report)"
        fi
    done
done

mkdir -p "$ROOT/bench/results"
SUMMARY=()
for label in "${LABELS[@]}"; do
    SUMMARY+=(--summarize "$label=$WORK/$label")
done
for line in "${CONTEXT[@]}"; do
    SUMMARY+=(--context "$line")
done
"${BENCH[@]}" "${SUMMARY[@]}" --out "$ROOT/bench/results/nodes.md" >/dev/null
say "wrote bench/results/nodes.md"
cat "$ROOT/bench/results/nodes.md"
