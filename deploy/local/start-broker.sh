#!/usr/bin/env bash
# Starts a local tansu broker in the background with sqlite storage.
#
#   deploy/local/start-broker.sh [PORT] [DATA_DIR]
#
# PORT defaults to 9092, DATA_DIR to ./.state/broker. Listens on 127.0.0.1:PORT and advertises
# the same address. Data lives in DATA_DIR/tansu.db, the log in DATA_DIR/tansu.log, the pid in
# DATA_DIR/tansu.pid. Waits (up to $TANSU_START_TIMEOUT s, default 60) until the port accepts
# connections. Re-running while the broker is up does nothing. Stop with stop-broker.sh.
# Environment: TANSU (binary path), TANSU_CLUSTER_ID (default adstream), RUST_LOG (default warn).
set -euo pipefail

PORT="${1:-9092}"
DATA_DIR="${2:-./.state/broker}"
TIMEOUT="${TANSU_START_TIMEOUT:-60}"
CLUSTER_ID="${TANSU_CLUSTER_ID:-adstream}"

die() { echo "start-broker: $*" >&2; exit 1; }

case "$PORT" in ''|*[!0-9]*) die "PORT must be a number, got '$PORT'";; esac

TANSU_BIN="${TANSU:-}"
if [ -z "$TANSU_BIN" ]; then
    if command -v tansu >/dev/null 2>&1; then
        TANSU_BIN="$(command -v tansu)"
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
        TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    else
        die "tansu not found; run deploy/local/install-tansu.sh first"
    fi
fi

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
PID_FILE="$DATA_DIR/tansu.pid"
LOG_FILE="$DATA_DIR/tansu.log"

port_open() {
    # bash's /dev/tcp: succeeds once something accepts on the port.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

if [ -f "$PID_FILE" ]; then
    OLD_PID="$(cat "$PID_FILE")"
    if [ -n "$OLD_PID" ] && kill -0 "$OLD_PID" 2>/dev/null; then
        if port_open; then
            echo "tansu already running (pid $OLD_PID) on 127.0.0.1:$PORT, data in $DATA_DIR"
            exit 0
        fi
        die "pid $OLD_PID from $PID_FILE is alive but 127.0.0.1:$PORT is closed; run stop-broker.sh $DATA_DIR"
    fi
    rm -f "$PID_FILE"
fi

if port_open; then
    die "127.0.0.1:$PORT is already in use by another process"
fi

# The sqlite:// path is resolved against the broker's working directory (even sqlite:///abs/x.db
# becomes ./abs/x.db), so run it from DATA_DIR with a relative file name.
(
    cd "$DATA_DIR"
    RUST_LOG="${RUST_LOG:-warn}" exec nohup "$TANSU_BIN" broker \
        --cluster-id "$CLUSTER_ID" \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "sqlite://tansu.db" \
        </dev/null >>"$LOG_FILE" 2>&1
) &
PID=$!
echo "$PID" >"$PID_FILE"

deadline=$((SECONDS + TIMEOUT))
until port_open; do
    if ! kill -0 "$PID" 2>/dev/null; then
        rm -f "$PID_FILE"
        echo "start-broker: tansu exited before listening; last lines of $LOG_FILE:" >&2
        tail -n 20 "$LOG_FILE" >&2 || true
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start-broker: 127.0.0.1:$PORT not accepting connections after ${TIMEOUT}s; stopping pid $PID. Last lines of $LOG_FILE:" >&2
        tail -n 20 "$LOG_FILE" >&2 || true
        kill "$PID" 2>/dev/null || true
        rm -f "$PID_FILE"
        exit 1
    fi
    sleep 0.2
done

echo "tansu running (pid $PID) on 127.0.0.1:$PORT, data in $DATA_DIR/tansu.db, log $LOG_FILE"
