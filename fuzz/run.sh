#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - fuzz the SMTP intake (command parsing, the session state machine,
# the DATA reader, header hygiene) with cargo-fuzz for SECONDS (default 60), starting from the
# committed corpus in fuzz/corpus/session. Crashes land in fuzz/artifacts/session/.
#
# cargo-fuzz wants a nightly compiler for its sanitizer flags; with only a stable toolchain,
# RUSTC_BOOTSTRAP=1 lets stable rustc accept them. Installs cargo-fuzz if missing.
#
# After a long run, shrink the corpus before committing it:
#   RUSTC_BOOTSTRAP=1 cargo fuzz cmin session
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz run session -- -max_total_time="$secs" -max_len=8192 -print_final_stats=1
