"""Client data lifecycle benchmark: what a client costs in memory, and what erasing costs.

On a fresh bundled server (a free loopback port), with every registered model applying:

1. **Memory per client**: C clients with E events each, spread over D days, applied by all
   models in-process; then ``MEMORY USAGE`` of every key of each client (its result hash, its
   day buckets), per client. The streams are left out: they are bounded by the retention,
   not by the number of clients.
2. **Erasure** (16 shards, one ``genderd serve`` process, no worker, so nothing scrubs
   unless asked): the shard streams are filled with small entries (``fill_stream.lua``) to
   each size of ``--entries`` in turn, and ``DELETE /v1/clients/{cid}`` of clients with
   entries is timed at each (sequential requests, p50/p99/max). Then one drain of every
   pending scrub in-process: its wall time, entries read per second, the server's main-thread
   CPU (``INFO cpu``), and each step's round trip. Then ``POST /v1/events`` (one event, at
   ``--rate``) in alternating windows without and with a scrubber process stepping (as a
   worker's does), an erasure made before each scrubbing window: the ingest latency each way.

Prints tables; asserts nothing about speed.

    python scripts/bench_lifecycle.py --skip-memory --entries 1000000,3000000,10000000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import machine, server_cpu_s, start_api, wait_ready

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.erasure.scrub import STEP_COUNT, Scrubber, Step
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


FILL = Path(__file__).with_name("fill_stream.lua").read_text()
FILL_CALL = 50_000  # entries appended per fill_stream.lua call
FILL_CLIENTS = 1_000_000  # distinct clients in the filled streams
SHARDS = 16


def fill_to(client: redis.Redis, settings: Settings, entries: int) -> None:
    """Append small entries round-robin to the shard streams until they hold ``entries``."""
    fill = client.register_script(FILL)
    keys = Keys(settings.prefix)
    have = sum(int(client.xlen(keys.stream(s))) for s in range(settings.shards))
    shard = 0
    while have < entries:
        n = min(FILL_CALL, entries - have)
        fill(keys=[keys.stream(shard)], args=[n, have, FILL_CLIENTS, 1795696300000])
        have, shard = have + n, (shard + 1) % settings.shards


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``samples``."""
    ordered = sorted(samples)
    return (
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)],
        ordered[-1],
    )


def connect(base: str) -> http.client.HTTPConnection:
    """A keep-alive connection to the API at ``base`` (``http://host:port``)."""
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port))


def timed_requests(base: str, method: str, paths: list[str], expect: int) -> list[float]:
    """Each request's round trip in s (sequential, one keep-alive connection)."""
    connection = connect(base)
    took = []
    for path in paths:
        started = time.perf_counter()
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        took.append(time.perf_counter() - started)
        assert response.status == expect, (method, path, response.status)
    connection.close()
    return took


def delete_latency(base: str, first: int, count: int) -> list[float]:
    """``count`` sequential DELETE /v1/clients/C<k> (each a client with entries), in s."""
    paths = [f"/v1/clients/C{k}" for k in range(first, first + count)]
    return timed_requests(base, "DELETE", paths, 202)


def scrub_throughput(url: str, seconds: float) -> tuple[float, int, float, list[float]]:
    """A scrubber in-process, as a worker's runs (the lease, paced steps), for ``seconds``
    or until no scrub has work: (seconds, entries read, server CPU s, each step's round trip
    in s)."""
    settings = Settings(redis_url=url, shards=SHARDS)
    steps: list[float] = []
    read: dict[tuple[int, int], int] = {}  # (shard, pass) -> entries that pass read so far

    class Timed(Scrubber):
        async def step(self, shard: int) -> Step:
            started = time.perf_counter()
            done = await super().step(shard)
            steps.append(time.perf_counter() - started)
            read[(shard, done.number)] = done.read
            return done

    async def go() -> float:
        client = async_client(settings)
        scrubber = Timed(Links.over(client).fast, Deployment.build(settings), "bench")
        stop = asyncio.Event()
        started = time.perf_counter()
        running = asyncio.create_task(scrubber.run(stop))
        while time.perf_counter() - started < seconds and (await scrubber.peek() or not steps):
            await asyncio.sleep(0.5)
        stop.set()
        await running
        await client.aclose()
        return time.perf_counter() - started

    sync = redis.Redis.from_url(url)
    cpu = server_cpu_s(sync)
    wall = asyncio.run(go())
    cpu = server_cpu_s(sync) - cpu
    sync.close()
    return wall, sum(read.values()), cpu, steps


def scrubber_process(url: str) -> subprocess.Popen[bytes]:
    """A process that scrubs as a worker does (the lease, steps round-robin) until SIGTERM."""
    return subprocess.Popen([sys.executable, __file__, "--scrubber", url])


def run_scrubber(url: str) -> None:
    """The body of :func:`scrubber_process`."""

    async def go() -> None:
        settings = Settings(redis_url=url, shards=SHARDS)
        client = async_client(settings)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        scrubber = Scrubber(Links.over(client).fast, Deployment.build(settings), "bench")
        await scrubber.run(stop)
        await client.aclose()

    asyncio.run(go())


def ingest_latency(base: str, seconds: float, rate: float, tag: str) -> list[float]:
    """POST /v1/events (one event) at ``rate`` per second for ``seconds``: each one's round
    trip in s."""
    connection = connect(base)
    headers = {"Content-Type": "application/json"}
    took: list[float] = []
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + n / rate
        if due > now:
            time.sleep(due - now)
        body = json.dumps({"cid": f"I{tag}{n}", "gender": "female"})
        sent = time.perf_counter()
        connection.request("POST", "/v1/events", body, headers)
        response = connection.getresponse()
        response.read()
        took.append(time.perf_counter() - sent)
        n += 1
    connection.close()
    return took


