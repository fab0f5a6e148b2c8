#!/usr/bin/env python3
"""A partnership of N organisations on this machine, built through invites by
Deploy/local-network.sh, measured as a partnership would feel it:

- joined: from an empty folder until every node holds the same digest and lists all N nodes;
- propagation: a status change written on one node (alternately the hub, jenv, and a spoke that
  owns the activity: comensha or politie) until every other node has stored it, seen through
  each node's event stream (GET /v1/events on its socket); p50 and p99 over the changes of the
  time until the last of the N-1 nodes has it;
- RSS and threads per idle node, from /proc (the largest node is quoted);
- anchor: the same run's local write on the writing node (PATCH over its socket, answered once
  the commit is durable), so a slow machine shows as a slow anchor.

Usage: Benchmarks/network/network_bench.py [--orgs 50] [--mesh] [--changes 40] [--pause 1.0] [--bin DIR]
The last line:
network-50: joined in <J> s, propagation to all 49 p50 <A> ms p99 <B> ms, RSS per node <R> MB, threads per node <T>
"""
import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STATUSES = ["completed", "ongoing", "on-track", "delayed", "not-started", "in-consultation", "not-applicable"]


def call(sock_path, method, path, body=None, timeout=30):
    """One HTTP/1.1 request over a Unix socket; (status, JSON)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    raw = b"".join(chunks)
    header, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        payload = dechunk(payload)
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, None


def dechunk(payload):
    out, rest = b"", payload
    while rest:
        size_text, _, rest = rest.partition(b"\r\n")
        size = int(size_text.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


class EventWatcher(threading.Thread):
    """Follows one node's event stream; notes when each (record, status) first arrives."""

    def __init__(self, name, sock_path):
        super().__init__(daemon=True)
        self.name_ = name
        self.sock_path = sock_path
        self.seen = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def run(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock_path)
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        buffer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return
            now = time.monotonic()
            self.ready.set()
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.startswith(b"data:"):
                    continue
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                for change in event.get("changes", []):
                    if change.get("field") == "status":
                        key = (change.get("record"), change.get("value"))
                        with self.lock:
                            self.seen.setdefault(key, now)

    def arrival(self, key):
        with self.lock:
            return self.seen.get(key)


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def private_mb(pid):
    """Private (not shared) resident memory: RSS less the binary's and libraries' pages that every
    node on the machine shares."""
    kb = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb += int(line.split()[1])
    return kb / 1024


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--mesh", action="store_true", help="every node dials every other (default: the others dial the hub only)")
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between one change reaching every node and the next change")
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"))
    parser.add_argument("--keep", action="store_true", help="leave the network's folder")
    args = parser.parse_args()
    if not os.access(os.path.join(args.bin, "progsyncd"), os.X_OK):
        sys.exit(f"no progsyncd in {args.bin}; build it: swift build -c release --product progsyncd && swift build -c release --product progsync")
    net = tempfile.mkdtemp(prefix="progsync-network-")
    env = dict(os.environ, PROGSYNC_NET=net, PROGSYNC_BIN=args.bin, PROGSYNC_NET_BASE_PORT=str(random.randint(20000, 28000)))
    env = {k: v for k, v in env.items() if not k.startswith("PROGSYNC_") or k in ("PROGSYNC_NET", "PROGSYNC_BIN", "PROGSYNC_NET_BASE_PORT")}
    script = os.path.join(ROOT, "Deploy", "local-network.sh")
    topology = "full mesh" if args.mesh else "hub (the others dial jenv only)"
    print(f"network: {args.orgs} organisations, {topology}, in {net}", flush=True)
    try:
        began = time.monotonic()
        start = subprocess.run(["bash", script, "start", "--orgs", str(args.orgs)] + (["--mesh"] if args.mesh else []),
                               env=env, capture_output=True, text=True)
        if start.returncode != 0:
            sys.exit(f"local-network.sh start failed:\n{start.stdout}\n{start.stderr}")
        orgs = open(os.path.join(net, "orgs")).read().split()
        sockets = {org: os.path.join(net, org, "progsync.sock") for org in orgs}
        print(f"started {len(orgs)} daemons through invites in {time.monotonic() - began:.1f} s; waiting for agreement", flush=True)
        deadline = time.monotonic() + 600
        while True:
            digests, complete = set(), True
            for org in orgs:
                _, status = call(sockets[org], "GET", "/v1/status")
                digests.add(status.get("digest") if status else None)
                if status and status.get("records", {}).get("total", 0) < 100:
                    complete = False
            if len(digests) == 1 and complete:
                _, partners = call(sockets[orgs[-1]], "GET", "/v1/partners")
                active = sum(1 for o in partners["orgs"] for n in o["nodes"] if n["state"] == "active")
                if active == len(orgs):
                    break
            if time.monotonic() > deadline:
                sys.exit(f"no agreement within 600 s: {len(digests)} digests")
            time.sleep(0.2)
        joined = time.monotonic() - began
        print(f"joined: every node holds digest {digests.pop()[:16]}… and lists {len(orgs)} active nodes after {joined:.1f} s", flush=True)

        watchers = {org: EventWatcher(org, path) for org, path in sockets.items()}
        for w in watchers.values():
            w.start()
        time.sleep(1.0)
        _, listing = call(sockets["jenv"], "GET", "/v1/records?kind=activity&limit=1000")
        owned = {}
        for record in listing["records"]:
            owned.setdefault(record["fields"].get("owner"), []).append(record["id"])
        writers = [("jenv", owned["jenv"])] + [(org, owned[org]) for org in ("comensha", "politie") if org in orgs and org in owned]
        spreads, anchors, missing = [], [], 0
        for i in range(args.changes):
            writer, records = writers[i % 2] if i % 2 == 0 or len(writers) == 1 else writers[1 + (i // 2) % (len(writers) - 1)]
            record = records[i % len(records)]
            value = STATUSES[i % len(STATUSES)]
            _, current = call(sockets[writer], "GET", f"/v1/records/{record}")
            if current["fields"].get("status") == value:
                value = STATUSES[(i + 1) % len(STATUSES)]
            key = (record, value)
            t0 = time.monotonic()
            status, answer = call(sockets[writer], "PATCH", f"/v1/records/{record}", {"status": value})
            anchors.append((time.monotonic() - t0) * 1000)
            if status != 200:
                sys.exit(f"write on {writer} refused: {status} {answer}")
            others = [w for org, w in watchers.items() if org != writer]
            until = time.monotonic() + 10
            while time.monotonic() < until and any(w.arrival(key) is None for w in others):
                time.sleep(0.002)
            arrivals = [w.arrival(key) for w in others]
            if any(a is None for a in arrivals):
                missing += 1
                spreads.append(10_000.0)
            else:
                spreads.append((max(arrivals) - t0) * 1000)
            # One change at a time: the next waits until the network is quiet again.
            time.sleep(args.pause)
        time.sleep(2)
        rss, threads = [], []
        for org in orgs:
            r, t = proc_status(int(open(os.path.join(net, org, "pid")).read()))
            rss.append(r)
            threads.append(t)
        hub_pid = int(open(os.path.join(net, "jenv", "pid")).read())
        hub_rss, hub_threads = proc_status(hub_pid)
        private = [private_mb(int(open(os.path.join(net, org, "pid")).read())) for org in orgs]
        p50, p99 = statistics.median(spreads), percentile(spreads, 99)
        print(f"propagation: {len(spreads)} changes (alternately on jenv and on a spoke), time until all {len(orgs) - 1} others stored it: "
              f"p50 {p50:.0f} ms, p90 {percentile(spreads, 90):.0f} ms, p99 {p99:.0f} ms, max {max(spreads):.0f} ms"
              + (f"; {missing} not everywhere within 10 s" if missing else ""))
        print(f"anchor: the local write itself (PATCH on the writer's socket, durable) p50 {statistics.median(anchors):.1f} ms; "
              f"ratio p50 propagation / local write {p50 / statistics.median(anchors):.1f}")
        print(f"per node: RSS median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB (hub {hub_rss:.1f} MB); "
              f"private median {statistics.median(private):.1f} MB (hub {private_mb(hub_pid):.1f} MB); "
              f"threads median {statistics.median(threads):.0f}, max {max(threads)} (hub {hub_threads})")
        print(f"network-{len(orgs)}: joined in {joined:.1f} s, propagation to all {len(orgs) - 1} p50 {p50:.0f} ms p99 {p99:.0f} ms, "
              f"RSS per node {max(rss):.0f} MB, threads per node {max(threads)}")
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True)
        if not args.keep:
            shutil.rmtree(net, ignore_errors=True)


if __name__ == "__main__":
    main()
