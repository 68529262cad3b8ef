#!/usr/bin/env bash
# bench/start-target.sh MODE - writes a config for MODE (intake | relay) into $TARGET_STATE
# and runs the relay in the foreground (exec, so the pid is the relay's). Used by run.sh through
# the shared harness's targets/command.sh adapter, which exports TARGET_LISTEN, TARGET_STATE,
# TARGET_SPOOL and, for relay mode, UPSTREAM_HOST/PORT/USER/PASS/CA.
#
#   intake  accept and queue durably, deliver nothing (delivery.hold = true)
#   relay   forward to the harness's fake Gmail over STARTTLS + AUTH PLAIN; with RELAY_API_URL,
#           upload to bench/fake-gmail-api.py at that URL instead (transport = "api", XOAUTH2)
#
# RELAY_MAX_PER_DAY sets delivery.max_per_day; RELAY_REDIS_URL adds [cluster] with that Redis.
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
  if [[ $mode == relay && -n ${RELAY_API_URL:-} ]]; then
    # The Gmail API transport, against bench/fake-gmail-api.py (its /token included).
    echo "transport = \"api\""
    echo "api_url = \"$RELAY_API_URL\""
    echo "ca_file = \"$UPSTREAM_CA\""
    echo "username = \"bench@example.com\""
    echo "auth = \"xoauth2\""
    echo "max_connections = ${RELAY_MAX_CONNECTIONS:-16}"
    echo "[upstream.oauth2]"
    echo "client_id = \"bench\""
    echo "client_secret = \"bench\""
    echo "refresh_token = \"1//bench\""
    echo "token_url = \"${RELAY_TOKEN_URL:-$RELAY_API_URL/token}\""
  elif [[ $mode == relay ]]; then
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
  [[ -n ${RELAY_MAX_PER_DAY:-} ]] && echo "max_per_day = $RELAY_MAX_PER_DAY"
  if [[ -n ${RELAY_REDIS_URL:-} ]]; then
    # One replica sharing its budget through Redis: every attempt admitted and settled there.
    echo "[cluster]"
    echo "redis_url = \"$RELAY_REDIS_URL\""
    echo "replicas = 1"
  fi
  echo "[log]"
  echo "level = \"${RELAY_LOG_LEVEL:-info}\""
} >"$cfg"
[[ -n ${RELAY_API_URL:-} && $mode == relay ]] \
  || export GMAIL_RELAY__UPSTREAM__PASSWORD=${UPSTREAM_PASS:-unused-in-intake-mode}
exec "$bin" serve --config "$cfg"
