#!/usr/bin/env bash
# bench/replicas.sh - two gmail-relay processes sharing one account through a real Redis, as an
# operator would run them: separate spools, one [cluster], the harness's fake Gmail
# (../shared/bench/upstream.py) as the upstream. Prints what reached the upstream.
#
#   GMAIL_RELAY_BIN=target/release/gmail-relay bench/replicas.sh [PER_DAY] [PER_REPLICA]
#
# 1. both replicas get PER_REPLICA messages each (default 15) with max_per_day = PER_DAY (10):
#    exactly PER_DAY arrive, the rest wait in the two spools;
# 2. replica a is killed (SIGKILL) and started again: nothing more arrives;
# 3. Redis is stopped: both still accept (250) and each sends at most its share of what was
#    left; Redis is started again, empty: the replicas add their sends back.
# Needs redis-server, python3 with aiosmtpd (python3-aiosmtpd) and openssl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${GMAIL_RELAY_BIN:?set GMAIL_RELAY_BIN}")
upstream=${UPSTREAM_PY:-$here/../../shared/bench/upstream.py}
per_day=${1:-10}
per_replica=${2:-15}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; if [[ -n ${KEEP:-} ]]; then echo "kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >/dev/null &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start" >&2; exit 1
}
start_redis

# A python3 that has aiosmtpd (Debian's, when pyenv's comes first on PATH).
up_python=
for py in $(type -ap python3) /usr/bin/python3; do
  if "$py" -c 'import aiosmtpd' 2>/dev/null; then up_python=$py; break; fi
done
[[ -n $up_python ]] || { echo "needs aiosmtpd: apt-get install python3-aiosmtpd" >&2; exit 1; }
up_dir=$work/upstream
mkdir -p "$up_dir"
sp=$(free_port); tp=$(free_port)
"$up_python" "$upstream" --state-dir "$up_dir" --starttls-port "$sp" --tls-port "$tp" \
  --user bench --password bench-secret >"$work/upstream.out" 2>&1 &
pids+=($!)
for _ in $(seq 400); do [[ -s $up_dir/ready ]] && break; sleep 0.05; done
[[ -s $up_dir/ready ]] || { echo "upstream.py did not start:" >&2; cat "$work/upstream.out" >&2; exit 1; }
arrived() { if [[ -f $up_dir/arrivals.log ]]; then wc -l <"$up_dir/arrivals.log"; else echo 0; fi; }

declare -A port relay_pid
start_relay() {
  local name=$1
  "$bin" serve --config "$work/$name.toml" >>"$work/$name.log" 2>&1 &
  relay_pid[$name]=$!
  pids+=("${relay_pid[$name]}")
  for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',${port[$name]}),1)" \
      2>/dev/null && return
    sleep 0.05
  done
  echo "replica $name did not start; its log:" >&2; cat "$work/$name.log" >&2; exit 1
}
for name in a b; do
  port[$name]=$(free_port)
  mkdir -p "$work/$name-spool"
  cat >"$work/$name.toml" <<TOML
[listen]
addrs = ["127.0.0.1:${port[$name]}"]
[queue]
dir = "$work/$name-spool"
[upstream]
host = "localhost"
port = $sp
tls = "starttls"
ca_file = "$up_dir/cert.pem"
username = "bench"
password = "bench-secret"
[delivery]
max_per_day = $per_day
[cluster]
redis_url = "redis://127.0.0.1:$redis_port/0"
replicas = 2
replica = "$name"
TOML
  start_relay "$name"
done

# Submits N messages to replica NAME with Python's smtplib; prints how many got a 250.
submit() {
  python3 - "$1" "$2" "$3" <<'PY'
import smtplib, sys
port, n, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ok = 0
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    for i in range(n):
        msg = f"From: app@example.com\r\nTo: r{i}@x.test\r\nSubject: {tag} {i}\r\n\r\nhello\r\n"
        try:
            s.sendmail("app@example.com", [f"{tag}{i}@x.test"], msg)
            ok += 1
        except smtplib.SMTPException as e:
            print(f"refused: {e}", file=sys.stderr)
print(ok)
PY
}
queued() { "$bin" queue list --config "$work/$1.toml" 2>/dev/null | grep -cE '^[0-9a-f]{16} ' || true; }

echo "== phase 1: $per_replica messages to each replica, max_per_day = $per_day for the pair"
echo "accepted: a $(submit "${port[a]}" "$per_replica" a), b $(submit "${port[b]}" "$per_replica" b)"
sleep 4
echo "reached the upstream: $(arrived)  (waiting: a $(queued a), b $(queued b))"

echo "== phase 2: replica a killed (SIGKILL) and started again"
kill -9 "${relay_pid[a]}"; wait "${relay_pid[a]}" 2>/dev/null || true
start_relay a
sleep 4
echo "reached the upstream: $(arrived)  (waiting: a $(queued a), b $(queued b))"

echo "== phase 3: Redis stopped; 3 more messages to each replica"
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
echo "accepted without Redis: a $(submit "${port[a]}" 3 late-a), b $(submit "${port[b]}" 3 late-b)"
sleep 4
echo "reached the upstream: $(arrived)  (waiting: a $(queued a), b $(queued b))"
echo "== phase 4: Redis started again, empty (no persistence)"
start_redis
sleep 8
# The day's count in Redis: each member's name ends in its recipient count.
shared=$(redis-cli -p "$redis_port" --scan --pattern 'gmail-relay:budget:*' \
  | xargs -r -I{} redis-cli -p "$redis_port" zrange {} 0 -1 \
  | awk -F: '{n += $NF} END {print n + 0}')
echo "reached the upstream: $(arrived)  (waiting: a $(queued a), b $(queued b); the day's count in Redis: $shared)"
grep -h "Redis" "$work/a.log" "$work/b.log" | sed -E 's/^.*(WARN|INFO) /\1 /' | cut -c1-160 | sort | uniq -c
