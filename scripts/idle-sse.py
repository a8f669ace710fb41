#!/usr/bin/env python3
"""Memory per idle live SSE subscriber of a Durable Streams server.

Creates STREAMS streams, measures the server's RSS, opens SUBS `live=sse` subscribers spread
evenly over them (`offset=now`), waits until each has its response headers, measures RSS again,
then appends one marker message to every stream and counts the subscribers that received it
(so a subscriber that is connected but not live is not counted as one). Prints KB per
subscriber. Only the standard library: raw HTTP/1.1 over asyncio.

    scripts/idle-sse.py --url http://127.0.0.1:4437 --pid PID [--subs 10000] [--streams 100]

Raise `ulimit -n` first (the client needs one fd per subscriber, and so does the server).
"""

import argparse
import asyncio
import os
import subprocess
import time
import urllib.parse
import urllib.request


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def request(url, method, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


class Sub:
    def __init__(self):
        self.connected = asyncio.Event()
        self.status = None
        self.got_marker = asyncio.Event()
        self.failed = None


async def subscribe(host, port, path, sub, marker, opened):
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        sub.status = int(head.split(b" ", 2)[1])
        opened[0] += 1
        sub.connected.set()
        # Look for the marker in whatever arrives (chunked framing around it does not
        # matter; the marker is short and sent in one data line).
        buf = b""
        while True:
            data = await reader.read(65536)
            if not data:
                sub.failed = sub.failed or "closed"
                return
            buf = (buf + data)[-4096:]
            if marker in buf:
                sub.got_marker.set()
    except Exception as e:  # noqa: BLE001 - any failure just counts as not live
        sub.failed = repr(e)
        sub.connected.set()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--subs", type=int, default=10000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--prefix", default="/v1/stream/")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    ap.add_argument("--batch", type=int, default=500, help="connections opened at once")
    ap.add_argument(
        "--hook", help="shell command run at each measurement, with $PID and $STAGE set"
    )
    args = ap.parse_args()

    u = urllib.parse.urlparse(args.url)
    run = str(int(time.time() * 1000))
    names = [f"idle-{run}-{i}" for i in range(args.streams)]
    for n in names:
        request(f"{args.url}{args.prefix}{n}", "PUT", b"", {"Content-Type": "text/plain"})
    time.sleep(1.0)

    def hook(stage):
        if args.hook:
            env = dict(os.environ, PID=str(args.pid), STAGE=stage)
            subprocess.run(args.hook, shell=True, env=env, check=False)

    hook("before")
    base = rss_kb(args.pid)
    print(f"rss before subscribers: {base} KB")

    marker = f"marker-{run}".encode()
    subs = [Sub() for _ in range(args.subs)]
    opened = [0]
    tasks = []
    t0 = time.time()
    for i, sub in enumerate(subs):
        path = f"{args.prefix}{names[i % args.streams]}?offset=now&live=sse"
        tasks.append(asyncio.create_task(subscribe(u.hostname, u.port, path, sub, marker, opened)))
        if (i + 1) % args.batch == 0:
            await asyncio.gather(*(s.connected.wait() for s in subs[i + 1 - args.batch : i + 1]))
    await asyncio.gather(*(s.connected.wait() for s in subs))
    ok = sum(1 for s in subs if s.status == 200 and not s.failed)
    print(f"connected with 200: {ok}/{args.subs} in {time.time() - t0:.1f}s")
    failures = {}
    for s in subs:
        if s.failed or s.status != 200:
            k = s.failed or f"status {s.status}"
            failures[k] = failures.get(k, 0) + 1
    if failures:
        print(f"failures: {failures}")
    await asyncio.sleep(args.settle)
    hook("connected")
    connected = rss_kb(args.pid)
    per = (connected - base) / max(ok, 1)
    print(f"rss with subscribers: {connected} KB  (+{connected - base} KB, {per:.2f} KB/sub)")

    loop = asyncio.get_running_loop()
    for n in names:
        await loop.run_in_executor(
            None,
            request,
            f"{args.url}{args.prefix}{n}",
            "POST",
            marker,
            {"Content-Type": "text/plain"},
        )
    deadline = time.time() + 30
    while time.time() < deadline:
        live = sum(1 for s in subs if s.got_marker.is_set())
        if live == args.subs:
            break
        await asyncio.sleep(0.5)
    live = sum(1 for s in subs if s.got_marker.is_set())
    await asyncio.sleep(1.0)
    hook("delivered")
    after = rss_kb(args.pid)
    print(f"received the appended marker: {live}/{args.subs}")
    print(
        f"rss after delivery: {after} KB  (+{after - base} KB, "
        f"{(after - base) / max(live, 1):.2f} KB per live sub)"
    )
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
