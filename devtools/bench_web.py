"""Load benchmark of the recommendations endpoint against the production server, on loopback.

    python -m devtools.bench_web --db output/segrec.sqlite [--seconds 20] [--connections 16]

Starts ``webapp.serve`` (gunicorn) on a free port, then drives it with ``wrk``
(a C load generator; ``make bench-web`` installs it) for a bounded time:
random shoppers, nine in ten known to the batch and one in ten not, asking for
their ``for_you`` list (fused with their events) nine requests in ten, and posting
an event (view, cart or purchase of a random item) one in ten, each request with
an API key as a storefront sends it, and each logged by the server in the
combined format. Prints and writes (``--report``, JSON) throughput,
p50/p90/p99 latency and the error count; the goal on a 2-core machine is
1,000 requests/s with p99 at most 20 ms and no errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing

from webapp import accounts, serving
from webapp.state import State

LUA = """
local function lines(path)
  local found = {}
  for line in io.lines(path) do found[#found + 1] = line end
  return found
end
local ids, items = lines(os.getenv("SEGREC_BENCH_IDS")), lines(os.getenv("SEGREC_BENCH_ITEMS"))
local kinds = {"view", "view", "cart", "purchase"}
local headers = {["Authorization"] = "Bearer " .. os.getenv("SEGREC_BENCH_KEY"), ["Content-Type"] = "application/json"}
math.randomseed(42)
request = function()
  local customer = ids[math.random(#ids)]
  if math.random(10) == 1 then
    local body = string.format('{"customer_id":"%s","item_id":"%s","type":"%s","timestamp":"%s"}', customer,
                               items[math.random(#items)], kinds[math.random(#kinds)], os.date("!%Y-%m-%dT%H:%M:%SZ"))
    return wrk.format("POST", "/api/v1/events", headers, body)
  end
  return wrk.format("GET", "/api/v1/customers/" .. customer .. "/recommendations?list=for_you&n=10", headers)
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ids(db: str, customers_path: str, items_path: str) -> int:
    """Known customers and one unknown visitor for every nine; items that events can name. How many shoppers."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        known = [row[0] for row in connection.execute("SELECT customer_id FROM customers")]
        items = [row[0] for row in connection.execute("SELECT item_id FROM items") if serving.ID_PATTERN.fullmatch(row[0])]
    unknown = [f"visitor-{k}" for k in range(max(1, len(known) // 9))]
    for path, values in ((customers_path, known + unknown), (items_path, items)):
        with open(path, "w") as handle:
            handle.write("\n".join(values) + "\n")
    return len(known) + len(unknown)


def _milliseconds(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> dict:
    percentiles = {f"p{p}_ms": _milliseconds(value) for p, value in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)", output, re.M)}
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"requests": requests, "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "errors": errors, **percentiles}


def run(db: str, *, seconds: int, connections: int, threads: int, workers: int) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("error: wrk is not installed; `make bench-web` installs it (apt-get install wrk)")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="segrec-bench-")
    state_db = os.path.join(workdir, "state.sqlite")
    # The storefront's key, as a storefront would call the API; its rate is far above what the run can send.
    key = accounts.create_key(State(state_db), "bench", ["recommendations:read", "events:write"], rate_per_minute=1_000_000)
    env = {**os.environ, "SEGREC_DB": os.path.abspath(db), "SEGREC_STATE_DB": state_db, "SECRET_KEY": secrets.token_hex(32),
           "SEGREC_BENCH_IDS": os.path.join(workdir, "ids.txt"), "SEGREC_BENCH_ITEMS": os.path.join(workdir, "items.txt"),
           "SEGREC_BENCH_KEY": key}
    ids = _ids(db, env["SEGREC_BENCH_IDS"], env["SEGREC_BENCH_ITEMS"])
    script = os.path.join(workdir, "requests.lua")
    with open(script, "w") as handle:
        handle.write(LUA)
    # The access log goes to a file, as a deployment would keep it.
    log = open(os.path.join(workdir, "server.log"), "w")
    server = subprocess.Popen([sys.executable, "-m", "webapp.serve", "--port", str(port), "--workers", str(workers)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v1/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # A short warm-up, then the measured run.
        subprocess.run([wrk, "-t1", "-c4", "-d2s", "-s", script, url], env=env, capture_output=True, check=True)
        result = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                                env=env, capture_output=True, text=True, check=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = parse_wrk(result.stdout)
    return {**figures, "seconds": seconds, "connections": connections, "server": f"gunicorn, {workers} workers",
            "customers_drawn_from": ids, "cores": os.cpu_count(), "raw": result.stdout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="output/segrec.sqlite")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1, help="server processes (webapp.serve's default)")
    parser.add_argument("--report", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if not os.path.exists(args.db):
        print(f"error: no store at {args.db}: run `make run` (or jobs.publish) first", file=sys.stderr)
        return 2
    figures = run(args.db, seconds=args.seconds, connections=args.connections, threads=args.threads, workers=args.workers)
    print(f"{figures['requests']:,} requests in {figures['seconds']} s over {figures['connections']} connections ({figures['server']}): "
          f"{figures['requests_per_second']:,.0f} requests/s, p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
          f"p99 {figures['p99_ms']:.1f} ms, {figures['errors']} errors")
    if args.report:
        with open(args.report, "w") as handle:
            json.dump({key: value for key, value in figures.items() if key != "raw"}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
