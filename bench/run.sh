#!/usr/bin/env bash
# bench/run.sh - measure gmail-relay (and optionally Postfix) with the shared harness.
#
#   bench/run.sh [--quick] [--runs N] [--postfix] [--only LIST] [--cold]
#                [--no-chunking | --also-no-chunking] [--api] [--cluster]
#
# Builds the release binary, then runs ../shared/bench/run.sh (override with BENCH_HARNESS)
# against gmail-relay through the harness's generic adapter, and with --postfix against Postfix
# in the same invocation; prints the comparison table. Intake mode is the relay with
# delivery.hold = true (it queues durably and delivers nothing); relay mode forwards to the
# harness's fake Gmail (upstream.py: STARTTLS, AUTH PLAIN) with upstream.max_connections = 16.
#
# This script starts upstream.py itself, with a certificate it makes first: upstream.py's own
# certificate is self-signed with CA:TRUE, which rustls (like any RFC 5280 verifier) refuses as
# a server certificate (CaUsedAsEndEntity). Ours is the same kind of self-signed P-256
# certificate for localhost/127.0.0.1 with CA:FALSE; Postfix, when measured, uses it too.
# Needs what the harness needs (smtp-source from Debian's postfix package, python3-aiosmtpd),
# installed if missing, and openssl.
#
# --no-chunking starts upstream.py without CHUNKING (the relay then pipelines MAIL/RCPT/DATA and
# sends the message after the 354: two round trips), labelled gmail-relay-nochunking;
# --also-no-chunking measures that too, after the rest, in the same invocation and table.
# --api adds the drain through the Gmail API transport (transport = "api") against
# bench/fake-gmail-api.py, whose answers wait the same 0 and 20 ms.
# --cluster adds the drain and latency with a send budget (max_per_day = 1,000,000) counted in a
# real redis-server on loopback ([cluster], one replica), and the same budget counted locally:
# what sharing the budget costs per message.
# --cold adds the cold-start row (bench/cold-start.py): the first message through a freshly
# started relay at 20 ms per reply, TCP + TLS + EHLO + AUTH + message, in round trips.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
harness=${BENCH_HARNESS:-$repo/../shared/bench}
[[ -x $harness/run.sh ]] || { echo "bench/run.sh: no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }

args=() postfix=0 upargs=() label=gmail-relay cold=0 runs=3 also_no_chunking=0 api=0 cluster=0
while (($#)); do
  case $1 in
    --postfix) postfix=1; shift ;;
    --no-chunking) upargs+=(--no-chunking); label=gmail-relay-nochunking; shift ;;
    --cold) cold=1; shift ;;
    --also-no-chunking) also_no_chunking=1; shift ;;
    --api) api=1; shift ;;
    --cluster) cluster=1; shift ;;
    --runs) args+=("$1" "$2"); runs=$2; shift 2 ;;
    --quick) args+=(--quick); shift ;;
    --only) args+=("$1" "$2"); shift 2 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if ((also_no_chunking)) && [[ $label == gmail-relay-nochunking ]]; then
  echo "bench/run.sh: --no-chunking and --also-no-chunking measure the same thing; give one" >&2
  exit 2
fi

(cd "$repo" && cargo build --release --locked)

find_up_python() {
  local py
  for py in $(type -ap python3 2>/dev/null) /usr/bin/python3; do
    "$py" -c 'import aiosmtpd' >/dev/null 2>&1 && { echo "$py"; return 0; }
  done
  return 1
}
uppy=$(find_up_python) || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-aiosmtpd >/dev/null 2>&1 || true
  uppy=$(find_up_python) || { echo "bench/run.sh: no python3 with aiosmtpd" >&2; exit 1; }
}
export GMAIL_RELAY_BIN=$repo/target/release/gmail-relay
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$here/results/$stamp
mkdir -p "$out"

# Starts upstream.py in a fresh state dir "$1" with the extra options that follow.
start_upstream() {
  local dir=$1; shift
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" >/dev/null 2>&1
  "$uppy" "$harness/upstream.py" --state-dir "$dir" --starttls-port 2587 --tls-port 2465 \
    --user bench --password bench-secret "$@" >"$dir/out.log" 2>&1 &
  uppid=$!
  for _ in $(seq 1 100); do [[ -s $dir/ready ]] && break; sleep 0.1; done
  [[ -s $dir/ready ]] || { echo "bench/run.sh: upstream.py did not start" >&2; cat "$dir/out.log" >&2; exit 1; }
}
stop_upstream() { kill "$uppid" 2>/dev/null || true; wait "$uppid" 2>/dev/null || true; }
trap stop_upstream EXIT

updir=$out/upstream
start_upstream "$updir" "${upargs[@]}"

