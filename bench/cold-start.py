#!/usr/bin/env python3
"""bench/cold-start.py - the first message through a freshly started relay.

For each run: start the relay (--start-cmd, relay mode, forwarding to the running upstream.py
whose state dir is --upstream-dir), wait for its listener, send one 10 KB message and measure
from the client's final 250 to the message's arrival at the upstream; then stop the relay. The
relay has no upstream connection yet, so the time covers TCP, the greeting, EHLO, STARTTLS and
TLS, EHLO again, AUTH, and the message. With upstream.py's delay model (each reply D late, the
handshakes charged to the greeting and the STARTTLS reply) the time divided by D is the number
of round trips before the message is whole at the upstream.

Uses the shared harness's bench.py (Upstream, send_one, body_lines) from --harness.

  cold-start.py --harness DIR --upstream-dir DIR --listen 127.0.0.1:PORT --start-cmd CMD
                [--delay-ms 20] [--runs 3] [--json FILE] [--label NAME]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", required=True)
    ap.add_argument("--upstream-dir", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--start-cmd", required=True)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--label", default="gmail-relay")
    a = ap.parse_args()
    sys.path.insert(0, a.harness)
    import bench  # the shared harness

    host, port = bench.hostport(a.listen)
    up = bench.Upstream(a.upstream_dir)
    body = "\r\n".join(bench.body_lines(10240)) + "\r\n"
    times = []
    try:
        up.set_delay(a.delay_ms)
        for r in range(a.runs):
            relay = subprocess.Popen(a.start_cmd, shell=True, start_new_session=True)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        socket.create_connection((host, port), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            bench.die("cold-start: the relay did not listen within 30 s")
                        time.sleep(0.02)
                # Let the greeting-less probe above be forgotten; the relay is idle and cold.
                time.sleep(0.5)
                bid = "cold-" + uuid.uuid4().hex[:12]
                up.mark()
                t250 = bench.send_one(host, port, bid, body)
                if not up.wait(lambda L: any(x[3] == bid for x in L), 60):
                    bench.die("cold-start: the message did not arrive upstream within 60 s")
                t_arr = [x[0] for x in up.poll() if x[3] == bid][0]
                ms = (t_arr - t250) * 1000
                times.append(ms)
                bench.log(f"   cold start delay={a.delay_ms:g}ms run {r + 1}/{a.runs}: "
                          f"{ms:.1f} ms = {ms / a.delay_ms:.2f} round trips of {a.delay_ms:g} ms")
            finally:
                os.killpg(relay.pid, signal.SIGTERM)
                relay.wait(timeout=30)
    finally:
        up.set_delay(0)
    med = statistics.median(times)
    line = (f"| {a.label} | cold start: first message, final 250 → upstream arrival, "
            f"{a.delay_ms:g} ms per reply | {med:.1f} ms [{min(times):.1f}–{max(times):.1f}] "
            f"= {med / a.delay_ms:.1f} round trips before arrival, +1 for the final reply |")
    print(line)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"label": a.label, "scenario": "cold_start", "delay_ms": a.delay_ms,
                                "ms": times, "median_ms": med,
                                "round_trips_before_arrival": med / a.delay_ms}) + "\n")


if __name__ == "__main__":
    main()
