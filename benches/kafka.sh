#!/usr/bin/env bash
# Kafka pipeline throughput: fills a local tansu broker with a scenario
# (≈ 2 M events by default), then, in the same invocation, measures a bare
# rdkafka consumer reading the same topics (the baseline) and
# `patchtrail run --stop-at-end` into a fresh lake. Prints both rates, their
# ratio and the pipeline's peak memory.
#
#   bash benches/kafka.sh [ASSETS] [DAYS]        (default 8700 × 30)
#   WORKERS=1 bash benches/kafka.sh              (run's --workers; default: one per core)
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${1:-8700}"
days="${2:-30}"
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
brokers="127.0.0.1:$port"
tansu_bin="${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"
cleanup() { [ -n "${tansu_pid:-}" ] && kill "$tansu_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet --bin patchtrail --example raw_consume
target="${CARGO_TARGET_DIR:-target}/release"
"$tansu_bin" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
tansu_pid=$!
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

start=$(date +%s.%N)
"$target/patchtrail" simulate --assets "$assets" --days "$days" --seed 11 --brokers "$brokers" --partitions 4 \
  --late-ratio 0.01 --duplicate-ratio 0.005 --malformed-ratio 0.001 2>"$work/simulate.log"
produce_s=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
tail -n 1 "$work/simulate.log"

read -r raw_n raw_s raw_rate raw_bytes < <("$target/examples/raw_consume" "$brokers" \
  patchtrail.assets,patchtrail.rollouts,patchtrail.network,patchtrail.intel)
/usr/bin/time -f "%e %M" -o "$work/run.time" "$target/patchtrail" run --brokers "$brokers" --lake "$work/lake" \
  --stop-at-end --metrics-listen "127.0.0.1:$((port + 1))" --workers "${WORKERS:-0}" >"$work/run.log" 2>&1 || { cat "$work/run.log"; exit 1; }
read -r run_s run_kib < "$work/run.time"
awk -v n="$raw_n" -v rs="$raw_s" -v ps="$run_s" -v pk="$run_kib" -v mb="$raw_bytes" -v prod="$produce_s" 'BEGIN {
  printf "input:     %d messages, %.0f MB in 4 partitions per topic (produced in %.1f s)\n", n, mb / 1e6, prod
  printf "baseline:  raw consumer  %6.2f s  %9.0f messages/s\n", rs, n / rs
  printf "pipeline:  run           %6.2f s  %9.0f messages/s  peak %5.0f MiB (incl. start-up and final commit)\n", ps, n / ps, pk / 1024
  printf "ratio:     run reaches %.0f %% of the raw consumption rate\n", 100 * (n / ps) / (n / rs)
}'
