#!/usr/bin/env bash
# Throughput and peak memory of `patchtrail import` on large inputs: the
# whole KEV catalog as CISA ships it, then inputs made large from the real
# samples in tests/data/formats (same shapes, new CVE ids): a KEV catalog of
# 140,400 entries, an EPSS file of 300,000 rows (plain and gzip, the size of
# FIRST's daily file), 50,000 NVD records in one API page, and a Trivy
# report of 100,000 findings; and the runtime sources, a million lines each:
# Hubble flows (the real GKE sample's lines, with new times and ports, about
# 1.4 KB a line) and VPC Flow Log records (AWS's documented format) over two
# hours of event time. Each line: records, seconds, records/s, peak RSS.
#
#   bash benches/import.sh
#   PATCHTRAIL_BIN=path/to/patchtrail bash benches/import.sh   (skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PATCHTRAIL_BIN:-}" ]; then
  cargo build --release --quiet --bin patchtrail
  PATCHTRAIL_BIN="${CARGO_TARGET_DIR:-target}/release/patchtrail"
fi
formats=tests/data/formats
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$formats" "$work" <<'EOF'
import copy, gzip, json, sys
formats, work = sys.argv[1], sys.argv[2]

def cve(n):
    return f"CVE-2099-{n + 10000}"

kev = json.load(open(f"{formats}/kev/known_exploited_vulnerabilities.json"))
entries = kev["vulnerabilities"]
big = dict(kev, vulnerabilities=[dict(entries[n % len(entries)], cveID=cve(n)) for n in range(100 * len(entries))])
big["count"] = len(big["vulnerabilities"])
json.dump(big, open(f"{work}/kev-big.json", "w"))

header = open(f"{formats}/epss/lodestone-epss_scores-current-excerpt.csv").readlines()[:2]
rows = "".join(f"{cve(n)},{(n % 1000) / 1000:.5f},{(n % 997) / 997:.5f}\n" for n in range(300_000))
open(f"{work}/epss.csv", "w").write("".join(header) + rows)
gzip.open(f"{work}/epss.csv.gz", "wt").write("".join(header) + rows)

page = json.load(open(f"{formats}/nvd/vuln-list-update-respPage2-CVE-2024-5732.json"))
record = page["vulnerabilities"][0]
records = []
for n in range(50_000):
    r = copy.deepcopy(record)
    r["cve"]["id"] = cve(n)
    records.append(r)
json.dump(dict(page, vulnerabilities=records, resultsPerPage=len(records), totalResults=len(records)),
          open(f"{work}/nvd-big.json", "w"))

report = json.load(open(f"{formats}/trivy/debian-buster.json"))
found = [v for result in report["Results"] for v in result.get("Vulnerabilities") or []]
result = dict(report["Results"][0], Vulnerabilities=[dict(found[n % len(found)], VulnerabilityID=cve(n)) for n in range(100_000)])
json.dump(dict(report, Results=[result]), open(f"{work}/trivy-big.json", "w"))

# A million flow lines over two hours: 3,000 client ports per template line, so
# windows hold tens of thousands of distinct connections, as a busy node's do.
templates = []
for line in open(f"{formats}/hubble/hubble-otel-basic-sample-10-flows.jsonl"):
    flow = json.loads(line)
    time = flow["time"]
    ports = flow["flow"]["l4"]["TCP"]
    reply = flow["flow"].get("reply", False)
    key = "destination_port" if reply else "source_port"
    text = line.strip().replace(time, "{t}").replace(f'"{key}":{ports[key]}', '"' + key + '":{p}')
    templates.append(text.replace("{", "{{").replace("}", "}}").replace("{{t}}", "{t}").replace("{{p}}", "{p}"))
import datetime
start = 1_700_000_000
stamps = [datetime.datetime.fromtimestamp(start + s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") for s in range(7201)]
with open(f"{work}/hubble.jsonl", "w") as out:
    for n in range(1_000_000):
        t = f"{stamps[n * 7200 // 1_000_000]}.{n % 1000:03d}000000Z"
        out.write(templates[n % 10].format(t=t, p=20000 + (n // 10) % 3000) + "\n")
with open(f"{work}/segments.txt", "w") as out:
    out.write("10.0.0.0/16 corp\n10.1.0.0/16 payments\n0.0.0.0/0 internet\n")
with open(f"{work}/vpc.log", "w") as out:
    out.write("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n")
    for n in range(1_000_000):
        s = start + n * 7200 // 1_000_000
        src = f"10.{n % 2}.{n // 256 % 256}.{n % 256}"
        action = "REJECT" if n % 17 == 0 else "ACCEPT"
        out.write(f"2 123456789010 eni-{n % 64:017x} {src} 10.0.9.{n % 7} {30000 + n % 20000} {443 if n % 3 else 5432} 6 20 4249 {s} {s + 60} {action} OK\n")
EOF

measure() {
  local name="$1" records="$2"; shift 2
  local log="$work/time.log"
  /usr/bin/time -f "%e %M" -o "$log" "$PATCHTRAIL_BIN" import "$@" --out "$work/out.jsonl" 2>"$work/summary.log" \
    || { cat "$work/summary.log"; echo "import $name failed"; exit 1; }
  read -r seconds kib <"$log"
  local events; events=$(wc -l <"$work/out.jsonl")
  awk -v n="$name" -v r="$records" -v e="$events" -v s="$seconds" -v k="$kib" \
    'BEGIN { printf "%-28s %8d records %8d events %7.2f s %10.0f records/s  peak RSS %6.1f MiB\n", n, r, e, s, (s > 0 ? r / s : 0), k / 1024 }'
}

measure "kev (CISA catalog)" 1404 kev "$formats/kev/known_exploited_vulnerabilities.json"
measure "kev (×100)" 140400 kev "$work/kev-big.json"
measure "epss (300,000 rows)" 300000 epss "$work/epss.csv"
measure "epss (300,000 rows, gzip)" 300000 epss "$work/epss.csv.gz"
measure "nvd (50,000 records)" 50000 nvd "$work/nvd-big.json"
measure "trivy (100,000 findings)" 100000 trivy --asset bench-host "$work/trivy-big.json"
measure "hubble (1,000,000 lines)" 1000000 hubble --segment-from namespace "$work/hubble.jsonl"
measure "vpc-flow (1,000,000 lines)" 1000000 vpc-flow --segments "$work/segments.txt" "$work/vpc.log"
