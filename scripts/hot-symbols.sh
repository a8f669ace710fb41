#!/usr/bin/env bash
# Regenerates crates/tether/hot-symbols.txt: the functions a serving Tether runs, which the
# release link places together at the front of .text (see crates/tether/build.rs and "Resident
# code" in docs/performance.md). The kernel maps code in 64 KB windows around each page a
# process touches, so scattered hot functions drag in megabytes of cold neighbours.
#
# Runs the release server under valgrind's callgrind through the benchmark's workloads (small
# sizes: only which functions run matters, not how fast) and writes every function of the
# binary that executed an instruction, mangled. Needs valgrind. Takes a minute once the
# release build is there. A stale list only costs memory: names it gives that no longer exist
# are skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
TETHER="$TARGET/release/tether"
OUT="$ROOT/crates/tether/hot-symbols.txt"
PORT="${PORT:-7899}"
URL="http://127.0.0.1:$PORT"

command -v valgrind >/dev/null || { echo "hot-symbols: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -p tether
WORK="$(mktemp -d)"
SERVER=""
trap '[[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT

valgrind --tool=callgrind --demangle=no --compress-strings=no \
    --callgrind-out-file="$WORK/callgrind.out" \
    "$TETHER" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --auth off \
    --long-poll-timeout 500ms >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 120); do grep -q 'listening' "$WORK/server.log" && break; sleep 1; done
grep -q 'listening' "$WORK/server.log" || { cat "$WORK/server.log" >&2; exit 1; }

bench() { "$TETHER" bench --url "$URL" "$@" >/dev/null; }
bench --workload appends --streams 20 --connections 4 --duration 5s --warmup 1s
bench --workload fanout --subscribers 10 --fanout-messages 20 --duration 5s --warmup 1s
bench --workload catchup --messages 20000
bench --workload idle --idle-subscribers 50 --idle-streams 5
bench --workload lifecycle --workers 2 --duration 5s
# The protocol's other paths: JSON streams, long-poll, HEAD, DELETE, errors, metrics.
curl -sf -o /dev/null "$URL/metrics"
curl -s -o /dev/null "$URL/v1/stream/missing"
curl -sf -o /dev/null -X PUT -H 'content-type: application/json' "$URL/v1/stream/hot-json"
curl -sf -o /dev/null -X POST -H 'content-type: application/json' -d '{"a":1}' "$URL/v1/stream/hot-json"
curl -sf -o /dev/null "$URL/v1/stream/hot-json?offset=-1"
curl -s -o /dev/null "$URL/v1/stream/hot-json?offset=now&live=long-poll"
curl -sf -o /dev/null -I "$URL/v1/stream/hot-json"
curl -sf -o /dev/null -X DELETE "$URL/v1/stream/hot-json"

kill -INT "$SERVER"
wait "$SERVER" || true

# Callgrind names each object once ("ob=") and then its functions ("fn="), each followed by
# cost lines "<line> <instructions>"; the line after "calls=" is a callee's cost, "'2" marks a
# recursive call's frame, and some code has no symbol to order by ("0x...", "(below main)").
# Keep the binary's named functions that ran, sorted by name so that a new list's diff shows
# what changed (the order within the hot region does not change what is resident).
awk -v bin="$TETHER" -v recursion="'[0-9]+$" '
    /^ob=/ { inbin = (substr($0, 4) == bin); next }
    /^fn=/ { fn = inbin ? substr($0, 4) : ""; sub(recursion, "", fn); next }
    /^calls=/ { call = 1; next }
    /^[0-9+-]/ { if (!call && fn != "" && fn !~ /^(0x|\()/) ran[fn] = 1; call = 0; next }
    END { for (f in ran) print f }
' "$WORK/callgrind.out" | LC_ALL=C sort >"$WORK/hot"
# An empty list would undo the layout.
[[ -s "$WORK/hot" ]] || { echo "hot-symbols: callgrind saw none of $TETHER's functions" >&2; exit 1; }
mv "$WORK/hot" "$OUT"
echo "hot-symbols: $(wc -l <"$OUT") functions written to $OUT"
