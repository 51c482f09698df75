#!/usr/bin/env bash
# Whole-pipeline throughput of `patchtrail replay` against a decode-only
# baseline (`patchtrail validate`: read + decode + validate every line) on the
# same file, in the same invocation. Prints events/s, the ratio and peak memory.
#
#   bash benches/replay.sh [ASSETS] [DAYS]      (default 21500 × 30 ≈ 5 M events)
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${1:-21500}"
days="${2:-30}"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
bin="${CARGO_TARGET_DIR:-target}/release/patchtrail"
cargo build --release --quiet
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)"; exit 1; }

"$bin" simulate --assets "$assets" --days "$days" --seed 11 --out "$work/events.jsonl" \
  --late-ratio 0.01 --duplicate-ratio 0.005 --malformed-ratio 0.001 2>"$work/simulate.log"
lines=$(wc -l < "$work/events.jsonl")
bytes=$(stat -c %s "$work/events.jsonl")
# Warm the page cache so both runs read from memory.
cat "$work/events.jsonl" > /dev/null

measure() { # label, command...: prints "<seconds> <peak KiB>"
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/$label.time" "$@" > "$work/$label.out" 2>&1 || true
  tail -n 1 "$work/$label.time"
}
read -r decode_s decode_kib < <(measure validate "$bin" validate "$work/events.jsonl" --max-errors 0)
read -r replay_s replay_kib < <(measure replay "$bin" replay --input "$work/events.jsonl" --lake "$work/lake")
grep -q "^replayed" "$work/replay.out" || { cat "$work/replay.out"; exit 1; }

awk -v lines="$lines" -v bytes="$bytes" -v ds="$decode_s" -v dk="$decode_kib" -v rs="$replay_s" -v rk="$replay_kib" 'BEGIN {
  printf "input:     %d lines, %.0f MB (%s)\n", lines, bytes / 1e6, "simulate --seed 11"
  printf "baseline:  validate  %6.2f s  %9.0f lines/s  peak %5.0f MiB\n", ds, lines / ds, dk / 1024
  printf "pipeline:  replay    %6.2f s  %9.0f lines/s  peak %5.0f MiB\n", rs, lines / rs, rk / 1024
  printf "ratio:     replay runs at %.0f %% of the decode-only rate\n", 100 * (lines / rs) / (lines / ds)
}'
sed -n '2,4p' "$work/replay.out"
du -sh "$work/lake" | awk '{print "lake:      " $1}'
