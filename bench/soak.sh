#!/usr/bin/env bash
# bench/soak.sh - the soak run: the release binary under ~20 messages/s for SECONDS (default
# 1800) while the fake upstream injects a random fault per ten transactions (drop mid-DATA, 451, 421,
# 421 greeting, stall). Prints RSS and open file descriptors every minute and a summary; fails
# on any lost message or on growth.
#
#   bench/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GMAIL_RELAY_SOAK_SECS=${1:-1800} \
  cargo test --release --locked --test soak -- --ignored --nocapture 2>&1 \
  | grep --line-buffered -E '^soak:|test result|panicked'
