#!/usr/bin/env bash
# Instructions per event of the billing dataflow: runs `adstream bench --dataflow WORKERS` (three
# warm runs, each EVENTS untimed then EVENTS timed events) under valgrind's callgrind, counting
# only what the timely workers execute (`--toggle-collect` on `Worker::step_or_park`: the graph's
# operators, not the setup or the generation of the messages), and divides the count by the
# events the workers processed.
#
# Unlike events/s, the count does not move with how loaded or how fast the machine is that
# minute: compare two builds by it (repeated runs agree within about 1 %). Instructions are not
# time: an allocation or a copy removed shows here in full, a cache miss not at all. Under valgrind
# SHA-256 runs without the CPU's SHA extensions, so token verification weighs more here than in
# the native bench.
#
#   deploy/bench/instructions.sh [EVENTS [WORKERS [--reports]]]
#
# EVENTS defaults to 10000 (about a minute and a half), WORKERS to 1. Needs valgrind (apt) and a
# release build (`cargo build --release`); ADSTREAM=path picks another binary.
set -euo pipefail

events=${1:-10000}
workers=${2:-1}
reports=${3:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
adstream=${ADSTREAM:-$root/target/release/adstream}
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt install valgrind)" >&2; exit 1; }
[[ -x $adstream ]] || { echo "instructions.sh: no $adstream (cargo build --release)" >&2; exit 1; }
[[ -z $reports || $reports == --reports ]] || { echo "instructions.sh: the third argument is --reports or nothing" >&2; exit 2; }

out=$(mktemp)
trap 'rm -f "$out" "$out.log"' EXIT
args=(bench --dataflow "$workers" --events "$events")
[[ -n $reports ]] && args+=(--reports)
if ! valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*step_or_park*' \
    "$adstream" "${args[@]}" >"$out.log" 2>&1; then
    echo "instructions.sh: the bench failed:" >&2
    tail -20 "$out.log" >&2
    exit 1
fi
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
[[ -n $total ]] || { echo "instructions.sh: callgrind wrote no total" >&2; exit 1; }
with=$([[ -n $reports ]] && echo "3 default reports" || echo "no reports")
python3 -c "
total, events = $total, 3 * 2 * $events
print(f'billing dataflow, $workers worker(s), $with: {total / events:,.0f} instructions per event '
      f'({total:,} over {events:,} events)')"
