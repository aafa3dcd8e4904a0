# Sourced by the benchmark scripts here: a tansu broker and a pipeline on free loopback ports.
# Expects $tansu and $adstream (paths) and a `pids` array the caller kills on exit.

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_tansu DIR: starts tansu with its sqlite storage in DIR and waits for its port; sets
# `port` and `broker` (its pid).
start_tansu() {
    local dir=$1
    port=$(free_port)
    (cd "$dir" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db) \
        >"$dir/tansu.log" 2>&1 &
    broker=$!
    pids+=("$broker")
    for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

# start_pipeline DIR [ARGS...]: runs DIR/pipeline.toml on the broker at `port` (state in
# DIR/state, log in DIR/run.log, ARGS passed on) and waits until it is ready; sets `api` (its
# port), `admin` (its admin port) and `pipeline` (its pid). Exits when it does not get ready.
start_pipeline() {
    local dir=$1
    shift
    api=$(free_port)
    admin=$(free_port)
    "$adstream" run "$dir/pipeline.toml" --brokers "127.0.0.1:$port" --listen "127.0.0.1:$api" \
        --admin-listen "127.0.0.1:$admin" --state-dir "$dir/state" "$@" >"$dir/run.log" 2>&1 &
    pipeline=$!
    pids+=("$pipeline")
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$pipeline" 2>/dev/null || { echo "the pipeline exited:" >&2; tail -20 "$dir/run.log" >&2; exit 1; }
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$api/readyz" >/dev/null || { echo "the pipeline never got ready" >&2; exit 1; }
}

# cpu_seconds PID: the CPU time (user + system, all threads) process PID used so far, seconds.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
