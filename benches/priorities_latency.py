#!/usr/bin/env python3
"""50 concurrent clients on GET /v1/priorities?limit=100: prints p50, p99 and throughput.

    python3 benches/priorities_latency.py HOST:PORT [CLIENTS] [REQUESTS_PER_CLIENT]
"""
import http.client
import sys
import threading
import time

address = sys.argv[1]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 50
per_client = int(sys.argv[3]) if len(sys.argv) > 3 else 40
host, port = address.rsplit(":", 1)
latencies = []
errors = []
lock = threading.Lock()


def client():
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    mine = []
    for _ in range(per_client):
        started = time.perf_counter()
        conn.request("GET", "/v1/priorities?limit=100")
        response = conn.getresponse()
        body = response.read()
        mine.append(time.perf_counter() - started)
        if response.status != 200 or b'"items"' not in body:
            with lock:
                errors.append(response.status)
    with lock:
        latencies.extend(mine)


threads = [threading.Thread(target=client) for _ in range(clients)]
started = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - started
latencies.sort()


def pct(p):
    return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000


print(f"/v1/priorities?limit=100, {clients} concurrent clients, {len(latencies)} requests in {elapsed:.1f} s "
      f"({len(latencies) / elapsed:.0f} req/s): p50 {pct(0.50):.1f} ms, p99 {pct(0.99):.1f} ms, "
      f"max {latencies[-1] * 1000:.1f} ms, errors {len(errors)}")
