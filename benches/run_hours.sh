#!/usr/bin/env bash
# The lake as a long `run` leaves it: `run` at its defaults (a commit per task
# every 5 s, a publication every 10 s, compaction every 10 min) consumes a
# steady stream from a local tansu broker, and every few minutes the lake is
# read as an analyst would: time to open it and to count the exposures, with
# the files, Delta versions and commit records it holds. Read cost that
# follows the data stays flat while the commits pile up.
#
#   bash benches/run_hours.sh [MINUTES] [RATE] [SAMPLE_SECONDS]
#     (default 60 minutes at 150 messages/s, a sample every 300 s; the
#      scenario is 2000 assets × 30 days, ≈ 520 k messages, longer than the run)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
rate="${2:-150}"
sample="${3:-300}"
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
brokers="127.0.0.1:$port"
tansu_bin="${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# PATCHTRAIL_BIN=path uses that binary instead of building one.
bin="${PATCHTRAIL_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet --bin patchtrail
  bin="${CARGO_TARGET_DIR:-target}/release/patchtrail"
fi
lake="$work/lake"
"$tansu_bin" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

"$bin" simulate --assets 2000 --days 30 --seed 17 --brokers "$brokers" --partitions 4 --rate "$rate" \
  2>"$work/simulate.log" &
pids+=($!)
sleep 2
"$bin" run --brokers "$brokers" --lake "$lake" --metrics-listen "127.0.0.1:$((port + 1))" >"$work/run.log" 2>&1 &
run_pid=$!
pids+=("$run_pid")

read_lake() {
  local out="$work/timing" open query
  for _ in 1 2 3; do
    "$bin" sql --lake "$lake" --timing --format csv "SELECT count(*) FROM exposures" 2>&1 >/dev/null
  done >"$out"
  open=$(sed -E 's/.*opened in ([0-9.]+) ms.*/\1/' "$out" | sort -n | sed -n 2p)
  query=$(sed -E 's/.*ran in ([0-9.]+) ms.*/\1/' "$out" | sort -n | sed -n 2p)
  local rows files versions records
  rows=$("$bin" sql --lake "$lake" --format csv "SELECT count(*) FROM exposures_history" 2>/dev/null | tail -n 1)
  files=$(find "$lake" -name '*.parquet' -path '*/date=*' | wc -l)
  versions=$(find "$lake" -path '*/_delta_log/*.json' | wc -l)
  records=$(find "$lake/_commits" -name '*.json' | wc -l)
  # From run's /metrics: commits, and the publisher's publications and their mean time.
  local figures
  figures=$(curl -s "127.0.0.1:$((port + 1))/metrics" | awk '
    /^patchtrail_commits_total / { commits = $2 }
    /^patchtrail_lake_publications_total / { pubs = $2 }
    /^patchtrail_lake_publication_duration_seconds_sum / { secs = $2 }
    /^patchtrail_lake_publication_conflicts_total / { conflicts = $2 }
    END { printf "%d commits, %d publications (mean %.0f ms, %d conflicts)", commits, pubs, pubs ? 1000 * secs / pubs : 0, conflicts }')
  kill -0 "$run_pid" 2>/dev/null || figures="(run has stopped)"
  printf "%5s min  %s  %6s commit records  %7s files  %5s Delta log entries  %8s exposure revisions  open %6s ms  count %6s ms\n" \
    "$1" "$figures" "$records" "$files" "$versions" "$rows" "$open" "$query"
}

echo "run at its defaults, $rate messages/s, read every $sample s (median of 3 \`sql --timing\`)"
started=$(date +%s)
while :; do
  sleep "$sample"
  kill -0 "$run_pid" 2>/dev/null || { echo "run stopped:"; tail -n 20 "$work/run.log"; exit 1; }
  elapsed=$(( $(date +%s) - started ))
  read_lake "$((elapsed / 60))"
  [ "$elapsed" -ge $((minutes * 60)) ] && break
done
kill -TERM "$run_pid"
wait "$run_pid" || true
echo "after SIGTERM:"
read_lake "end"
