#!/usr/bin/env python3
"""bench/fake-gmail-api.py - a fake Gmail API (and token endpoint) for the benchmark.

Plays gmail.googleapis.com and oauth2.googleapis.com for a relay with transport = "api":
HTTPS (HTTP/1.1 keep-alive; the Python standard library has no HTTP/2), a thread per
connection, and the shared harness's upstream state-dir contract, so `bench.py drain
--upstream-dir DIR` measures it exactly as it measures upstream.py:

  upstream.pid, ready        written at start
  arrivals.log               "<monotonic_s> <seq> <bytes> <x-bench-id|-> <conn_no> <unix_s>" per
                             upload, written when the upload has been read (before the answer)
  control.json + SIGHUP      {"delay_ms": D}: every answer waits D ms (the round trip to Google)
  stats.json on SIGUSR1      connections, messages, bytes, cpu_s, delay_ms

Endpoints: POST /token (any refresh-token grant gets a token; also on plain HTTP at
--token-port, since the relay trusts ca_file for the API but only the web PKI for Google's
token endpoint, where plain http is allowed on loopback), POST
/upload/gmail/v1/users/me/messages/send?uploadType=media (200 {"id": ...}), GET
/gmail/v1/users/me/profile. The certificate is upstream.py's (a private CA in cert.pem and a
leaf for localhost/127.0.0.1), made by its ensure_cert in the same state dir.

  fake-gmail-api.py --state-dir DIR [--port 2443] [--token-port 2444] [--delay-ms 0]
"""
import argparse
import json
import os
import resource
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, d, delay_ms):
        self.dir = d
        self.delay = delay_ms / 1000.0
        self.lock = threading.Lock()
        self.conns = 0
        self.seq = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.arrivals = open(os.path.join(d, "arrivals.log"), "a", buffering=1 << 16)

    def write_stats(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        st = {"connections": self.conns, "messages": self.seq, "bytes": self.bytes,
              "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
              "uptime_s": round(time.monotonic() - self.started, 3),
              "delay_ms": round(self.delay * 1000, 3)}
        tmp = os.path.join(self.dir, "stats.json.tmp")
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, os.path.join(self.dir, "stats.json"))

    def reload(self):
        with open(os.path.join(self.dir, "control.json")) as f:
            self.delay = float(json.load(f).get("delay_ms", 0)) / 1000.0


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # The status line and headers go in one write and the body in another: without
        # TCP_NODELAY the body waits for the client's delayed ACK (40 ms on Linux).
        disable_nagle_algorithm = True

        def setup(self):
            super().setup()
            with state.lock:
                state.conns += 1
                self.conn_no = state.conns

        def log_message(self, *a):
            pass

        def answer(self, code, obj):
            body = json.dumps(obj).encode()
            if state.delay:
                time.sleep(state.delay)
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def body(self):
            n = int(self.headers.get("Content-Length", "0"))
            return self.rfile.read(n) if n else b""

        def do_POST(self):
            data = self.body()
            if self.path == "/token":
                return self.answer(200, {"access_token": "ya29.bench", "expires_in": 3599,
                                         "scope": "https://mail.google.com/",
                                         "token_type": "Bearer"})
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self.answer(401, {"error": {"code": 401, "message": "no token"}})
            if self.path.startswith("/upload/gmail/v1/users/me/messages/send?uploadType=media"):
                now = time.monotonic()
                bid = "-"
                i = data.find(b"X-Bench-Id:", 0, 8192)
                if i >= 0:
                    j = data.find(b"\n", i)
                    bid = data[i + 11:j if j > 0 else None].strip().decode("ascii", "replace") or "-"
                with state.lock:
                    state.seq += 1
                    state.bytes += len(data)
                    seq = state.seq
                    state.arrivals.write(f"{now:.6f} {seq} {len(data)} {bid} {self.conn_no} "
                                         f"{time.time():.3f}\n")
                    state.arrivals.flush()
                return self.answer(200, {"id": f"bench{seq:08x}", "threadId": f"bench{seq:08x}",
                                         "labelIds": ["SENT"]})
            self.answer(404, {"error": {"code": 404, "message": "Not Found"}})

        def do_GET(self):
            if self.path == "/gmail/v1/users/me/profile":
                return self.answer(200, {"emailAddress": "bench@example.com"})
            self.answer(404, {"error": {"code": 404, "message": "Not Found"}})

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--port", type=int, default=2443)
    ap.add_argument("--token-port", type=int, default=2444)
    ap.add_argument("--delay-ms", type=float, default=0)
    a = ap.parse_args()
    sys.path.insert(0, os.environ.get("BENCH_HARNESS", os.path.join(os.path.dirname(__file__),
                                                                     "../../shared/bench")))
    import upstream  # the harness's upstream.py, for its certificates

    os.makedirs(a.state_dir, exist_ok=True)
    ca, leaf, key = upstream.ensure_cert(a.state_dir)
    with open(os.path.join(a.state_dir, "control.json"), "w") as f:
        json.dump({"delay_ms": a.delay_ms}, f)
    state = State(a.state_dir, a.delay_ms)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(leaf, key)
    ctx.set_alpn_protocols(["http/1.1"])
    server = ThreadingHTTPServer(("127.0.0.1", a.port), handler(state))
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    tokens = ThreadingHTTPServer(("127.0.0.1", a.token_port), handler(state))
    tokens.daemon_threads = True
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    signal.signal(signal.SIGHUP, lambda *_: state.reload())
    signal.signal(signal.SIGUSR1, lambda *_: state.write_stats())
    signal.signal(signal.SIGTERM, lambda *_: (state.write_stats(), os._exit(0)))
    with open(os.path.join(a.state_dir, "upstream.pid"), "w") as f:
        f.write(str(os.getpid()))
    ready = f"READY pid={os.getpid()} state_dir={a.state_dir} ca={ca} api=https://127.0.0.1:{a.port}"
    with open(os.path.join(a.state_dir, "ready"), "w") as f:
        f.write(ready + "\n")
    print(ready, flush=True)
    state.write_stats()
    server.serve_forever()


if __name__ == "__main__":
    main()
