"""Import benchmark: what writing each line of `produce --file` once costs, in throughput and in
Redis memory, against writing the same batches without a key and with one key per request.

Starts its own Redis-compatible server from the bundled binary on a free loopback port and
writes the same events (random clients, explicit ``ts``) in batches of ``BLOCK_LINES``
straight through :func:`genderd.ingest.write_sync`, three ways, alternated round by round:

- *unkeyed*: :func:`genderd.ingest.plan` without a key (at-least-once);
- *request-keyed*: ``plan`` with one idempotency key per batch (what `produce --file` sent
  before issue 27: a record per shard part and the claim);
- *line-keyed*: :func:`genderd.imports.plan_lines` (what it sends now: each line's id in its
  block's record on its shard); then the same batches again (a re-run: nothing written).

Prints events/s (median of the rounds), and the ``INFO memory`` growth per event remembered
(keyed minus unkeyed, so that the events' own memory cancels out). Then times
``genderd produce --file`` end to end on a file of the same events: a first run, and a re-run.
Asserts nothing about speed.

    python scripts/bench_import.py --events 50000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import redis
from benchlib import machine

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.imports import BLOCK_LINES, line_id, plan_lines
from genderd.ingest import Batch, Event, plan, write_sync
from genderd.settings import Settings

CLIENTS = 100_000
TTL_S = 86_400
GENDERS = ("female", "male")
Planner = Callable[[Deployment, int, list[Event]], Batch]


def events_of(n: int, seed: int) -> list[Event]:
    rand = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        (f"C{rand.randint(1, CLIENTS)}", rand.choice(GENDERS), now - i, now - i) for i in range(n)
    ]


def unkeyed(deployment: Deployment, first: int, batch: list[Event]) -> Batch:
    return plan(deployment, batch)


def request_keyed(deployment: Deployment, first: int, batch: list[Event]) -> Batch:
    return plan(deployment, batch, f"bench-lines {first}-{first + len(batch) - 1}", TTL_S)


def line_keyed(deployment: Deployment, first: int, batch: list[Event]) -> Batch:
    lines = [(line_id(first + i, event), event) for i, event in enumerate(batch)]
    return plan_lines(deployment, lines[0][0], lines, TTL_S)


WAYS: dict[str, Planner] = {
    "unkeyed": unkeyed,
    "request-keyed": request_keyed,
    "line-keyed": line_keyed,
}


def run_way(
    url: str, shards: int, planner: Planner, events: list[Event], again: bool
) -> tuple[float, ...]:
    """(events/s of the writes, memory growth in bytes, events/s of a re-run or 0)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    deployment = open_deployment_sync(client, Settings(redis_url=url, shards=shards))
    batches = [
        (first + 1, events[first : first + BLOCK_LINES])
        for first in range(0, len(events), BLOCK_LINES)
    ]
    planned = [planner(deployment, first, batch) for first, batch in batches]
    before = int(client.info("memory")["used_memory"])
    started = time.perf_counter()
    written = sum(write_sync(client, batch) for batch in planned)
    elapsed = time.perf_counter() - started
    growth = int(client.info("memory")["used_memory"]) - before
    assert written == len(events)
    rerun = 0.0
    if again:
        started = time.perf_counter()
        assert sum(write_sync(client, batch) for batch in planned) == 0
        rerun = len(events) / (time.perf_counter() - started)
    client.close()
    return len(events) / elapsed, float(growth), rerun


def cli_runs(url: str, shards: int, events: list[Event]) -> tuple[float, float]:
    """Seconds of ``genderd produce --file`` on the events as JSON Lines: first run, re-run."""
    redis.Redis.from_url(url).flushall()
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as file:
        for cid, gender, ts, _ in events:
            file.write(orjson.dumps({"cid": cid, "gender": gender, "ts": ts}) + b"\n")
    env = {**os.environ, "GENDERD_REDIS_URL": url, "GENDERD_SHARDS": str(shards)}
    command = [sys.executable, "-m", "genderd", "produce", "--file", file.name, "--quiet"]
    seconds = []
    try:
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True)
            seconds.append(time.perf_counter() - started)
    finally:
        Path(file.name).unlink()
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    events = events_of(args.events, seed=1)
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    growth: dict[str, list[float]] = {way: [] for way in WAYS}
    reruns: list[float] = []
    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        for round_ in range(args.repeat):
            order = list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))
            for way in order:
                again = way == "line-keyed"
                rate, grown, rerun = run_way(server.url, args.shards, WAYS[way], events, again)
                rates[way].append(rate)
                growth[way].append(grown)
                if rerun:
                    reruns.append(rerun)
        first_s, again_s = cli_runs(server.url, args.shards, events)

    print(
        f"\nmachine: {machine()}; {args.shards} shards; {args.events:,} events in batches of "
        f"{BLOCK_LINES}"
    )
    print(f"median of {args.repeat} rounds, the ways alternated\n")
    print("| writes | events/s | ratio | bytes remembered per event |")
    print("|---|---:|---:|---:|")
    plain_rate = statistics.median(rates["unkeyed"])
    plain_memory = statistics.median(growth["unkeyed"])
    for way in WAYS:
        rate = statistics.median(rates[way])
        extra = (statistics.median(growth[way]) - plain_memory) / args.events
        remembered = "-" if way == "unkeyed" else f"{extra:,.1f}"
        print(f"| {way} | {rate:,.0f} | {rate / plain_rate:.2f} | {remembered} |")
    print(f"| line-keyed, re-run (nothing written) | {statistics.median(reruns):,.0f} | | |")
    print(
        f"\n`genderd produce --file` of {args.events:,} lines: {first_s:.2f} s "
        f"({args.events / first_s:,.0f} lines/s); re-run {again_s:.2f} s "
        f"({args.events / again_s:,.0f} lines/s)"
    )


if __name__ == "__main__":
    main()
