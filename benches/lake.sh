#!/usr/bin/env bash
# A lake built the way `run` builds it over time (many small epochs), read
# before and after `patchtrail lake optimize`: the time to open the lake and
# answer `SELECT count(*) FROM exposures`, then each view against DuckDB on
# the same files (benches/views_vs_duckdb.py).
#
#   bash benches/lake.sh [ASSETS] [DAYS] [EPOCH_LINES] [PARTITIONS]
#     (default 2000 × 30 ≈ 520 k events, an epoch every 1000 lines, 4 partitions:
#      3 keyed topics × 4 partitions + intel = 13 tasks, each committing every epoch
#      it has events in; EPOCH_LINES 45 makes ≈ 100,000 commits, half a day of `run`)
#   PUBLISH_EVERY=N bash benches/lake.sh …   publishes every N epochs as `run`'s
#     publisher does (default: once, at the end), and reports what that cost
#   VIEWS_BEFORE=0 bash benches/lake.sh …    skips the views before compaction
#     (over hundreds of thousands of small files they take minutes each)
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${1:-2000}"
days="${2:-30}"
epoch_lines="${3:-1000}"
partitions="${4:-4}"
cargo build --release --quiet --bin patchtrail
bin="${CARGO_TARGET_DIR:-target}/release/patchtrail"
python3 -c "import duckdb, deltalake" 2>/dev/null || { echo "needs the duckdb and deltalake Python packages"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lake="$work/lake"
"$bin" simulate --assets "$assets" --days "$days" --seed 13 --out "$work/events.jsonl" 2>/dev/null
echo "scenario: $(wc -l <"$work/events.jsonl") events (simulate --assets $assets --days $days --seed 13)"
started=$(date +%s.%N)
publish=()
[ -n "${PUBLISH_EVERY:-}" ] && publish=(--publish-every "$PUBLISH_EVERY")
"$bin" replay --input "$work/events.jsonl" --lake "$lake" --partitions "$partitions" --epoch-lines "$epoch_lines" \
  "${publish[@]}" | grep -E "^replayed|events|publications"
echo "replay with --epoch-lines $epoch_lines --partitions $partitions ${publish[*]}: $(echo "$(date +%s.%N) - $started" | bc) s"

describe() {
  local files versions
  files=$(find "$lake" -name '*.parquet' -path '*/date=*' | wc -l)
  versions=$(find "$lake" -path '*/_delta_log/*.json' | wc -l)
  echo "  files on disk: $files; Delta log entries: $versions; commit records left: $(find "$lake/_commits" -name '*.json' | wc -l)"
  python3 - "$lake" <<'EOF'
import sys, deltalake, os
lake = sys.argv[1]
total = 0
for table in sorted(os.listdir(lake)):
    if os.path.isdir(os.path.join(lake, table, "_delta_log")):
        total += len(deltalake.DeltaTable(os.path.join(lake, table)).file_uris())
print(f"  files in the tables: {total}")
EOF
}

open_and_count() {
  # Median of 5: patchtrail's own --timing (open = read the Delta logs and register the files).
  local out="$work/timing"
  : >"$out"
  for _ in 1 2 3 4 5; do
    "$bin" sql --lake "$lake" --timing --format csv "SELECT count(*) FROM exposures" 2>>"$out" >/dev/null ||
      { echo "  patchtrail sql failed:"; tail -5 "$out" | sed 's/^/    /'; exit 1; }
  done
  local open query
  open=$(sed -E 's/.*opened in ([0-9.]+) ms.*/\1/' "$out" | sort -n | sed -n 3p)
  query=$(sed -E 's/.*ran in ([0-9.]+) ms.*/\1/' "$out" | sort -n | sed -n 3p)
  echo "  open ${open} ms, SELECT count(*) FROM exposures ${query} ms (median of 5)"
}

echo
echo "== as \`run\` leaves it (no compaction)"
describe
open_and_count
[ "${VIEWS_BEFORE:-1}" = 0 ] || python3 benches/views_vs_duckdb.py "$bin" "$lake" 3
echo
echo "== after \`patchtrail lake optimize\`"
/usr/bin/time -f "  (optimize: %e s, peak %M KiB)" "$bin" lake optimize --lake "$lake"
"$bin" lake vacuum --lake "$lake" --retain-hours 0
describe
open_and_count
python3 benches/views_vs_duckdb.py "$bin" "$lake" 3
