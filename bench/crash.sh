#!/usr/bin/env bash
# bench/crash.sh - the full crash-safety run: 2,000 messages from 16 clients, the relay killed
# with SIGKILL at 5 random moments and restarted on the same spool, the upstream sometimes
# down, then killed once more while the queue drains. Prints what was acknowledged, lost
# (must be 0) and duplicated (each with the kill that explains it). CI runs the same test
# bounded (300 messages, 3 + 1 kills) via `cargo test`.
#
#   bench/crash.sh [RUNS] [MESSAGES] [KILLS]      defaults: 3 2000 5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3} messages=${2:-2000} kills=${3:-5}
for ((i = 1; i <= runs; i++)); do
  echo "== run $i/$runs"
  GMAIL_RELAY_CRASH_MESSAGES=$messages GMAIL_RELAY_CRASH_KILLS=$kills \
    cargo test --release --locked --test crash -- --nocapture 2>&1 \
    | grep --line-buffered -E '^(crash:|  duplicate|test result)|panicked'
done
