#!/usr/bin/env bash
# The README's first command: installs what the build needs (libclang for RocksDB's bindings,
# when missing), then runs `adstream demo` on its embedded Kafka cluster. Arguments go to `demo`
# (`deploy/local/demo.sh --duration 30s`, `--help`).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/install-build-deps.sh
exec cargo run --release -- demo "$@"
