"""Client data lifecycle benchmark: what a client costs in memory, and what erasing costs.

On a fresh bundled server (a free loopback port), with every registered model applying:

1. **Memory per client**: C clients with E events each, spread over D days, applied by all
   models in-process; then ``MEMORY USAGE`` of every key of each client (its result hash, its
   day buckets), per client. The streams are left out: they are bounded by the retention,
   not by the number of clients.
2. **Erasure**: N entries in one shard stream (C clients' events, one shard so that the
   whole stream is scanned), then ``genderd.erasure.erase`` of one client and of a batch of
   B clients, timed, with the server's main-thread CPU (``INFO cpu``) for each, and the
   longest single script call (``INFO commandstats`` / ``LATENCY`` are not needed: each
   scan call reads a fixed number of entries, timed here one by one).

Prints tables; asserts nothing about speed.

    python scripts/bench_lifecycle.py --entries 1000000 --batch 1000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import machine, server_cpu_s

from genderd import erasure
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.keys import Keys
from genderd.producer import synthetic
from genderd.settings import Settings
from genderd.transport import Links, async_client
from genderd.worker import Worker


def fill(client: redis.Redis, settings: Settings, events: list[dict[str, Any]]) -> None:
    """XADD the events to their shard streams, pipelined."""
    keys, deployment = Keys(settings.prefix), Deployment.build(settings)
    pipe = client.pipeline(transaction=False)
    for n, event in enumerate(events, 1):
        pipe.xadd(keys.stream(deployment.shard_of(event["cid"])), event)
        if n % 10_000 == 0:
            pipe.execute()
    pipe.execute()


async def apply_all(settings: Settings) -> None:
    client = async_client(settings)
    deployment = Deployment.build(settings)
    for model in deployment.registry:
        worker = Worker(deployment, Links.over(client), model, consumer="bench")
        await worker.ensure_groups()
        await worker.drain()
    await client.aclose()


def memory(url: str, clients: int, events: int, days: int) -> list[tuple[str, float]]:
    settings = Settings(redis_url=url, prefix=f"mem{events}x{days}", shards=16, batch_size=1000)
    client = redis.Redis.from_url(url)
    open_deployment_sync(client, settings)
    fill(client, settings, list(synthetic(clients * events, clients, settings.genders, days=days)))
    asyncio.run(apply_all(settings))
    per_kind: dict[str, int] = {"result hash": 0, "day buckets": 0}
    for key in client.scan_iter(match=f"{settings.prefix}:*", count=10_000):
        name = key.decode()
        if ":r:" in name:
            per_kind["result hash"] += int(client.memory_usage(key, samples=0) or 0)
        elif ":m:" in name:
            per_kind["day buckets"] += int(client.memory_usage(key, samples=0) or 0)
    client.close()
    rows = [(kind, total / clients) for kind, total in per_kind.items()]
    return [*rows, ("all", sum(v for _, v in rows))]


def erasing(url: str, entries: int, clients: int, batch: int) -> list[tuple[str, float, float]]:
    settings = Settings(redis_url=url, prefix="erase", shards=1, batch_size=1000)
    client = redis.Redis.from_url(url)
    open_deployment_sync(client, settings)
    fill(client, settings, list(synthetic(entries, clients, settings.genders, days=7)))
    rows = []
    for label, cids in [
        ("1 client", ["C1"]),
        (f"{batch} clients", [f"C{n}" for n in range(2, batch + 2)]),
    ]:

        async def go(cids: list[str] = cids) -> list[erasure.Erased]:
            aclient = async_client(settings)
            try:
                deployment = Deployment.build(settings)
                return await erasure.erase(Links.over(aclient).fast, deployment, cids)
            finally:
                await aclient.aclose()

        cpu = server_cpu_s(client)
        started = time.perf_counter()
        done = asyncio.run(go())
        wall = time.perf_counter() - started
        rows.append((label, wall, server_cpu_s(client) - cpu))
        assert sum(d.entries for d in done) > 0
    # one scan call: what the server is busy with at a time
    calls = []
    after = "-"
    script_client = redis.Redis.from_url(url)
    scan = script_client.register_script(erasure.ERASE_SCAN.source)
    for _ in range(50):
        started = time.perf_counter()
        reply = scan(
            keys=[Keys("erase").stream(0)],
            args=[after, "+", erasure.SCAN_COUNT, "nobody", "0-0"],
        )
        calls.append(time.perf_counter() - started)
        after = reply[0].decode()
        if not after:
            break
    rows.append(
        (
            f"one scan call ({erasure.SCAN_COUNT} entries), median",
            statistics.median(calls),
            math.nan,
        )
    )
    client.close()
    script_client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5_000, help="clients for the memory table")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the stream")
    parser.add_argument("--batch", type=int, default=1_000, help="clients erased in one batch")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as data:
        with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
            print(f"\nmemory per client ({args.clients} clients, all models; MEMORY USAGE):")
            print(f"{'client':<34} {'result hash':>12} {'day buckets':>12} {'all':>8}")
            for events, days in [(1, 1), (10, 7), (50, 30)]:
                rows = dict(memory(server.url, args.clients, events, days))
                label = f"{events} event(s) over {days} day(s)"
                print(
                    f"{label:<34} {rows['result hash']:>10.0f} B {rows['day buckets']:>10.0f} B "
                    f"{rows['all']:>6.0f} B"
                )
    with tempfile.TemporaryDirectory() as data:
        with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
            print(f"\nerasure, one shard stream of {args.entries:,} entries:")
            print(f"{'erased':<40} {'wall ms':>9} {'server CPU ms':>14}")
            for label, wall, cpu in erasing(
                server.url, args.entries, max(args.batch * 4, 10_000), args.batch
            ):
                print(f"{label:<40} {wall * 1000:>9.1f} {cpu * 1000:>14.1f}")


if __name__ == "__main__":
    main()
