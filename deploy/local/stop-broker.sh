#!/usr/bin/env bash
# Stops the broker started by start-broker.sh.
#
#   deploy/local/stop-broker.sh [DATA_DIR]
#
# DATA_DIR defaults to ./.state/broker. Sends SIGTERM to the pid in DATA_DIR/tansu.pid, waits up
# to 20 s, then SIGKILL. Data (DATA_DIR/tansu.db) is kept; delete DATA_DIR for a clean slate.
set -euo pipefail

DATA_DIR="${1:-./.state/broker}"
PID_FILE="$DATA_DIR/tansu.pid"

if [ ! -f "$PID_FILE" ]; then
    echo "no $PID_FILE: broker not running"
    exit 0
fi
PID="$(cat "$PID_FILE")"
if [ -z "$PID" ] || ! kill -0 "$PID" 2>/dev/null; then
    echo "broker (pid ${PID:-?}) not running; removing stale $PID_FILE"
    rm -f "$PID_FILE"
    exit 0
fi

kill -TERM "$PID"
for _ in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.2
done
if kill -0 "$PID" 2>/dev/null; then
    echo "broker (pid $PID) ignored SIGTERM for 20 s; sending SIGKILL" >&2
    kill -KILL "$PID" 2>/dev/null || true
fi
rm -f "$PID_FILE"
echo "broker (pid $PID) stopped"
