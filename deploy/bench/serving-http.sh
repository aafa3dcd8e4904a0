#!/usr/bin/env bash
# Serving over HTTP at catalog scale: for each catalog size, starts tansu (sqlite storage) on a
# free loopback port, runs the shipped pipeline (one worker) on it, seeds that many campaigns
# (`bench --seed-campaigns`: 10 countries x 3 device types, 20 campaigns per advertiser, banner, video,
# native and audio creatives), waits until the API knows the last one, and drives plain and
# mixed-format requests at `POST /v1/openrtb` (`bench --load`), printing req/s, p50/p99/p99.9
# and fill per run, and the pipeline process's CPU over the run (user + system, all its
# threads: the HTTP server, the worker, the Kafka clients, the state writer) with req/s per core
# of it. The broker and the load generator share the machine but are not counted.
#
#   deploy/bench/serving-http.sh [CATALOGS [CONNECTIONS [SECONDS]]]
#
# CATALOGS is a comma-separated list (default 1000,10000,100000); CONNECTIONS the keep-alive
# connections of the load (default 8); SECONDS each run's length (default 10). With MODEL=1,
# each pipeline first trains a model on 150,000 served ads of simulated history
# (`train --simulated`), so it serves from a live model instead of the prior. The load
# generator shares the machine with the pipeline and the broker, as wrk would.
#
# Needs a release build (`cargo build --release`) and tansu (`deploy/local/install-tansu.sh`;
# TANSU=path overrides).
set -euo pipefail

catalogs=${1:-1000,10000,100000}
connections=${2:-8}
seconds=${3:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
adstream=${ADSTREAM:-$root/target/release/adstream}
tansu=${TANSU:-$HOME/.cargo/bin/tansu}
[[ -x $adstream ]] || { echo "serving-http.sh: no $adstream (cargo build --release)" >&2; exit 1; }
[[ -x $tansu ]] || { echo "serving-http.sh: no tansu at $tansu" >&2; exit 1; }

# shellcheck source=deploy/bench/local.sh
source "$root/deploy/bench/local.sh"

dir=""
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    [[ -n $dir ]] && rm -rf "$dir"
    dir=""
}
trap stop EXIT

for n in ${catalogs//,/ }; do
    dir=$(mktemp -d)
    start_tansu "$dir"

    python3 - "$root/pipelines/ads.toml" "$dir/pipeline.toml" <<'PY'
import sys
src, dst = sys.argv[1:]
text = open(src).read()
text = text.replace("[pipeline]\n", "[pipeline]\nallow_development_secret = true\n", 1)
open(dst, "w").write(text)
PY
    "$adstream" topics create "$dir/pipeline.toml" --brokers "127.0.0.1:$port" >"$dir/topics.log" 2>&1
    if [[ ${MODEL:-0} == 1 ]]; then
        "$adstream" train "$dir/pipeline.toml" --simulated 150000 --state-dir "$dir/state" \
            | tail -1 | sed 's/^/  /'
    fi
    start_pipeline "$dir" --workers 1

    started=$(date +%s.%N)
    "$adstream" bench --freshness "$dir/pipeline.toml" --brokers "127.0.0.1:$port" \
        --seed-campaigns "$n" >"$dir/seed.log" 2>&1
    last="c$((n - 1))"
    until curl -fs "http://127.0.0.1:$api/v1/campaigns/$last" >/dev/null 2>&1; do
        kill -0 "$pipeline" 2>/dev/null || { echo "the pipeline exited:" >&2; tail -20 "$dir/run.log" >&2; exit 1; }
        sleep 0.5
    done
    loaded=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pipeline/status")
    echo "$n campaigns: seeded and known to the API in $loaded s; pipeline RSS $((rss / 1024)) MiB"
    for kind in plain mixed; do
        flag=""; [[ $kind == mixed ]] && flag="--mixed"
        echo -n "  $n campaigns, "
        cpu_before=$(cpu_seconds "$pipeline"); wall_before=$(date +%s.%N)
        "$adstream" bench --load --api "http://127.0.0.1:$api" --connections "$connections" \
            --seconds "$seconds" $flag | tee "$dir/load.txt"
        cpu_after=$(cpu_seconds "$pipeline"); wall_after=$(date +%s.%N)
        rate=$(grep -o '[0-9.]* req/s' "$dir/load.txt" | head -1 | cut -d' ' -f1)
        python3 -c "cores = ($cpu_after - $cpu_before) / ($wall_after - $wall_before); print(f'    pipeline CPU {cores:.2f} cores: {$rate / cores:.0f} req/s per pipeline core')"
    done
    stop
done
