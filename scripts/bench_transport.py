"""Transport benchmark: the client-side cost of a lookup, per way of talking to Redis.

The API's lookup is one command sent by one of many concurrent requests of one process; what
the transport costs there is CPU in the API process (packing, the socket write, parsing, waking
the request). This runs that shape in one process, with nothing else in it: C concurrent tasks,
each sending one-key lookups (HGETALL of a result hash) back to back for D seconds, through

- ``pipelined``: genderd's :class:`~genderd.transport.PipelinedTransport`;
- ``pool``: genderd's :class:`~genderd.transport.PoolTransport` (redis-py's asyncio pool);
- ``glide``: valkey-glide's ``GlideClient`` (a maintained multiplexing client, Rust core),
  when it is installed (``pip install valkey-glide``).

It prints lookups/s, the process's CPU time per lookup (user + system, from
``time.process_time``) and p50/p99 latency, median of R interleaved rounds. It starts its own
server from the bundled binary on a free loopback port. Asserts nothing about speed.

    python scripts/bench_transport.py --concurrency 32 --duration 5 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from benchlib import machine

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.settings import Settings
from genderd.transport import PipelinedTransport, PoolTransport, async_client

Lookup = Callable[[bytes], Awaitable[Any]]


@dataclass
class Round:
    rate: float
    cpu_us: float
    p50_ms: float
    p99_ms: float


async def drive(lookup: Lookup, keys: list[bytes], concurrency: int, duration_s: float) -> Round:
    """C tasks sending lookups back to back for ``duration_s``."""
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + duration_s

    async def task(n: int) -> None:
        nonlocal done
        i = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reply = await lookup(keys[i % len(keys)])
            latencies.append(time.perf_counter() - started)
            assert reply, "every key holds a hash"
            done += 1
            i += concurrency

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task(n) for n in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    q = statistics.quantiles(latencies, n=100)
    return Round(done / wall, cpu / done * 1e6, q[49] * 1e3, q[98] * 1e3)


async def pipelined(url: str) -> tuple[Lookup, Callable[[], Awaitable[None]]]:
    transport = PipelinedTransport(url, 5.0)

    async def lookup(key: bytes) -> Any:
        return await transport.execute("HGETALL", key)

    return lookup, transport.close


async def pool(url: str) -> tuple[Lookup, Callable[[], Awaitable[None]]]:
    transport = PoolTransport(async_client(Settings(redis_url=url), url, max_connections=256))

    async def lookup(key: bytes) -> Any:
        return await transport.execute("HGETALL", key)

    return lookup, transport.close


async def glide(url: str) -> tuple[Lookup, Callable[[], Awaitable[None]]]:
    from glide import GlideClient, GlideClientConfiguration, NodeAddress

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    client = await GlideClient.create(
        GlideClientConfiguration([NodeAddress("127.0.0.1", port)], request_timeout=5000)
    )

    async def lookup(key: bytes) -> Any:
        return await client.hgetall(key)

    return lookup, client.close


def available() -> dict[str, Callable[[str], Awaitable[tuple[Lookup, Any]]]]:
    kinds: dict[str, Callable[[str], Awaitable[tuple[Lookup, Any]]]] = {
        "pipelined (genderd)": pipelined,
        "pool (redis-py asyncio)": pool,
    }
    try:
        import glide as _  # noqa: F401
    except ImportError:
        print("valkey-glide is not installed: pip install valkey-glide (skipped)")
    else:
        kinds["valkey-glide GlideClient"] = glide
    return kinds


async def one_round(
    make: Callable[[str], Awaitable[tuple[Lookup, Any]]],
    url: str,
    keys: list[bytes],
    concurrency: int,
    duration_s: float,
) -> Round:
    lookup, close = await make(url)
    try:
        await drive(lookup, keys, concurrency, 1.0)  # warm-up: connect, caches
        return await drive(lookup, keys, concurrency, duration_s)
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median shown")
    args = parser.parse_args()
    kinds = available()

    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        sync = redis.Redis.from_url(server.url)
        keys = [f"genderd:{{s{n % 16}}}:r:C{n}".encode() for n in range(args.keys)]
        with sync.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hset(
                    key,
                    mapping={
                        "top": "female",
                        "top:s": '{"female":3,"male":1}',
                        "top:ts": "1795696300000",
                        "top:at": "1795696300512",
                    },
                )
            pipe.execute()
        sync.close()
        rounds: dict[str, list[Round]] = {name: [] for name in kinds}
        for _ in range(args.repeat):
            for name, make in kinds.items():
                rounds[name].append(
                    asyncio.run(one_round(make, server.url, keys, args.concurrency, args.duration))
                )

    print(f"\nmachine: {machine()}; server: {Path(find_binary()).name}, loopback")
    print(
        f"{args.concurrency} concurrent tasks, one-key HGETALL lookups, {args.duration:g} s per "
        f"round, median of {args.repeat} interleaved rounds; client and server share the cores\n"
    )
    print("| transport | lookups/s | client CPU per lookup (µs) | p50 / p99 (ms) |")
    print("|---|---:|---:|---:|")
    for name, runs in rounds.items():
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_us for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.1f} | {p50:.2f} / {p99:.2f} |")


if __name__ == "__main__":
    main()
