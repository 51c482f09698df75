#!/usr/bin/env bash
# The fuzz campaigns (issue 18, part 3). Builds the targets instrumented for
# AFL++ (cargo-afl, stable toolchain), seeds each corpus with the real sample
# files, runs every target for --minutes under afl-fuzz, --jobs at a time, and
# prints per target: executions, executions per second, corpus size, edges
# reached, crashes and hangs. The first three crashes and hangs of a target are
# copied to fuzz/regressions/<target>/, which `cargo test` replays
# (fuzz/tests/regressions.rs): fix the bug, and the test keeps it fixed.
#
#   bash fuzz/run.sh                      # every target, 10 minutes each, 2 at a time
#   bash fuzz/run.sh --minutes 1 kev nvd  # a quick look at two
#   bash fuzz/run.sh --resume             # continue the last campaign's corpora
#   bash fuzz/run.sh --report             # the table of the last campaign, nothing run
#
# The work directory (corpora, findings) is $FUZZ_WORK, by default
# ~/.cache/patchtrail/fuzz; the instrumented build is in its own target
# directory beside it. Every target builds without DataFusion (the config
# target drives the loader of `schemas::layers`): about 6 minutes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
minutes=10
jobs=2
resume=0
report=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --resume) resume=1; shift ;;
    --report) report=1; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
all=(decode config kev nvd epss trivy grype inventory hubble vpc-flow opa argo-rollouts policy-report)
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for target in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $target "* ]] || { echo "error: no target $target (targets: ${all[*]})" >&2; exit 2; }
done

work=${FUZZ_WORK:-$HOME/.cache/patchtrail/fuzz}
mkdir -p "$work/bin"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/patchtrail/fuzz-target}

summary() {
    printf '%-14s %12s %9s %8s %20s %8s %6s\n' target executions execs/s corpus "edges/instrumented" crashes hangs
    for target in "${targets[@]}"; do
        stats="$work/$target/out/default/fuzzer_stats"
        [ -f "$stats" ] || { printf '%-14s (no stats: see %s.log)\n' "$target" "$work/$target"; continue; }
        get() { sed -n "s/^$1 *: *//p" "$stats"; }
        runtime=$(get run_time)
        execs=$(get execs_done)
        printf '%-14s %12s %9s %8s %20s %8s %6s\n' "$target" "$execs" "$((execs / (runtime > 0 ? runtime : 1)))" \
            "$(get corpus_count)" "$(get edges_found)/$(get total_edges)" "$(get saved_crashes)" "$(get saved_hangs)"
    done
}
if [ $report = 1 ]; then
    summary
    exit 0
fi

if ! command -v cargo-afl >/dev/null; then
    echo "== installing cargo-afl (AFL++ and its runtime, built from source)"
    cargo install --locked cargo-afl
fi
cargo afl config --build >/dev/null 2>&1 || true

# Ours and the parsers they call get coverage; the rest is a plain release build.
export INSTRUMENT="patchtrail_fuzz schemas ingest serde_json serde_json_borrow
    yaml_serde libyaml_rs csv csv_core flate2 miniz_oxide toml toml_parser toml_datetime serde_ignored"
export RUSTC_WRAPPER="$root/fuzz/instrument"
echo "== building the instrumented targets"
(cd "$root" && cargo afl build --release --locked -p patchtrail-fuzz --features afl)
cp "$CARGO_TARGET_DIR/release/patchtrail-fuzz" "$work/bin/fuzz.new" && mv -f "$work/bin/fuzz.new" "$work/bin/fuzz" # a running fuzzer keeps its copy

dictionary() {
    local dicts="$HOME/.local/share/afl.rs/AFLplusplus/dictionaries"
    case "$1" in
    config) echo "$dicts/toml.dict" ;;
    inventory | vpc-flow | epss) echo "$dicts/csv.dict" ;;
    *) echo "$dicts/json.dict" ;;
    esac
}

seed() { # TARGET BIN DIR: the real samples, each under AFL's 1 MB limit
    local target=$1 bin=$2 dir=$3
    mkdir -p "$dir"
    # shellcheck disable=SC2046 # one argument per seed path
    python3 -c '
import json, os, sys
out = sys.argv[1]
for path in sys.argv[2:]:
    name = os.path.basename(path)
    data = open(path, "rb").read()
    if len(data) > 64 * 1024 and path.endswith(".json"):
        # The KEV catalogue (1.2 MB): the same document with its first entries.
        doc = json.loads(data)
        for key, value in doc.items():
            if isinstance(value, list) and len(value) > 3:
                doc[key] = value[:3]
        data = json.dumps(doc, indent=2).encode()
    open(os.path.join(out, name), "wb").write(data)
' "$dir" $("$bin" "$target" --seeds)
}
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
run_one() { # TARGET
    local target=$1 dir="$work/$1" bin="$work/bin/fuzz" input
    if [ $resume = 1 ] && [ -d "$dir/out/default" ]; then
        input=-
    else
        rm -rf "$dir"
        seed "$target" "$bin" "$dir/in"
        input="$dir/in"
    fi
    afl-run fuzz -i "$input" -o "$dir/out" -x "$(dictionary "$target")" -V $((minutes * 60)) -t 2000 -m none \
        -- "$bin" "$target" >"$dir.log" 2>&1 || echo "afl-fuzz $target failed: see $dir.log" >&2
}
afl-run() { cargo afl "$@"; }

echo "== fuzzing ${targets[*]}: $minutes min each, $jobs at a time; logs in $work/TARGET.log"
start=$(date +%s)
running=0
for target in "${targets[@]}"; do
    run_one "$target" &
    running=$((running + 1))
    if [ $running -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
echo "== done in $(($(date +%s) - start)) s"

summary
for target in "${targets[@]}"; do
    # The first three of each kind are kept (often one bug found many ways);
    # the rest stay in the work directory.
    for kind in crashes hangs; do
        kept=0
        for found in "$work/$target/out/default/$kind"/id:*; do
            [ -f "$found" ] && [ $kept -lt 3 ] || continue
            keep="$root/fuzz/regressions/$target/$kind-$(sha1sum "$found" | cut -c1-12)"
            mkdir -p "$(dirname "$keep")"
            cp "$found" "$keep"
            kept=$((kept + 1))
            echo "    kept $keep (reproduce: patchtrail-fuzz $target FILE)"
        done
    done
done
