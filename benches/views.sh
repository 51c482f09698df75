#!/usr/bin/env bash
# The metric views on a lake built from a simulated fleet, through `patchtrail
# sql` and through DuckDB (Python package) on the same committed Parquet files;
# prints per-view times and ratios (target: each within 1.5× of DuckDB).
#
#   bash benches/views.sh [ASSETS] [DAYS] [RUNS]   (default 46000 × 30 ≈ 10 M events, 3 runs)
#   LAKE=DIR bash benches/views.sh                  (reuse a lake built before)
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${1:-46000}"
days="${2:-30}"
runs="${3:-3}"
cargo build --release --quiet --bin patchtrail
bin="${CARGO_TARGET_DIR:-target}/release/patchtrail"
python3 -c "import duckdb, deltalake" 2>/dev/null || { echo "needs the duckdb and deltalake Python packages (pip install duckdb deltalake)"; exit 1; }
if [ -n "${LAKE:-}" ] && [ -d "$LAKE/exposures/_delta_log" ]; then
  lake="$LAKE"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  lake="${LAKE:-$work/lake}"
  "$bin" simulate --assets "$assets" --days "$days" --seed 13 --out "$work/events.jsonl" 2>/dev/null
  echo "scenario: $(wc -l <"$work/events.jsonl") events (simulate --assets $assets --days $days --seed 13)"
  "$bin" replay --input "$work/events.jsonl" --lake "$lake" 2>&1 | sed -n '1,3p'
  rm -f "$work/events.jsonl"
fi
parquet=$(find "$lake" -name '*.parquet' -path '*/date=*' -printf '%s\n' | awk '{s += $1} END {printf "%.0f MB", s / 1e6}')
echo "lake: $parquet of Parquet in $(find "$lake" -name '*.parquet' -path '*/date=*' | wc -l) files; $(nproc) cores"
python3 benches/views_vs_duckdb.py "$bin" "$lake" "$runs"
