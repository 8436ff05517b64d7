"""Ingest benchmark: the cost of ``GENDERD_INGEST_REPLICAS=1`` (a ``WAIT`` per master written).

Starts a bundled master with one replica (``--replicaof``) on free loopback ports, and two
``genderd serve`` processes (one uvicorn worker each) on that master: one acknowledging once
the master has the events (the default), one once the replica has them too. Loads
``POST /v1/events`` (batches of ``--batch`` events over random clients) on each with wrk, the
two interleaved over ``--repeat`` rounds, and prints requests/s, events/s, p50 and p99 and the
ratio. Asserts nothing about speed.

    python scripts/bench_replicas.py --duration 10 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
from bench_api import Run, median, wrk
from benchlib import machine, wait_ready

from genderd.bundled import BundledServer, find_binary, free_port, replica_of, wait_in_sync
from genderd.deployment import open_deployment_sync
from genderd.settings import Settings


def post_script(batch: int, clients: int) -> str:
    """A wrk script posting ``batch`` events of random clients per request."""
    return f"""
math.randomseed(42)
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  local parts = {{}}
  for i = 1, {batch} do
    local g = (math.random(2) == 1) and "female" or "male"
    parts[i] = '{{"cid":"C' .. math.random(1, {clients}) .. '","gender":"' .. g .. '"}}'
  end
  local body = '{{"events":[' .. table.concat(parts, ",") .. ']}}'
  return wrk.format("POST", "/v1/events", headers, body)
end
"""


def serve(url: str, port: int, replicas: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GENDERD_REDIS_URL=url, GENDERD_INGEST_REPLICAS=str(replicas))
    return subprocess.Popen(
        [sys.executable, "-m", "genderd", "--log-level", "WARNING", "serve", "--port", str(port)],
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=20, help="events per request")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    binary = find_binary()
    with tempfile.TemporaryDirectory() as data:
        master = BundledServer(binary, free_port(), Path(data) / "master", persistent=False)
        with master, replica_of(binary, master, Path(data) / "replica"):
            wait_in_sync(master.port, 1)
            sync = redis.Redis.from_url(master.url)
            open_deployment_sync(sync, Settings(redis_url=master.url))
            sync.close()
            setups = {"GENDERD_INGEST_REPLICAS=0 (default)": 0, "GENDERD_INGEST_REPLICAS=1": 1}
            ports = {name: free_port() for name in setups}
            apis = [serve(master.url, ports[name], n) for name, n in setups.items()]
            try:
                for name in setups:
                    wait_ready(f"http://127.0.0.1:{ports[name]}")
                script = post_script(args.batch, args.clients)
                rounds: dict[str, list[Run]] = {name: [] for name in setups}
                for _ in range(args.repeat):  # interleaved: drift hits both alike
                    for name in setups:
                        base = f"http://127.0.0.1:{ports[name]}"
                        wrk(base, script, args.connections, 2)  # warm-up
                        rounds[name].append(wrk(base, script, args.connections, args.duration))
            finally:
                for api in apis:
                    api.terminate()
                for api in apis:
                    api.wait(30)
    results = {name: median(runs) for name, runs in rounds.items()}
    plain = next(iter(results.values())).rate
    print(
        f"\nPOST /v1/events, {args.batch} events per request; one master and one replica "
        f"(valkey, loopback); `genderd serve` with 1 uvicorn worker per setting; wrk 1 thread, "
        f"{args.connections} connections, {args.duration} s per run, median of {args.repeat} "
        f"interleaved rounds; server, replica, API and wrk on one machine: {machine()}\n"
    )
    print("| setting | req/s | events/s | ratio | p50 / p99 (ms) | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, run in results.items():
        print(
            f"| {name} | {run.rate:,.0f} | {run.rate * args.batch:,.0f} | "
            f"{run.rate / plain:.2f} | {run.p50_ms:.2f} / {run.p99_ms:.2f} | {run.errors} |"
        )


if __name__ == "__main__":
    main()
