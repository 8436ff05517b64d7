"""Pipeline benchmark: how fast workers apply events, and how fast answers are read.

Starts its own server from the bundled binary on a free loopback port, writes N synthetic
events with the Producer, then runs one worker process per model (`python -m genderd worker`,
as `genderd up` does) and times each model until its lag and pending reach zero. Finally it
times single-client lookups (`Reader.lookup`, all models, one round trip) from one asyncio task.
Prints a table; asserts nothing about speed.

    python scripts/bench_pipeline.py --events 200000 --clients 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from benchlib import machine

from genderd import status
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.producer import Producer, synthetic
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport import connect

POLL_S = 0.05


async def wait_caught_up(deployment: Deployment, started: float, expected: int) -> dict[str, float]:
    links = connect(deployment.settings)
    done: dict[str, float] = {}
    try:
        while len(done) < len(deployment.registry):
            for model in await status.collect(links.client, deployment):
                if (
                    model.name not in done
                    and model.applied + model.dead >= expected
                    and model.lag == 0
                    and model.pending == 0
                ):
                    done[model.name] = time.perf_counter() - started
            await asyncio.sleep(POLL_S)
    finally:
        await links.close()
    return done


async def lookups(deployment: Deployment, clients: int, count: int) -> list[float]:
    links = connect(deployment.settings)
    reader = Reader(deployment, links.fast)
    timings = []
    try:
        for n in range(count):
            t0 = time.perf_counter()
            await reader.lookup(f"C{1 + n % clients}")
            timings.append(time.perf_counter() - t0)
    finally:
        await links.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        settings = Settings(redis_url=server.url, batch_size=args.batch_size)
        sync = redis.Redis.from_url(server.url)
        deployment = open_deployment_sync(sync, settings)
        registry = deployment.registry

        t0 = time.perf_counter()
        with Producer(sync, deployment) as producer:
            for event in synthetic(
                args.events, args.clients, settings.genders, days=args.days, seed=1
            ):
                producer.send_fields(event)
        produce_s = time.perf_counter() - t0

        env = dict(
            os.environ,
            GENDERD_REDIS_URL=server.url,
            GENDERD_BATCH_SIZE=str(args.batch_size),
            GENDERD_LOG_LEVEL="WARNING",
        )
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "genderd",
                    "--log-level",
                    "WARNING",
                    "worker",
                    "--model",
                    model.name,
                ],
                env=env,
            )
            for model in registry
        ]
        try:
            done = asyncio.run(wait_caught_up(deployment, started, args.events))
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                process.wait(30)
        timings = asyncio.run(lookups(deployment, args.clients, args.lookups))
        sync.close()

    quantiles = statistics.quantiles(timings, n=100)
    print(f"\nmachine: {machine()}; server: {Path(find_binary()).name}, loopback")
    print(
        f"events: {args.events:,} over {args.clients:,} clients, "
        f"{deployment.settings.shards} shards, "
        f"batch {args.batch_size}\n"
    )
    print("| step | time (s) | events/s |")
    print("|---|---:|---:|")
    print(
        f"| produce (Producer, pipelined XADD) | {produce_s:.2f} | {args.events / produce_s:,.0f} |"
    )
    for name, seconds in sorted(done.items()):
        print(
            f"| worker `{name}` (1 process, all 3 running at once) | {seconds:.2f} | "
            f"{args.events / seconds:,.0f} |"
        )
    print(
        f"\nlookups (all models, one round trip, one task): {len(timings):,}, "
        f"{len(timings) / sum(timings):,.0f}/s, p50 {quantiles[49] * 1e3:.3f} ms, "
        f"p99 {quantiles[98] * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