def scrub_effect(
    url: str, base: str, windows: int, window_s: float, rate: float
) -> dict[bool, list[float]]:
    """Ingest latency in alternating windows without and with a scrubber process stepping a
    pass over every stream (an erasure made just before each scrubbing window)."""
    sync = redis.Redis.from_url(url)
    keys = Keys("genderd")
    latencies: dict[bool, list[float]] = {False: [], True: []}
    for window in range(windows):
        scrubbing = window % 2 == 1
        process = None
        if scrubbing:
            delete_latency(base, 900_000 + window, 1)
            process = scrubber_process(url)
            while sync.hget(keys.scrub(0), "phase") in (None, b""):  # stepping
                time.sleep(0.05)
        latencies[scrubbing] += ingest_latency(base, window_s, rate, str(window))
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait()
    sync.close()
    return latencies


def erasing(args: argparse.Namespace) -> None:
    """DELETE latency at each size, then scrub throughput, then ingest with and without a
    scrub, on one bundled server and one API process (no worker: nothing else scrubs)."""
    sizes = [int(n) for n in args.entries.split(",")]
    with tempfile.TemporaryDirectory() as data:
        with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
            settings = Settings(redis_url=server.url, shards=SHARDS)
            client = redis.Redis.from_url(server.url)
            open_deployment_sync(client, settings)
            port = free_port()
            api = start_api(server.url, port)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_ready(base)
                print(f"\nDELETE /v1/clients/{{cid}}, {args.deletes} clients per size (ms):")
                print(
                    f"{'retained entries':>18} {'p50':>7} {'p99':>7} {'max':>7} {'memory':>9}"
                    "   (a lookup, same server: p50, p99)"
                )
                for n, size in enumerate(sizes):
                    fill_to(client, settings, size)
                    took = delete_latency(base, n * args.deletes + 1, args.deletes)
                    p50, p99, top = (t * 1000 for t in percentiles(took))
                    paths = [f"/v1/clients/C{k}" for k in range(2 * FILL_CLIENTS // 3, 10**6)]
                    lookups = timed_requests(base, "GET", paths[: args.deletes], 404)
                    l50, l99, _ = (t * 1000 for t in percentiles(lookups))
                    memory = client.info("memory")["used_memory_human"]
                    print(
                        f"{size:>18,} {p50:>7.2f} {p99:>7.2f} {top:>7.2f} {memory:>9}"
                        f"   {l50:.2f}, {l99:.2f}"
                    )
                wall, read, cpu, steps = scrub_throughput(server.url, args.scrub_s)
                s50, s99, smax = (t * 1000 for t in percentiles(steps))
                print(
                    f"\nscrub ({len(sizes) * args.deletes} erasures pending, one pass): "
                    f"{read:,} entries read in {wall:.1f} s ({read / wall:,.0f} entries/s), "
                    f"server CPU {cpu:.1f} s ({cpu / read * 1e6:.1f} us per entry); a step "
                    f"({STEP_COUNT} entries) p50 {s50:.2f} ms, p99 {s99:.2f} ms, max "
                    f"{smax:.2f} ms"
                )
                effect = scrub_effect(server.url, base, args.windows, args.window_s, args.rate)
                print(
                    f"\nPOST /v1/events at {args.rate:.0f}/s, {args.windows} alternating windows "
                    f"of {args.window_s:.0f} s (ms):"
                )
                for scrubbing, label in ((False, "no scrub"), (True, "scrub running")):
                    p50, p99, top = (t * 1000 for t in percentiles(effect[scrubbing]))
                    print(f"{label:<16} p50 {p50:>6.2f}  p99 {p99:>6.2f}  max {top:>7.2f}")
            finally:
                api.terminate()
                api.wait()
                client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5_000, help="clients for the memory table")
    parser.add_argument(
        "--entries",
        default="1000000,3000000,10000000",
        help="retained entries at which DELETE is timed (comma-separated, growing)",
    )
    parser.add_argument("--deletes", type=int, default=50, help="DELETEs timed per size")
    parser.add_argument(
        "--scrub-s", type=float, default=60.0, help="seconds the scrub throughput is timed"
    )
    parser.add_argument("--windows", type=int, default=8, help="ingest windows (alternating)")
    parser.add_argument("--window-s", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--rate", type=float, default=100.0, help="POST /v1/events per second")
    parser.add_argument("--skip-memory", action="store_true", help="only the erasure figures")
    parser.add_argument("--scrubber", help=argparse.SUPPRESS)  # the scrubber process's URL
    args = parser.parse_args()
    if args.scrubber:
        run_scrubber(args.scrubber)
        return
    print(f"machine: {machine()}")
    if not args.skip_memory:
        memory_table(args.clients)
    erasing(args)


def memory_table(clients: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
            print(f"\nmemory per client ({clients} clients, all models; MEMORY USAGE):")
            print(f"{'client':<34} {'result hash':>12} {'day buckets':>12} {'all':>8}")
            for events, days in [(1, 1), (10, 7), (50, 30)]:
                rows = dict(memory(server.url, clients, events, days))
                label = f"{events} event(s) over {days} day(s)"
                print(
                    f"{label:<34} {rows['result hash']:>10.0f} B {rows['day buckets']:>10.0f} B "
                    f"{rows['all']:>6.0f} B"
                )


if __name__ == "__main__":
    main()
