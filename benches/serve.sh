#!/usr/bin/env bash
# Query service latency: builds a lake from a simulated fleet, starts `serve`
# and puts 50 concurrent clients on GET /v1/priorities?limit=100; prints p50
# and p99.
#
#   bash benches/serve.sh [ASSETS] [DAYS] [CLIENTS]      (default 2000 × 30, 50 clients)
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${1:-2000}"
days="${2:-30}"
clients="${3:-50}"
work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
cleanup() { [ -n "${serve_pid:-}" ] && kill "$serve_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet --bin patchtrail
bin="${CARGO_TARGET_DIR:-target}/release/patchtrail"
"$bin" simulate --assets "$assets" --days "$days" --seed 5 --out "$work/events.jsonl" 2>/dev/null
"$bin" replay --input "$work/events.jsonl" --lake "$work/lake" >/dev/null 2>&1
rows=$("$bin" sql --lake "$work/lake" --format csv "SELECT count(*) FROM priorities" | tail -1)
echo "lake: $(wc -l <"$work/events.jsonl") events, priority queue of $rows rows"
"$bin" serve --lake "$work/lake" --listen "127.0.0.1:$port" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
python3 benches/priorities_latency.py "127.0.0.1:$port" "$clients" 40
