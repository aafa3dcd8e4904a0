#!/usr/bin/env bash
# Installs tansu (a Kafka-protocol broker, crates.io) for local runs and tests.
# Idempotent: does nothing when `tansu` is already on PATH or in ~/.cargo/bin.
# A fresh build takes ~8-10 minutes on 2 cores.
set -euo pipefail

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

if command -v tansu >/dev/null 2>&1; then
    echo "tansu already installed: $(command -v tansu)"
    exit 0
fi
if [ -x "$CARGO_BIN/tansu" ]; then
    echo "tansu already installed: $CARGO_BIN/tansu (add $CARGO_BIN to PATH)"
    exit 0
fi

# dynostore: memory:// and s3:// storage; libsql: sqlite:// storage (what start-broker.sh uses).
exec cargo install tansu --locked --features dynostore,libsql "$@"
