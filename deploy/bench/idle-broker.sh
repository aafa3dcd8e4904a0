#!/usr/bin/env bash
# What an idle pipeline costs its broker: starts tansu (sqlite storage) on a free loopback port,
# creates the shipped pipeline's topics, runs the pipeline with no traffic, and prints the CPU
# the broker and the pipeline use over SECONDS once the pipeline is ready.
#
#   deploy/bench/idle-broker.sh [FETCH_WAIT_MS [HEALTH_INTERVAL_MS [SECONDS]]]
#
# FETCH_WAIT_MS is librdkafka's `fetch.wait.max.ms` (the pipeline's default: 20), how long the
# broker may hold a fetch that finds nothing; HEALTH_INTERVAL_MS is `[health] interval_ms` (how
# often the Kafka monitor asks for metadata and watermarks; shipped: 1000). tansu holds every
# fetch for the whole wait, data or not, so there the first trades idle cost against freshness;
# Apache Kafka answers a held fetch as soon as data arrives (see the README, "Fetching").
#
# Needs a release build (`cargo build --release`) and tansu (`deploy/local/install-tansu.sh`;
# TANSU=path overrides).
set -euo pipefail

wait_ms=${1:-20}
health_ms=${2:-1000}
seconds=${3:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
adstream=${ADSTREAM:-$root/target/release/adstream}
tansu=${TANSU:-$HOME/.cargo/bin/tansu}
[[ -x $adstream ]] || { echo "idle-broker.sh: no $adstream (cargo build --release)" >&2; exit 1; }
[[ -x $tansu ]] || { echo "idle-broker.sh: no tansu at $tansu" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=deploy/bench/local.sh
source "$root/deploy/bench/local.sh"
start_tansu "$dir"

# The shipped pipeline with the settings under test (and its development secret allowed).
python3 - "$root/pipelines/ads.toml" "$dir/pipeline.toml" "$wait_ms" "$health_ms" <<'PY'
import re, sys
src, dst, wait_ms, health_ms = sys.argv[1:]
text = open(src).read()
text = text.replace("[pipeline]\n", "[pipeline]\nallow_development_secret = true\n", 1)
text = text.replace("[kafka.properties]\n", f'[kafka.properties]\n"fetch.wait.max.ms" = "{wait_ms}"\n', 1)
text = re.sub(r"(\[health\][^\[]*?interval_ms = )\d+", rf"\g<1>{health_ms}", text, count=1, flags=re.S)
open(dst, "w").write(text)
PY

"$adstream" topics create "$dir/pipeline.toml" --brokers "127.0.0.1:$port" >"$dir/topics.log" 2>&1
start_pipeline "$dir"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
b0=$(cpu "$broker"); p0=$(cpu "$pipeline")
sleep "$seconds"
b1=$(cpu "$broker"); p1=$(cpu "$pipeline")
hz=$(getconf CLK_TCK)
python3 - "$wait_ms" "$health_ms" "$seconds" "$hz" "$b0" "$b1" "$p0" "$p1" <<'PY'
import sys
wait_ms, health_ms, seconds, hz, b0, b1, p0, p1 = sys.argv[1:]
s, hz = float(seconds), float(hz)
print(f"idle pipeline, fetch.wait.max.ms={wait_ms}, health.interval_ms={health_ms}, {seconds} s: "
      f"broker {(float(b1) - float(b0)) / hz / s:.3f} core, pipeline {(float(p1) - float(p0)) / hz / s:.3f} core")
PY
