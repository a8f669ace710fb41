#!/usr/bin/env bash
# shellcheck disable=SC2016 # '$PORT' is a placeholder that start_server (lib.sh) fills in.
# Compares Tether with its peers on this machine, in one run: Electric's Rust Durable Streams
# server, the Node reference server, Redis Streams and NATS JetStream. Builds Tether, installs
# the Durable Streams peers that are missing (or says what to install), starts every server on
# loopback with a fresh data directory, runs every workload against each in turn within each
# round (Tether, Electric, Node, Redis, NATS, Tether, ...), and writes the medians and the
# ratios Tether/peer to bench/results/latest.md and a plot to bench/results/latest.png.
# A peer that cannot be had is skipped with a line saying why, never silently.
#
# Settings (environment): ROUNDS (3), DURATION (8s), WARMUP (2s), STREAMS (100,10000),
# CONNECTIONS (16,256), SUBSCRIBERS (1,100,1000), FANOUT_MESSAGES (200), MESSAGES (1000000),
# IDLE_SUBSCRIBERS (10000), IDLE_STREAMS (100), LIFECYCLE_WORKERS (32), PEERS
# (electric,node,redis,nats: the peers to measure beside Tether). TETHER_BIN uses that server
# binary instead of building one; BENCH uses that load generator command instead of building
# `tether-bench` (the crate crates/tether-bench, a binary of its own).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8s}"
WARMUP="${WARMUP:-2s}"
STREAMS="${STREAMS:-100,10000}"
CONNECTIONS="${CONNECTIONS:-16,256}"
SUBSCRIBERS="${SUBSCRIBERS:-1,100,1000}"
FANOUT_MESSAGES="${FANOUT_MESSAGES:-200}"
MESSAGES="${MESSAGES:-1000000}"
IDLE_SUBSCRIBERS="${IDLE_SUBSCRIBERS:-10000}"
IDLE_STREAMS="${IDLE_STREAMS:-100}"
LIFECYCLE_WORKERS="${LIFECYCLE_WORKERS:-32}"
PEERS="${PEERS:-electric,node,redis,nats}"
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/dist"
TETHER="${TETHER_BIN:-$RELEASE/tether}"
read -r -a BENCH <<<"${BENCH:-$RELEASE/tether-bench}"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# Each subscriber and connection is a file descriptor, in the bench and in the servers, which
# inherit this limit; so may each stream be (Electric's server keeps every stream's file open;
# the bench deletes the append streams after their runs, but the idle ones stay). Raise it as
# far as the kernel allows when we may, else to the hard limit.
ulimit -n "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)" 2>/dev/null ||
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MOST_STREAMS="$(tr ',' '\n' <<<"$STREAMS" | sort -n | tail -n 1)"
FILES_NEEDED=$((IDLE_SUBSCRIBERS + ROUNDS * (IDLE_STREAMS + 10) + 1000))
((FILES_NEEDED > MOST_STREAMS + 2000)) || FILES_NEEDED=$((MOST_STREAMS + 2000))
if [[ "$(ulimit -n)" != unlimited ]] && (($(ulimit -n) < FILES_NEEDED)); then
    say "warning: the open-file limit is $(ulimit -n); a server that keeps a file per stream may need $FILES_NEEDED"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tether-compare.XXXXXX")"
