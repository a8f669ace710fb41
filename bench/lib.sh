# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts: start servers on free loopback ports, wait
# for them, stop them. Scripts that source this keep SERVER_PIDS and stop them on exit.

say() { printf '== %s\n' "$*" >&2; }

stop_server() {
    local pid="$1"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Picks a port below the kernel's ephemeral range: a port in that range may be held by one of
# the thousands of client connections a benchmark opens (or their TIME_WAIT), and then a server
# cannot bind it even though nothing listens there.
free_port() {
    local port low=32768
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    ((low > 11000)) || low=32768
    for _ in $(seq 200); do
        port=$((10000 + RANDOM % (low - 10000)))
        if ! port_open "$port"; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# start_server NAME LOG COMMAND...: starts it in the background and waits for its port.
# Sets STARTED_PID and STARTED_PORT ($PORT inside COMMAND is replaced by the chosen port).
start_server() {
    local name="$1" log="$2"
    shift 2
    STARTED_PORT="$(free_port)"
    local args=("${@//\$PORT/$STARTED_PORT}")
    "${args[@]}" >"$log" 2>&1 &
    STARTED_PID=$!
    SERVER_PIDS+=("$STARTED_PID")
    for _ in $(seq 300); do
        if port_open "$STARTED_PORT"; then
            say "$name listening on 127.0.0.1:$STARTED_PORT (pid $STARTED_PID)"
            return 0
        fi
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    say "$name did not start; the end of its log:"
    tail -n 20 "$log" >&2
    return 1
}
