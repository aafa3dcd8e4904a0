#!/usr/bin/env bash
# Installs what building adstream needs beyond Rust, on a fresh Debian/Ubuntu machine:
# libclang (RocksDB's bindings are generated with bindgen), a C/C++ toolchain (RocksDB and
# librdkafka are compiled from source) and OpenSSL's headers (librdkafka's TLS and SCRAM).
# Idempotent: installs nothing that is already there.
set -euo pipefail

need=()
# bindgen loads libclang at build time; libclang-dev is what provides the unversioned .so.
# Only libclang itself counts (libclang.so, libclang.so.N, libclang-N.so): LLVM's
# libclang-cpp.so, installed with llvm on many machines, is not what bindgen loads.
if ! ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so' \
    && ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
    && ! compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null; then
    need+=(libclang-dev)
fi
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# librdkafka's TLS and SASL SCRAM (rdkafka's `ssl` feature) link the system OpenSSL, found with
# pkg-config.
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "install-build-deps.sh: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