SERVER_PIDS=()
cleanup() {
    for pid in "${SERVER_PIDS[@]}"; do
        stop_server "$pid"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
STARTED_AT=$SECONDS

if [[ -n "${TETHER_BIN:-}" ]]; then
    say "using $TETHER as given by TETHER_BIN (not building)"
else
    say "building tether (profile dist: fat LTO)"
    cargo build --profile dist -p tether
fi
if [[ -z "${BENCH:-}" ]]; then
    say "building tether-bench (profile dist)"
    cargo build --profile dist -p tether-bench
fi

CONTEXT=(
    "load: appends of 256-byte messages to ${STREAMS} streams from ${CONNECTIONS} connections (every pair), ${DURATION} each after ${WARMUP} warm-up; ${SUBSCRIBERS} live subscribers on one stream x ${FANOUT_MESSAGES} appends; catch-up of ${MESSAGES} messages from the start; ${IDLE_SUBSCRIBERS} idle live subscribers over ${IDLE_STREAMS} streams; task lifecycle with ${LIFECYCLE_WORKERS} workers (submit, claim, 20 events in 4 batches, finish); bench client on the same machine"
)
LABELS=()
declare -A PID LOG ARGS

skip() {
    say "SKIPPING $1: $2"
    CONTEXT+=("$1: not measured, $2")
}

# serve LABEL CONTEXT BENCH_ARGS COMMAND...: starts the server COMMAND (see start_server) and,
# once it listens, adds it to the rounds with a context line (version, durability) and the
# bench arguments that reach it ('$PORT' in them is its port); else skips it.
serve() {
    local label="$1" line="$2" bench="$3"
    shift 3
    if ! start_server "$label" "$WORK/$label.log" "$@"; then
        skip "$label" "its server did not start: $(tail -n 3 "$WORK/$label.log" | tr '\n' ' ')"
        return 0
    fi
    LABELS+=("$label")
    PID[$label]="$STARTED_PID"
    LOG[$label]="$WORK/$label.log"
    ARGS[$label]="${bench//\$PORT/$STARTED_PORT}"
    CONTEXT+=("$label: $line")
    mkdir -p "$WORK/$label"
}

wanted() { [[ ",$PEERS," == *",$1,"* ]]; }

# installed COMMAND LABEL PACKAGE: whether COMMAND is on the PATH; if not, skips LABEL and
# names the Debian package to install.
installed() {
    command -v "$1" >/dev/null && return 0
    skip "$2" "$1 is not installed (Debian: apt-get install $3)"
    return 1
}

start_tether() {
    local commit
    commit="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit yet')"
    serve Tether "\`tether serve --auth off --max-concurrent 100000\` ($commit; the lifecycle workload's tasks all belong to one user); SQLite with synchronous=FULL: an append is acknowledged after its group commit's fsync" \
        "--url http://127.0.0.1:\$PORT --with-lifecycle --workers $LIFECYCLE_WORKERS" \
        "$TETHER" serve --listen '127.0.0.1:$PORT' --data-dir "$WORK/tether-data" --auth off \
        --max-concurrent 100000
}

start_electric() {
    local bin version
    bin="$(command -v durable-streams-server || true)"
    if [[ -z "$bin" && -x "$CARGO_BIN/durable-streams-server" ]]; then
        bin="$CARGO_BIN/durable-streams-server"
    fi
    if [[ -z "$bin" ]]; then
        say "durable-streams-server is missing: installing it with 'cargo install durable-streams'"
        if ! cargo install durable-streams; then
            skip Electric "'cargo install durable-streams' failed"
            return
        fi
        bin="$CARGO_BIN/durable-streams-server"
    fi
    version="$(cargo install --list 2>/dev/null | sed -n 's/^durable-streams \(v[^:]*\):$/\1/p')"
    # Installed elsewhere (cargo install --root DIR): DIR/.crates.toml names the version.
    [[ -n "$version" ]] || version="$(sed -n 's/^"durable-streams \([^ ]*\) .*/v\1/p' \
        "$(dirname "$bin")/../.crates.toml" 2>/dev/null || true)"
    serve Electric "\`durable-streams-server --durability wal\` ${version:-(version unknown)}: an append is acknowledged after its WAL group commit's fdatasync" \
        '--url http://127.0.0.1:$PORT' \
        "$bin" --host 127.0.0.1 --port '$PORT' --data-dir "$WORK/electric-data" --durability wal
}

start_node() {
    local dir="$ROOT/bench/peers/node" version
    installed node Node nodejs && installed npm Node npm || return 0
    if [[ ! -d "$dir/node_modules/@durable-streams/server" ]]; then
        say "installing the Node reference server: npm ci in bench/peers/node"
        if ! (cd "$dir" && npm ci --no-audit --no-fund); then
            skip Node "'npm ci' in bench/peers/node failed"
            return
        fi
    fi
    version="$(cd "$dir" && node -p 'require("@durable-streams/server/package.json").version' 2>/dev/null || echo unknown)"
    serve Node "\`@durable-streams/server\` $version (DurableStreamTestServer) on Node $(node --version), file-backed: an append is written to the stream's log file and fdatasync'ed (concurrent appends to one file share a sync) before LMDB metadata is committed and the append acknowledged" \
        '--url http://127.0.0.1:$PORT' \
        node "$dir/server.mjs" '$PORT' "$WORK/node-data"
}

start_redis() {
    local version
    installed redis-server Redis redis-server || return 0
    version="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
    mkdir -p "$WORK/redis-data"
    serve Redis "its own \`redis-server\` $version with --appendonly yes --appendfsync always --save '': a write is acknowledged after the append-only file's fsync (one per event-loop pass); streams by XADD, XREAD BLOCK and XRANGE" \
        '--system redis --url redis://127.0.0.1:$PORT' \
        redis-server --port '$PORT' --bind 127.0.0.1 --dir "$WORK/redis-data" \
        --appendonly yes --appendfsync always --save '' --maxclients $((IDLE_SUBSCRIBERS + 1000))
}

start_nats() {
    local version
    installed nats-server NATS nats-server || return 0
    version="$(nats-server --version | sed -n 's/.*: *\(v.*\)$/\1/p')"
    serve NATS "its own \`nats-server\` ${version:-(version unknown)} with JetStream file storage: a publish is acknowledged once written to the file store, which fsyncs in the background on a timer, not per acknowledgement (2.9 has no sync_interval option to change that)" \
        '--system nats --url nats://127.0.0.1:$PORT' \
        nats-server -a 127.0.0.1 -p '$PORT' -js -sd "$WORK/nats-data"
}

start_tether
wanted electric && start_electric
wanted node && start_node
wanted redis && start_redis
wanted nats && start_nats

if [[ ${#LABELS[@]} -eq 0 ]]; then
    say "no server could be measured"
    exit 1
fi

# Other work on the machine skews every figure; say how busy it was.
CONTEXT+=("load average when the rounds started: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)")
declare -A GONE
for round in $(seq "$ROUNDS"); do
    for label in "${LABELS[@]}"; do
        [[ -n "${GONE[$label]:-}" ]] && continue
        pid="${PID[$label]}"
        if ! kill -0 "$pid" 2>/dev/null; then
            say "round $round: $label's server has exited; skipping it. The end of its log:"
            tail -n 20 "${LOG[$label]}" >&2
            GONE[$label]="its server exited in round $round"
            continue
        fi
        say "round $round of $ROUNDS: $label"
        began=$SECONDS
        read -r -a args <<<"${ARGS[$label]}"
        json="$WORK/$label/round-$round.json"
        output="$WORK/$label/round-$round.out"
        rc=0
        # The catch-up stream is preloaded in the first round and read again in later ones.
        "${BENCH[@]}" "${args[@]}" --label "$label" --server-pid "$pid" --workload all \
            --streams "$STREAMS" --connections "$CONNECTIONS" --duration "$DURATION" \
            --warmup "$WARMUP" --subscribers "$SUBSCRIBERS" \
            --fanout-messages "$FANOUT_MESSAGES" --messages "$MESSAGES" \
            --catchup-stream bench-catchup --idle-subscribers "$IDLE_SUBSCRIBERS" \
            --idle-streams "$IDLE_STREAMS" --json "$json" 2>&1 | tee "$output" || rc=${PIPESTATUS[0]}
        if ((rc == 0)); then
            :
        elif [[ -f "$json" ]]; then
            say "round $round: $label had failures (listed above and in the report)"
        else
            # No report at all: the bench cannot measure this server (say, a build without
            # its driver). Later rounds would fail the same way.
            GONE[$label]="the bench could not measure it: $(tail -n 1 "$output")"
            say "SKIPPING $label from now on: ${GONE[$label]}"
        fi
        say "round $round: $label took $((SECONDS - began)) s"
    done
done

for label in "${LABELS[@]}"; do
    stop_server "${PID[$label]}"
done

MEASURED=()
for label in "${LABELS[@]}"; do
    if compgen -G "$WORK/$label/*.json" >/dev/null; then
        MEASURED+=("$label")
    fi
    if [[ -n "${GONE[$label]:-}" ]]; then
        CONTEXT+=("$label: dropped from the rounds, ${GONE[$label]}")
    fi
done
if [[ ${#MEASURED[@]} -eq 0 ]]; then
    say "no server could be measured"
    exit 1
fi
CONTEXT+=("the run took $(((SECONDS - STARTED_AT + 30) / 60)) minutes, building included")

mkdir -p "$ROOT/bench/results"
SUMMARY=()
for label in "${MEASURED[@]}"; do
    SUMMARY+=(--summarize "$label=$WORK/$label")
done
for line in "${CONTEXT[@]}"; do
    SUMMARY+=(--context "$line")
done
"${BENCH[@]}" "${SUMMARY[@]}" --out "$ROOT/bench/results/latest.md" \
    --plot "$ROOT/bench/results/latest.png" >/dev/null
# Keep the per-round reports beside the summary, to look into or summarise again.
rm -rf "$ROOT/bench/results/latest-json"
mkdir -p "$ROOT/bench/results/latest-json"
for label in "${MEASURED[@]}"; do
    mkdir -p "$ROOT/bench/results/latest-json/$label"
    cp "$WORK/$label/"*.json "$ROOT/bench/results/latest-json/$label/"
done
say "wrote bench/results/latest.md, bench/results/latest.png and the per-round JSON in bench/results/latest-json/ ($(((SECONDS - STARTED_AT) / 60)) min)"
cat "$ROOT/bench/results/latest.md"
