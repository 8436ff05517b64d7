"""Ingest benchmark: what an ``Idempotency-Key`` costs, in throughput and in Redis memory.

Starts its own Redis-compatible server from the bundled binary (and, for throughput, `genderd
serve` with one uvicorn worker) on free loopback ports.

- *Memory*: writes the same batches with and without a key straight through
  :func:`genderd.ingest.write_sync` into an empty server and prints, per batch size, the
  ``INFO memory`` growth per remembered request (keyed minus unkeyed, so the events' own
  memory cancels out), the ``MEMORY USAGE`` of one record and the records per request.
- *Throughput*: loads ``POST /v1/events`` with wrk (https://github.com/wg/wrk), random
  clients, events without ``ts``, a batch size per row, once without and once with a unique
  key on every request, alternated round by round (so that drift on a shared machine hits
  both alike); prints requests/s and events/s, the median of the rounds, and the ratio.

Asserts nothing about speed.

    python scripts/bench_ingest.py --duration 5 --repeat 3
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import redis
from benchlib import machine, run_wrk, start_api, wait_ready, wrk_rate

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import open_deployment_sync
from genderd.ingest import Event, plan, write_sync
from genderd.settings import Settings

CLIENTS = 100_000
TTL_S = 86_400
GENDERS = ("female", "male")


# -- memory ------------------------------------------------------------------------------------
def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def batches(n: int, size: int, seed: int) -> list[list[Event]]:
    import random

    rand = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        [(f"C{rand.randint(1, CLIENTS)}", rand.choice(GENDERS), None, now) for _ in range(size)]
        for _ in range(n)
    ]


def memory_row(url: str, size: int, requests: int) -> tuple[float, float, float, int]:
    """(bytes per remembered request, events' own bytes per request, records per request,
    MEMORY USAGE of one record) for batches of ``size`` events."""
    client = redis.Redis.from_url(url)
    growth: dict[bool, int] = {}
    records = 0
    sample = 0
    for keyed in (False, True):
        client.flushall()
        deployment = open_deployment_sync(client, Settings(redis_url=url))
        work = batches(requests, size, seed=size)
        before = used_memory(client)
        for i, events in enumerate(work):
            key = f"bench-{size}-{i}" if keyed else None
            write_sync(client, plan(deployment, events, key, TTL_S))
        growth[keyed] = used_memory(client) - before
        if keyed:
            found = list(client.scan_iter(match="genderd:*idem:*", count=10_000))
            records = len(found)
            sample = int(client.memory_usage(found[0]) or 0)
    client.close()
    return (
        (growth[True] - growth[False]) / requests,
        growth[False] / requests,
        records / requests,
        sample,
    )


# -- throughput --------------------------------------------------------------------------------
def lua(size: int, keyed: bool, tag: str) -> str:
    """A wrk script: ``size`` events of random clients per request, a unique key or none."""
    key = f'headers["Idempotency-Key"] = "{tag}-" .. counter' if keyed else ""
    return f"""
math.randomseed({abs(hash(tag)) % 100_000})
counter = 0
local genders = {{"female", "male"}}
request = function()
  counter = counter + 1
  local parts = {{}}
  for i = 1, {size} do
    parts[i] = '{{"cid":"C' .. math.random(1, {CLIENTS}) .. '","gender":"'
      .. genders[math.random(1, 2)] .. '"}}'
  end
  local headers = {{}}
  headers["Content-Type"] = "application/json"
  {key}
  return wrk.format("POST", "/v1/events", headers,
    '{{"events":[' .. table.concat(parts, ",") .. ']}}')
end
"""


def wrk(url: str, script: str, connections: int, duration_s: int) -> tuple[float, int]:
    """(requests/s, responses other than 2xx) of one wrk run."""
    out = run_wrk(url, script, connections, duration_s)
    rate = wrk_rate(out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, int(bad.group(1)) if bad else 0


def throughput(
    url: str, sizes: list[int], connections: int, duration_s: int, repeat: int
) -> dict[int, dict[bool, list[float]]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start_api(url, port, 1)
    rates: dict[int, dict[bool, list[float]]] = {s: {False: [], True: []} for s in sizes}
    try:
        wait_ready(base)
        for round_ in range(repeat):
            for size in sizes:
                for keyed in (False, True) if round_ % 2 == 0 else (True, False):
                    tag = f"r{round_}-s{size}-{time.time_ns()}"
                    wrk(base, lua(size, keyed, f"warm-{tag}"), connections, 1)
                    rate, bad = wrk(base, lua(size, keyed, tag), connections, duration_s)
                    if bad:
                        raise SystemExit(f"{bad} requests were not answered 2xx")
                    rates[size][keyed].append(rate)
                    redis.Redis.from_url(url).flushall()  # memory stays flat across runs
                    redis.Redis.from_url(url).close()
    finally:
        api.terminate()
        api.wait(30)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20,200", help="events per request, comma separated")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument("--requests", type=int, default=5_000, help="requests per memory row")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.skip_throughput and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        memory = {size: memory_row(server.url, size, args.requests) for size in sizes}
        redis.Redis.from_url(server.url).flushall()
        rates = (
            None
            if args.skip_throughput
            else throughput(server.url, sizes, args.connections, args.duration, args.repeat)
        )

    print(f"\nmachine: {machine()}; 16 shards; {args.requests:,} requests per memory row\n")
    print(
        "| events per request | bytes per remembered request | records per request "
        "| MEMORY USAGE of one record | the events' own bytes |"
    )
    print("|---:|---:|---:|---:|---:|")
    for size, (per_request, events_bytes, records, sample) in memory.items():
        print(f"| {size} | {per_request:,.0f} | {records:.2f} | {sample} | {events_bytes:,.0f} |")
    if rates is None:
        return
    print(
        f"\n`genderd serve`, 1 uvicorn worker; wrk 1 thread, {args.connections} connections, "
        f"{args.duration} s per run, without and with a key alternated, median of "
        f"{args.repeat} rounds\n"
    )
    print("| events per request | without a key (req/s) | with a key (req/s) | ratio |")
    print("|---:|---:|---:|---:|")
    for size, by_key in rates.items():
        plain, keyed = statistics.median(by_key[False]), statistics.median(by_key[True])
        print(f"| {size} | {plain:,.0f} | {keyed:,.0f} | {keyed / plain:.2f} |")


if __name__ == "__main__":
    main()
