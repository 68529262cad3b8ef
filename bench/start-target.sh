#!/usr/bin/env bash
# bench/start-target.sh MODE - writes a config for MODE (intake | relay) into $TARGET_STATE
# and runs the relay in the foreground (exec, so the pid is the relay's). Used by run.sh through
# the shared harness's targets/command.sh adapter, which exports TARGET_LISTEN, TARGET_STATE,
# TARGET_SPOOL and, for relay mode, UPSTREAM_HOST/PORT/USER/PASS/CA.
#
#   intake  accept and queue durably, deliver nothing (delivery.hold = true)
#   relay   forward to the harness's fake Gmail over STARTTLS + AUTH PLAIN
set -euo pipefail
mode=$1
bin=${GMAIL_RELAY_BIN:?set GMAIL_RELAY_BIN}
cfg=$TARGET_STATE/$mode.toml
{
  echo "[listen]"
  echo "addrs = [\"$TARGET_LISTEN\"]"
  echo "max_connections = 1024"
  echo "[queue]"
  echo "dir = \"$TARGET_SPOOL\""
  echo "[upstream]"
  if [[ $mode == relay ]]; then
    echo "host = \"$UPSTREAM_HOST\""
    echo "port = $UPSTREAM_PORT"
    echo "tls = \"starttls\""
    echo "username = \"$UPSTREAM_USER\""
    echo "ca_file = \"$UPSTREAM_CA\""
    echo "max_connections = ${RELAY_MAX_CONNECTIONS:-16}"
  else
    echo "username = \"bench@example.com\""
  fi
  echo "[delivery]"
  [[ $mode == intake ]] && echo "hold = true" || echo "hold = false"
  echo "[log]"
  echo "level = \"${RELAY_LOG_LEVEL:-info}\""
} >"$cfg"
export GMAIL_RELAY__UPSTREAM__PASSWORD=${UPSTREAM_PASS:-unused-in-intake-mode}
exec "$bin" serve --config "$cfg"
