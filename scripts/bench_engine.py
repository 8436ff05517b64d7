"""Engine benchmark: what each model costs the Redis thread per event, read from the server.

The server's single thread is genderd's capacity: every event each model applies is paid for
there. For each model alone, on a fresh server of its own (the bundled binary, a free loopback
port), this

1. writes N events over C clients with the Producer (pipelined XADD) and reads the server's
   main-thread CPU (``INFO cpu``) before and after: the cost of writing an event (the mean of
   this and the same writes again after step 2, so that both sides of the multiple see the
   machine's speed of the same minute);
2. runs W worker processes of the model (``python -m genderd worker``) until its lag and
   pending are zero, reading the server's CPU before and after, the workers' own CPU (from
   /proc), and ``INFO commandstats``: what applying an event costs the server, as a multiple
   of writing it, and where that goes.

Then, with one worker per model running, it measures event-to-answer latency: events at a fixed
background rate, and every PROBE_EVERY_S a probe event for a fresh client, timed from its XADD
until all the models' answers for it are readable.

Everything is measured ``--repeat`` times (default 3), round by round, and the medians are
printed: the machine's speed swings, and a multiple compares each apply with the XADD of its
own round. Prints tables; asserts nothing about speed.

    python scripts/bench_engine.py --events 60000 --clients 6000 --workers-per-model 1,2,4 \
        --masters 1,3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from benchlib import bar_chart, machine, server_cpu_s

from genderd.bundled import BundledServer, LocalCluster, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.keys import result_field
from genderd.producer import Producer, RateLimiter, synthetic
from genderd.settings import Settings

POLL_S = 0.02
DRAIN_TIMEOUT_S = 600.0
PROBE_EVERY_S = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Cost:
    model: str
    workers: int
    masters: int
    events: int
    xadd_us: float  # server CPU per event written
    apply_us: float  # server CPU per event applied
    worker_us: float  # workers' CPU per event applied
    rate: float  # events applied per second (wall)
    top_commands: list[tuple[str, float]]  # (command, server µs per applied event)


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    return {
        name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"]))
        for name, s in client.info("commandstats").items()
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Target:
    """A fresh server, or a local cluster: the URL the workers get and a client per master
    (their CPU and commandstats are summed)."""

    url: str
    cluster: bool
    masters: list[redis.Redis]

    def client(self) -> Any:
        if self.cluster:
            return redis.RedisCluster.from_url(self.url)
        return redis.Redis.from_url(self.url)

    def cpu_s(self) -> float:
        return sum(server_cpu_s(master) for master in self.masters)

    def commandstats(self) -> dict[str, tuple[int, int]]:
        total: dict[str, tuple[int, int]] = {}
        for master in self.masters:
            for name, (calls, usec) in commandstats(master).items():
                was = total.get(name, (0, 0))
                total[name] = (was[0] + calls, was[1] + usec)
        return total


@contextmanager
def fresh_target(masters: int) -> Iterator[Target]:
    with tempfile.TemporaryDirectory() as data:
        if masters == 1:
            with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
                yield Target(server.url, False, [redis.Redis.from_url(server.url)])
        else:
            with LocalCluster(find_binary(), Path(data), masters) as nodes:
                clients = [redis.Redis.from_url(n.url) for n in nodes.servers]
                yield Target(nodes.url, True, clients)


@contextmanager
def fresh_server() -> Iterator[BundledServer]:
    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        yield server


def start_workers(
    url: str, model: str, count: int, cluster: bool = False
) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, GENDERD_REDIS_URL=url, GENDERD_CLUSTER=str(cluster).lower())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "genderd", "--log-level", "WARNING", "worker", "--model", model],
            env=env,
        )
        for _ in range(count)
    ]


def stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in workers:
        process.terminate()
    for process in workers:
        process.wait(30)


def applied(client: redis.Redis, deployment: Deployment, model: str) -> int:
    """Entries the model has applied or dead-lettered, over all shards."""
    pipe = client.pipeline(transaction=False)
    for shard in deployment.shards:
        pipe.hmget(deployment.keys.stats(shard), f"{model}:applied", f"{model}:dead")
    return sum(int(a or 0) + int(d or 0) for a, d in pipe.execute())


def measure(model: str, workers: int, events: int, clients: int, masters: int = 1) -> Cost:
    with fresh_target(masters) as target:
        client = target.client()
        settings = Settings(redis_url=target.url, cluster=target.cluster)
        deployment = open_deployment_sync(client, settings)
        genders = deployment.settings.genders
        produced = list(synthetic(events, clients, genders, days=10, seed=1))

        def write() -> float:
            """Server CPU seconds to write the events (pipelined XADD)."""
            before = target.cpu_s()
            with Producer(client, deployment) as producer:
                for event in produced:
                    producer.send_fields(event)
            return target.cpu_s() - before

        xadd_s = write()

        stats0, cpu0, started = target.commandstats(), target.cpu_s(), time.perf_counter()
        processes = start_workers(target.url, model, workers, target.cluster)
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            first: tuple[float, int] | None = None  # the rate counts from the first progress
            while (done := applied(client, deployment, model)) < events:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{model}: not drained within {DRAIN_TIMEOUT_S} s")
                if first is None and done:
                    first = (time.perf_counter(), done)
                time.sleep(POLL_S)
            since, counted = first or (started, 0)
            wall = time.perf_counter() - since
            apply_s = target.cpu_s() - cpu0
            worker_s = sum(process_cpu_s(p.pid) for p in processes)
            stats1 = target.commandstats()
        finally:
            stop_workers(processes)
        # the same writes again, after the apply: a drift of the machine's speed during the
        # measurement moves both sides of the multiple
        xadd_s = (xadd_s + write()) / 2
        client.close()
    per_command = sorted(
        (
            (name, (usec - stats0.get(name, (0, 0))[1]) / events)
            for name, (_, usec) in stats1.items()
            if usec > stats0.get(name, (0, 0))[1]
        ),
        key=lambda item: -item[1],
    )
    return Cost(
        model,
        workers,
        masters,
        events,
        xadd_s / events * 1e6,
        apply_s / events * 1e6,
        worker_s / events * 1e6,
        (events - counted) / wall,
        per_command[:4],
    )


def latency(models: Sequence[str], rate: float, duration_s: float) -> list[float]:
    """Event-to-answer seconds of probe events, with background traffic at ``rate``."""
    with fresh_server() as server:
        client = redis.Redis.from_url(server.url)
        deployment = open_deployment_sync(client, Settings(redis_url=server.url))
        processes = [p for model in models for p in start_workers(server.url, model, 1)]
        stop = threading.Event()

        def background() -> None:
            limiter = RateLimiter(rate)
            with (
                redis.Redis.from_url(server.url) as own,
                Producer(own, deployment, batch_size=10) as producer,
            ):
                for event in synthetic(None, 10_000, deployment.settings.genders, seed=2):
                    if stop.is_set():
                        return
                    limiter.wait()
                    producer.send_fields(event)

        feeder = threading.Thread(target=background, daemon=True)
        try:
            time.sleep(2.0)  # the workers start and create their groups
            feeder.start()
            fields = [result_field(m) for m in models]
            timings: list[float] = []
            ends = time.monotonic() + duration_s
            n = 0
            while time.monotonic() < ends:
                n += 1
                cid = f"probe{n}"
                stream = deployment.keys.stream(deployment.shard_of(cid))
                result = deployment.keys.result(deployment.shard_of(cid), cid)
                started = time.perf_counter()
                client.xadd(stream, {"cid": cid, "gender": "female", "ts": int(time.time() * 1000)})
                while None in client.hmget(result, fields):
                    time.sleep(0.0005)
                timings.append(time.perf_counter() - started)
                time.sleep(PROBE_EVERY_S)
        finally:
            stop.set()
            feeder.join(10)
            stop_workers(processes)
            client.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=6_000)
    parser.add_argument("--models", default="last,top,top7d")
    parser.add_argument(
        "--workers-per-model", default="1", help="comma-separated worker counts, e.g. 1,2,4"
    )
    parser.add_argument(
        "--masters",
        default="1",
        help="comma-separated: 1 = one server, N = a local N-master cluster",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="measure everything this many times (medians)"
    )
    parser.add_argument("--plot", help="also draw server CPU per event per model as a PNG here")
    parser.add_argument("--latency-rate", type=float, default=1_000.0, help="background events/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0: skip")
    args = parser.parse_args()
    models = args.models.split(",")
    counts = [int(n) for n in args.workers_per_model.split(",")]
    masters = [int(n) for n in args.masters.split(",")]

    # Every repeat measures each (masters, workers, model) once, in the same order, and its
    # multiples divide by that repeat's XADD: the machine's speed swings between minutes, so
    # each multiple compares measurements taken close together.
    rounds = [
        [
            measure(m, w, args.events, args.clients, n)
            for n in masters
            for w in counts
            for m in models
        ]
        for _ in range(args.repeat)
    ]
    print(f"\nmachine: {machine()}; server: {Path(find_binary()).name}, loopback")
    print(
        f"{args.events:,} events over {args.clients:,} clients; each model alone; "
        f"{args.repeat} repeat(s), medians"
    )
    print(
        "multiple of XADD: server CPU per applied event / server CPU per event written with "
        "pipelined XADD (the median of the same repeat's writes on the same number of masters); "
        "the range is over the repeats\n"
    )
    print(
        "| masters | model | workers | server CPU per event (µs) | multiple of XADD | worker "
        "CPU per event (µs) | events/s | commandstats, µs per event (EVALSHA includes the "
        "calls inside) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    costs: list[Cost] = []
    for i, first in enumerate(rounds[0]):
        same = [r[i] for r in rounds]
        xadds = [
            statistics.median(x.xadd_us for x in r if x.masters == first.masters) for r in rounds
        ]
        multiples = sorted(c.apply_us / x for c, x in zip(same, xadds, strict=True))
        apply_us = statistics.median(x.apply_us for x in same)
        # the commandstats and the plot are the repeat nearest the median's
        c = min(same, key=lambda x: abs(x.apply_us - apply_us))
        costs.append(c)
        top = ", ".join(f"{name} {us:.1f}" for name, us in c.top_commands)
        spread = f" ({multiples[0]:.1f}-{multiples[-1]:.1f})" if len(multiples) > 1 else ""
        print(
            f"| {c.masters} | `{c.model}` | {c.workers} | "
            f"{apply_us:.1f} | "
            f"{statistics.median(multiples):.1f}x{spread} (XADD {statistics.median(xadds):.2f}) | "
            f"{statistics.median(x.worker_us for x in same):.1f} | "
            f"{statistics.median(x.rate for x in same):,.0f} | {top} |"
        )
    if args.plot:
        one = [c for c in costs if c.masters == masters[0] and c.workers == counts[0]]
        xadd = statistics.median(c.xadd_us for c in one)
        bar_chart(
            args.plot,
            f"Redis server CPU per applied event ({masters[0]} server, {counts[0]} worker)",
            [c.model for c in one],
            {"server CPU per event (µs)": [c.apply_us for c in one]},
            "µs of the server's thread",
            line=(xadd, f"pipelined XADD ({xadd:.2f} µs)"),
            notes=[f"{c.apply_us / xadd:.1f}x" for c in one],
        )
        print(f"plot: {args.plot}")
    if args.latency_seconds > 0:
        timings = latency(models, args.latency_rate, args.latency_seconds)
        q = statistics.quantiles(timings, n=100)
        print(
            f"\nevent to answer (XADD until {', '.join(models)} answer), "
            f"{args.latency_rate:,.0f} events/s background, one worker per model: "
            f"{len(timings)} probes, p50 {q[49] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
