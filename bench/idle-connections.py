#!/usr/bin/env python3
"""bench/idle-connections.py - memory of N idle client connections to gmail-relay.

Starts the release binary (delivery held, spool in a temp dir) on 127.0.0.1:2527, opens N
connections that each read the greeting and send EHLO, and reports the relay's RSS and PSS
before and after, plus the cost per connection. Stdlib only.

  bench/idle-connections.py [--bin target/release/gmail-relay] [-n 1000] [--runs 3]
"""
import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def mem(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss / 1024, pss / 1024  # MiB


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def one_run(binary, n, port):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "relay.toml")
        with open(cfg, "w") as f:
            f.write(f"""[listen]
addrs = ["127.0.0.1:{port}"]
max_connections = {n + 100}
max_connections_per_client = {n + 100}
[queue]
dir = "{d}/spool"
[upstream]
username = "bench@example.com"
password = "unused"
[delivery]
hold = true
[log]
level = "warn"
""")
        proc = subprocess.Popen([binary, "serve", "--config", cfg], stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: raise_nofile(n + 200))
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            time.sleep(1)
            before = mem(proc.pid)
            socks = []
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.recv(512)  # greeting
                s.sendall(b"EHLO client.test\r\n")
                socks.append(s)
            for s in socks:
                s.recv(512)  # EHLO reply: every session is up and idle
            time.sleep(1)
            after = mem(proc.pid)
            for s in socks:
                s.close()
            return before, after
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "gmail-relay"))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=2527)
    a = ap.parse_args()
    raise_nofile(a.n + 200)
    results = [one_run(a.bin, a.n, a.port) for _ in range(a.runs)]
    for i, (b, c) in enumerate(results, 1):
        print(f"run {i}: idle RSS {b[0]:.1f} MiB (PSS {b[1]:.1f}); with {a.n} idle sessions RSS {c[0]:.1f} MiB (PSS {c[1]:.1f})")
    rss = statistics.median(c[0] for _, c in results)
    pss = statistics.median(c[1] for _, c in results)
    base = statistics.median(b[0] for b, _ in results)
    print(f"median: {a.n} idle sessions -> RSS {rss:.1f} MiB, PSS {pss:.1f} MiB; "
          f"{(rss - base) * 1024 / a.n:.1f} KiB per connection above the idle relay ({base:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
