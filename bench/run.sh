#!/usr/bin/env bash
# bench/run.sh - measure gmail-relay (and optionally Postfix) with the shared harness.
#
#   bench/run.sh [--quick] [--runs N] [--postfix] [--only LIST]
#
# Builds the release binary, then runs ../shared/bench/run.sh (override with BENCH_HARNESS)
# against gmail-relay through the harness's generic adapter, and with --postfix against Postfix
# in the same invocation; prints the comparison table. Intake mode is the relay with
# delivery.hold = true (it queues durably and delivers nothing); relay mode forwards to the
# harness's fake Gmail (upstream.py: STARTTLS, AUTH PLAIN, its own CA) with
# upstream.max_connections = 16. Needs what the harness needs (it installs smtp-source from
# Debian's postfix package and python3-aiosmtpd if missing).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
harness=${BENCH_HARNESS:-$repo/../shared/bench}
[[ -x $harness/run.sh ]] || { echo "bench/run.sh: no harness at $harness (set BENCH_HARNESS)" >&2; exit 2; }

args=() postfix=0
while (($#)); do
  case $1 in
    --postfix) postfix=1; shift ;;
    --quick) args+=(--quick); shift ;;
    --runs|--only) args+=("$1" "$2"); shift 2 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

(cd "$repo" && cargo build --release --locked)
export GMAIL_RELAY_BIN=$repo/target/release/gmail-relay
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$here/results/$stamp
mkdir -p "$out"

export TARGET_LISTEN=127.0.0.1:2526
export TARGET_START_INTAKE="exec '$here/start-target.sh' intake"
export TARGET_START_RELAY="exec '$here/start-target.sh' relay"
export TARGET_VERSION="'$GMAIL_RELAY_BIN' --version"
export TARGET_QUEUE_COUNT='find "$TARGET_SPOOL/queue" -name "*.msg" 2>/dev/null | wc -l'
(cd "$harness" && ./run.sh "${args[@]}" --label gmail-relay --out "$out/gmail-relay" ./targets/command.sh)

reports=("$out/gmail-relay/results.jsonl")
if ((postfix)); then
  (cd "$harness" && ./run.sh "${args[@]}" --label postfix --out "$out/postfix" ./postfix.sh)
  reports+=("$out/postfix/results.jsonl")
fi
python3 "$harness/bench.py" report "${reports[@]}" --md "$out/table.md"
echo "bench/run.sh: results in ${out#"$repo"/}" >&2
