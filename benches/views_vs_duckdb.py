#!/usr/bin/env python3
"""Each metric view through `patchtrail sql` and through DuckDB, on the same
committed Parquet files, in one invocation; prints per-query times and ratios.

    python3 benches/views_vs_duckdb.py PATCHTRAIL_BIN LAKE_DIR [RUNS]

patchtrail is timed as a user sees it: one `patchtrail sql --format csv` process
per query (start, open the lake's Delta tables, plan, run, write every row to
/dev/null), and "in engine" as `--timing` reports it (plan and run, the part
DuckDB's in-process figure covers). DuckDB is timed in-process on a warm connection (query and fetch
every row), the same SQL files with DuckDB's names for three functions, over
the files the Delta tables hold now: `<table>`, which for a revised table is
its current rows (one per key), as patchtrail reads them. Each figure is the
median of RUNS runs after one warm-up run.
"""

import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

import duckdb

VIEWS = ["ttp_matrix", "sla_compliance", "canary_summary", "drift_summary", "asset_risk", "priorities"]

# The [prioritization] defaults (DOMAIN.md), as queries/src/priorities.rs fills them in.
WEIGHTS = {
    "epss_weight": "4.0",
    "kev_weight": "2.0",
    "internet_exposed_weight": "1.5",
    "edge_weight": "1.2",
    "criticality_low_weight": "1.0",
    "criticality_moderate_weight": "1.5",
    "criticality_high_weight": "2.0",
    "max_urgency": "2.0",
}

# Both engines must agree before their times mean anything: per view, the row
# count and sums of its figures.
CHECKS = {
    "ttp_matrix": "sum(remediated_patches), sum(decided_exposures), sum(patched_by_deadline), sum(mean_ttp_s)",
    "sla_compliance": "sum(exposures), sum(open), sum(breached), sum(compliance)",
    "canary_summary": "sum(rollouts), sum(stages), sum(failed_stages), sum(failure_rate)",
    "drift_summary": "sum(hours), sum(connections), sum(drift_connections), sum(drift_ratio)",
    "asset_risk": "sum(open_exposures), sum(open_kev), sum(residual_risk)",
    "priorities": "sum(rank), sum(score), sum(CASE WHEN blocked_by_canary THEN 1 ELSE 0 END)",
}

# The lake's tables (`schemas::Table`), with their key columns.
KEYS = {
    "assets": ["asset_id"],
    "cves": ["cve_id"],
    "patches": ["patch_id"],
    "exposures": ["asset_id", "cve_id"],
    "patch_outcomes": ["asset_id", "patch_id"],
    "canary_rollups": ["rollout_id"],
    "segment_drift": ["window_start", "src_segment", "dst_segment"],
    "alerts": [],
    "dead_letters": [],
}


def committed(lake):
    """The files each Delta table holds now, and the lake's as-of: the least,
    over tables, of the largest task watermark their latest publication recorded."""
    import deltalake

    files, as_of = {}, None
    for table in KEYS:
        location = os.path.join(lake, table)
        if not os.path.isdir(os.path.join(location, "_delta_log")):
            continue
        delta = deltalake.DeltaTable(location)
        files[table] = [uri.removeprefix("file://") for uri in delta.file_uris()]
        for info in delta.history(10):
            marks = info.get("patchtrail.watermarks")
            if marks:
                latest = max(marks.values())
                as_of = latest if as_of is None else min(as_of, latest)
                break
    return files, as_of


def duckdb_session(lake, sql_dir):
    files, as_of = committed(lake)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in KEYS:
        paths = files.get(table)
        if not paths:
            continue
        source = f"read_parquet({paths!r}, hive_partitioning = false)"
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {source}")
    # patch_severity is read by ttp_matrix: created first, as in queries/src/session.rs.
    for view in ["patch_severity"] + VIEWS:
        with open(os.path.join(sql_dir, f"{view}.sql")) as f:
            sql = f.read()
        for placeholder, weight in WEIGHTS.items():
            sql = sql.replace("{" + placeholder + "}", weight)
        sql = (
            sql.replace("{now}", as_of.rstrip("Z"))
            .replace("approx_percentile_cont(", "approx_quantile(")
            .replace("percentile_cont(", "quantile_cont(")
            .replace("to_unixtime(", "epoch(")
        )
        sql = sql.replace("TIMESTAMP '", "TIMESTAMPTZ '")
        con.execute(f"CREATE VIEW {view} AS {sql}")
    return con


def median_time(runs, run):
    run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    binary, lake = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    sql_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "queries", "sql")
    con = duckdb_session(lake, sql_dir)
    print(f"{'view':<16} {'rows':>8} {'patchtrail sql':>15} {'in engine':>10} {'DuckDB':>8} "
          f"{'ratio':>7} {'engine ratio':>13}")
    ratios, engine_ratios = [], []
    for view in VIEWS:
        query = f"SELECT * FROM {view}"
        check = f"SELECT count(*) AS n, {CHECKS[view]} FROM {view}"
        out = subprocess.run(
            [binary, "sql", "--lake", lake, "--format", "json", check], capture_output=True, check=True
        ).stdout
        ours_check = [float(v or 0) for v in json.loads(out)[0].values()]
        theirs_check = [float(v or 0) for v in con.execute(check).fetchone()]
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(ours_check, theirs_check)):
            sys.exit(f"{view}: the engines disagree: patchtrail {ours_check}, DuckDB {theirs_check}")
        rows = int(ours_check[0])
        engine_times = []

        def ours():
            err = subprocess.run(
                [binary, "sql", "--lake", lake, "--format", "csv", "--timing", query],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True,
            ).stderr.decode()
            engine_times.append(float(re.search(r"query ran in ([0-9.]+) ms", err).group(1)) / 1e3)

        def theirs():
            con.execute(query).fetchall()

        t_ours, t_theirs = median_time(runs, ours), median_time(runs, theirs)
        t_engine = statistics.median(engine_times[1:])
        ratio, engine_ratio = t_ours / t_theirs, t_engine / t_theirs
        ratios.append(ratio)
        engine_ratios.append(engine_ratio)
        mark = "" if ratio <= 1.5 else "  over 1.5×"
        print(f"{view:<16} {rows:>8} {t_ours * 1000:>12.0f} ms {t_engine * 1000:>7.0f} ms "
              f"{t_theirs * 1000:>5.0f} ms {ratio:>6.2f}× {engine_ratio:>12.2f}×{mark}")
    print(f"process ratio: worst {max(ratios):.2f}×, geometric mean {statistics.geometric_mean(ratios):.2f}×")
    print(f"engine ratio:  worst {max(engine_ratios):.2f}×, geometric mean "
          f"{statistics.geometric_mean(engine_ratios):.2f}×")


if __name__ == "__main__":
    main()