export TARGET_LISTEN=127.0.0.1:2526
export TARGET_START_INTAKE="exec '$here/start-target.sh' intake"
export TARGET_START_RELAY="exec '$here/start-target.sh' relay"
export TARGET_VERSION="'$GMAIL_RELAY_BIN' --version"
export TARGET_QUEUE_COUNT='find "$TARGET_SPOOL/queue" -name "*.msg" 2>/dev/null | wc -l'
(cd "$harness" && ./run.sh "${args[@]}" --upstream-dir "$updir" --label "$label" --out "$out/$label" ./targets/command.sh)

reports=("$out/$label/results.jsonl")
if ((postfix)); then
  (cd "$harness" && ./run.sh "${args[@]}" --upstream-dir "$updir" --label postfix --out "$out/postfix" ./postfix.sh)
  reports+=("$out/postfix/results.jsonl")
fi
if ((cold)); then
  colddir=$out/cold
  mkdir -p "$colddir"
  start="rm -rf '$colddir/spool'; TARGET_STATE='$colddir' TARGET_SPOOL='$colddir/spool' \
    UPSTREAM_HOST=127.0.0.1 UPSTREAM_PORT=2587 UPSTREAM_USER=bench UPSTREAM_PASS=bench-secret \
    UPSTREAM_CA='$updir/cert.pem' exec '$here/start-target.sh' relay 2>'$colddir/relay.log'"
  python3 "$here/cold-start.py" --harness "$harness" --upstream-dir "$updir" \
    --listen "$TARGET_LISTEN" --start-cmd "$start" --runs "$runs" --label "$label" \
    --json "$out/cold.jsonl" >"$out/cold.md"
fi
if ((also_no_chunking)); then
  # The same relay against an upstream without CHUNKING: pipelined MAIL/RCPT/DATA.
  stop_upstream
  updir=$out/upstream-nochunking
  start_upstream "$updir" --no-chunking
  (cd "$harness" && ./run.sh "${args[@]}" --upstream-dir "$updir" --label gmail-relay-nochunking \
    --out "$out/gmail-relay-nochunking" ./targets/command.sh)
  reports+=("$out/gmail-relay-nochunking/results.jsonl")
fi
if ((api)); then
  # The Gmail API transport: the same drain against bench/fake-gmail-api.py (HTTP/1.1,
  # each answer after the delay), whose state dir follows upstream.py's contract.
  stop_upstream
  updir=$out/upstream-api
  mkdir -p "$updir"
  BENCH_HARNESS=$harness "$uppy" "$here/fake-gmail-api.py" --state-dir "$updir" --port 2443 --token-port 2444 \
    >"$updir/out.log" 2>&1 &
  uppid=$!
  for _ in $(seq 1 100); do [[ -s $updir/ready ]] && break; sleep 0.1; done
  [[ -s $updir/ready ]] || { echo "bench/run.sh: fake-gmail-api.py did not start" >&2; cat "$updir/out.log" >&2; exit 1; }
  (cd "$harness" && RELAY_API_URL=https://127.0.0.1:2443 RELAY_TOKEN_URL=http://127.0.0.1:2444/token ./run.sh --runs "$runs" --only drain \
    --upstream-dir "$updir" --label gmail-relay-api --out "$out/gmail-relay-api" ./targets/command.sh)
  reports+=("$out/gmail-relay-api/results.jsonl")
fi
if ((cluster)); then
  # The same drain and latency with a budget: counted locally, then in Redis (against a fresh
  # upstream.py, whatever ran before).
  stop_upstream
  updir=$out/upstream-cluster
  start_upstream "$updir" "${upargs[@]}"
  command -v redis-server >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
  redis_port=2637
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$out" \
    >"$out/redis.log" 2>&1 &
  redispid=$!
  trap 'stop_upstream; kill "$redispid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 \
    || { echo "bench/run.sh: redis-server did not start:" >&2; cat "$out/redis.log" >&2; exit 1; }
  (cd "$harness" && RELAY_MAX_PER_DAY=1000000 ./run.sh --runs "$runs" --only latency,drain \
    --upstream-dir "$updir" --label gmail-relay-budget --out "$out/gmail-relay-budget" ./targets/command.sh)
  (cd "$harness" && RELAY_MAX_PER_DAY=1000000 RELAY_REDIS_URL=redis://127.0.0.1:$redis_port/0 \
    ./run.sh --runs "$runs" --only latency,drain \
    --upstream-dir "$updir" --label gmail-relay-cluster --out "$out/gmail-relay-cluster" ./targets/command.sh)
  reports+=("$out/gmail-relay-budget/results.jsonl" "$out/gmail-relay-cluster/results.jsonl")
fi
python3 "$harness/bench.py" report "${reports[@]}" --md "$out/table.md"
[[ -f $out/cold.md ]] && cat "$out/cold.md" | tee -a "$out/table.md"
echo "bench/run.sh: results in ${out#"$repo"/}" >&2
