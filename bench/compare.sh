#!/usr/bin/env bash
# Compares Tether with Electric's Rust Durable Streams server on this machine, in one run:
# builds Tether, starts both servers on loopback with fresh data directories, runs every
# workload against each in turn (Tether, Electric, Tether, Electric, ...), and writes the
# medians and ratios to bench/results/latest.md.
#
# Settings (environment): ROUNDS (3), DURATION (10s), WARMUP (2s), CONNECTIONS (64,256),
# STREAMS (100), SUBSCRIBERS (1,100,1000), FANOUT_MESSAGES (200), MESSAGES (1000000).
# TETHER_BIN uses that server binary instead of building one; BENCH overrides the load
# generator command (default: "$TETHER bench").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-64,256}"
STREAMS="${STREAMS:-100}"
SUBSCRIBERS="${SUBSCRIBERS:-1,100,1000}"
FANOUT_MESSAGES="${FANOUT_MESSAGES:-200}"
MESSAGES="${MESSAGES:-1000000}"
LIFECYCLE_WORKERS="${LIFECYCLE_WORKERS:-32}"
TETHER="$ROOT/target/release/tether"
read -r -a BENCH <<<"${BENCH:-$TETHER bench}"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# Each SSE subscriber and connection is a file descriptor, in the bench and in the servers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tether-compare.XXXXXX")"
SERVER_PIDS=()
cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        stop_server "$pid"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -n "${TETHER_BIN:-}" ]]; then
    TETHER="$TETHER_BIN"
    say "using $TETHER as given by TETHER_BIN (not building)"
else
    say "building tether (release)"
    cargo build --release -p tether
fi

ELECTRIC="$(command -v durable-streams-server || true)"
if [[ -z "$ELECTRIC" && -x "$HOME/.cargo/bin/durable-streams-server" ]]; then
    ELECTRIC="$HOME/.cargo/bin/durable-streams-server"
fi
if [[ -z "$ELECTRIC" ]]; then
    say "durable-streams-server is missing: installing it with 'cargo install durable-streams'"
    if cargo install durable-streams; then
        ELECTRIC="$HOME/.cargo/bin/durable-streams-server"
    else
        say "SKIPPING Electric: 'cargo install durable-streams' failed; Tether is measured alone"
    fi
fi

CONTEXT=(
    "load: ${STREAMS} streams, ${CONNECTIONS} connections for ${DURATION} after ${WARMUP} warm-up; SSE ${SUBSCRIBERS} subscribers x ${FANOUT_MESSAGES} appends; catch-up of ${MESSAGES} JSON messages; 256-byte messages; task lifecycle with ${LIFECYCLE_WORKERS} workers (submit, claim, 20 events in 4 batches, finish); bench client on the same machine"
)

LABELS=()
declare -A URL PID LOG
if start_server Tether "$WORK/tether.log" \
    "$TETHER" serve --listen '127.0.0.1:$PORT' --data-dir "$WORK/tether-data" --auth off \
    --max-concurrent 100000; then
    LABELS+=(Tether)
    CONTEXT+=("Tether: \`tether serve --auth off --max-concurrent 100000\` (the lifecycle workload's tasks all belong to one user) ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit yet'))")
    mkdir -p "$WORK/Tether"
    URL[Tether]="http://127.0.0.1:$STARTED_PORT"
    PID[Tether]="$STARTED_PID"
    LOG[Tether]="$WORK/tether.log"
else
    say "SKIPPING Tether: its server did not start"
    CONTEXT+=("Tether: skipped, its server did not start: $(tail -n 3 "$WORK/tether.log" | tr '\n' ' ')")
fi

if [[ -n "$ELECTRIC" ]]; then
    version="$(cargo install --list 2>/dev/null | sed -n 's/^durable-streams \(v[^:]*\):$/\1/p')"
    if start_server Electric "$WORK/electric.log" \
        "$ELECTRIC" --host 127.0.0.1 --port '$PORT' --data-dir "$WORK/electric-data"; then
        LABELS+=(Electric)
        mkdir -p "$WORK/Electric"
        URL[Electric]="http://127.0.0.1:$STARTED_PORT"
        PID[Electric]="$STARTED_PID"
        LOG[Electric]="$WORK/electric.log"
        CONTEXT+=("Electric: \`durable-streams-server\` ${version:-unknown version}, default (durable WAL) mode")
    else
        say "SKIPPING Electric: its server did not start"
        CONTEXT+=("Electric: skipped, its server did not start")
    fi
else
    CONTEXT+=("Electric: skipped, durable-streams-server could not be installed")
fi

# Other work on the machine skews every figure; say how busy it was.
CONTEXT+=("load average when the rounds started: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)")
for round in $(seq "$ROUNDS"); do
    for label in "${LABELS[@]}"; do
        pid="${PID[$label]}"
        if ! kill -0 "$pid" 2>/dev/null; then
            say "round $round: $label's server has exited; skipping it. The end of its log:"
            tail -n 20 "${LOG[$label]}" >&2
            continue
        fi
        say "round $round of $ROUNDS: $label"
        extra=()
        [[ "$label" == Tether ]] && extra=(--with-lifecycle --workers "$LIFECYCLE_WORKERS")
        # The catch-up stream is preloaded in the first round and read again in later ones.
        if ! "${BENCH[@]}" --url "${URL[$label]}" --label "$label" --server-pid "$pid" \
            --workload all --streams "$STREAMS" --connections "$CONNECTIONS" \
            --duration "$DURATION" --warmup "$WARMUP" --subscribers "$SUBSCRIBERS" \
            --fanout-messages "$FANOUT_MESSAGES" --messages "$MESSAGES" \
            --catchup-stream bench-catchup "${extra[@]}" \
            --json "$WORK/$label/round-$round.json"; then
            say "round $round: $label had failures (listed above and in the report)"
        fi
    done
done

for label in "${LABELS[@]}"; do
    stop_server "${PID[$label]}"
done

if [[ ${#LABELS[@]} -eq 0 ]]; then
    say "no server could be measured"
    exit 1
fi
mkdir -p "$ROOT/bench/results"
SUMMARY=()
for label in "${LABELS[@]}"; do
    SUMMARY+=(--summarize "$label=$WORK/$label")
done
for line in "${CONTEXT[@]}"; do
    SUMMARY+=(--context "$line")
done
"${BENCH[@]}" "${SUMMARY[@]}" --out "$ROOT/bench/results/latest.md" >/dev/null
# Keep the per-round reports beside the summary, to look into or summarise again.
rm -rf "$ROOT/bench/results/latest-json"
mkdir -p "$ROOT/bench/results/latest-json"
for label in "${LABELS[@]}"; do
    cp -r "$WORK/$label" "$ROOT/bench/results/latest-json/"
done
say "wrote bench/results/latest.md and the per-round JSON in bench/results/latest-json/"
cat "$ROOT/bench/results/latest.md"
