"""Engine benchmark: what each model costs the Redis thread per event, read from the server.

The server's single thread is genderd's capacity: every event each model applies is paid for
there. For each model alone, on a fresh server of its own (the bundled binary, a free loopback
port), with live grading on and off (``GENDERD_GRADING``), this

1. writes N events over C clients with the Producer (pipelined XADD) and reads the server's
   main-thread CPU (``INFO cpu``) before and after: the cost of writing an event (the mean of
   this and the same writes again after step 2, so that both sides of the multiple see the
   machine's speed of the same minute). With ``--days 0`` (the default) the events are live
   traffic: each one's ``ts`` is the time it is written, so that every event is graded (an
   event is graded when it arrives at most ``GENDERD_GRADING_MAX_DELAY_S`` after its ``ts``);
   ``--days N`` spreads them over the last N days, as the tables before live grading did (then
   none is graded);
2. runs W worker processes of the model (``python -m genderd worker``) until its lag and
   pending are zero, reading the server's CPU before and after, the workers' own CPU (from
   /proc, from their first applied batch on: their start-up is left out), ``INFO
   commandstats``, and the events graded (the stats hash's ``<model>:graded``) and grades
   hashes written: what applying an event costs the server, as a multiple of writing it, and
   where that goes.

``--yesterday S`` first gives a share S of the clients one event of yesterday, applied by an
in-process worker whose clock is one day behind: their stored state is then yesterday's, as for
a client's first events of a day (``top7d`` then grades them from its day buckets, in a second
call). That phase is not measured.

Then, with one worker per model running, it measures event-to-answer latency: events at a fixed
background rate, and every PROBE_EVERY_S a probe event for a fresh client, timed from its XADD
until all the models' answers for it are readable.

Everything is measured ``--repeat`` times (default 3), round by round, grading on and off
alternating which goes first, and the medians are printed: the machine's speed swings, and a
multiple compares each apply with the XADD of its own round, each on/off ratio the two runs of
the same round. Prints tables; asserts nothing about speed.

    python scripts/bench_engine.py --events 60000 --clients 6000 --workers-per-model 1,2,4 \
        --masters 1,3
    python scripts/bench_engine.py --grading on,off --yesterday 0.5 --latency-seconds 0
"""

from __future__ import annotations

import argparse
import dataclasses
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
from benchlib import bar_chart, drain_worker, machine, server_cpu_s

from genderd.bundled import BundledServer, LocalCluster, find_binary, free_port
from genderd.clock import MS_PER_DAY, wall_clock_ms
from genderd.deployment import Deployment, open_deployment_sync
from genderd.grading.plan import hour_of
from genderd.keys import result_field
from genderd.producer import Producer, RateLimiter, synthetic
from genderd.settings import Settings

POLL_S = 0.02
DRAIN_TIMEOUT_S = 600.0
PROBE_EVERY_S = 0.05
TICKS = os.sysconf("SC_CLK_TCK")
GRADING_MODES = ("on", "off")
#: the figures the grading table gives on and off: Cost's attribute and its format
FIGURES = (
    ("graded", ",.0f"),
    ("grades_hashes", ".0f"),
    ("apply_us", ".1f"),
    ("worker_us", ".1f"),
    ("evalsha_us", ".1f"),
)


@dataclass
class Cost:
    model: str
    workers: int
    masters: int
    grading: str  # "on" or "off" (GENDERD_GRADING of the workers)
    events: int
    xadd_us: float  # server CPU per event written
    apply_us: float  # server CPU per event applied
    worker_us: float  # workers' CPU per event applied, from their first batch on
    rate: float  # events applied per second (wall)
    top_commands: list[tuple[str, float]]  # (command, server µs per applied event)
    evalsha_us: float  # server µs per applied event inside EVALSHA (commandstats)
    graded: int  # events the workers graded (the stats hash's <model>:graded)
    grades_hashes: int  # grades hashes of the model that exist after the run

    @property
    def key(self) -> tuple[int, int, str, str]:
        return self.masters, self.workers, self.model, self.grading


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
    url: str, model: str, count: int, cluster: bool = False, grading: str | None = None
) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes of ``model``; ``grading``: their GENDERD_GRADING (None: the
    environment's)."""
    env = dict(os.environ, GENDERD_REDIS_URL=url, GENDERD_CLUSTER=str(cluster).lower())
    if grading is not None:
        env["GENDERD_GRADING"] = grading
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


def counters(client: Any, deployment: Deployment, model: str) -> tuple[int, int]:
    """Entries the model has applied or dead-lettered, and the events it graded, over all
    shards."""
    pipe = client.pipeline(transaction=False)
    for shard in deployment.shards:
        pipe.hmget(
            deployment.keys.stats(shard), f"{model}:applied", f"{model}:dead", f"{model}:graded"
        )
    replies = pipe.execute()
    return (
        sum(int(a or 0) + int(d or 0) for a, d, _ in replies),
        sum(int(g or 0) for _, _, g in replies),
    )


def grades_hashes(client: Any, deployment: Deployment, model: str, since_ms: int) -> int:
    """The model's grades hashes (one per shard and hour graded) of the hours since
    ``since_ms`` that exist."""
    pipe = client.pipeline(transaction=False)
    for shard in deployment.shards:
        for hour in range(hour_of(since_ms), hour_of(wall_clock_ms()) + 1):
            pipe.exists(deployment.keys.grades(shard, model, hour))
    return sum(int(n) for n in pipe.execute())


def age_clients(deployment: Deployment, model: str, client: Any, count: int) -> None:
    """Clients ``C1 .. C<count>`` get one event of yesterday each, applied by an in-process
    worker whose clock is one day behind: their stored state is yesterday's (not graded: the
    events arrive a day after their time)."""
    if count == 0:
        return
    genders = deployment.settings.genders
    yesterday = wall_clock_ms() - MS_PER_DAY
    with Producer(client, deployment) as producer:
        for n in range(1, count + 1):
            producer.send_fields(
                {"cid": f"C{n}", "gender": genders[n % len(genders)], "ts": yesterday}
            )
    behind = dataclasses.replace(deployment, clock=lambda: wall_clock_ms() - MS_PER_DAY)
    drain_worker(behind, behind.model(model))


@dataclass(frozen=True)
class Workload:
    """What one measurement runs: the model, its workers, the server(s) and the events."""

    model: str
    workers: int
    events: int
    clients: int
    masters: int = 1
    grading: str = "on"
    days: int = 0  # 0: live traffic (ts = the time of writing); N: over the last N days
    yesterday: float = 0.0  # share of the clients whose state is yesterday's (age_clients)


def measure(work: Workload) -> Cost:
    with fresh_target(work.masters) as target:
        client = target.client()
        settings = Settings(redis_url=target.url, cluster=target.cluster)
        deployment = open_deployment_sync(client, settings)
        genders = deployment.settings.genders
        produced = list(synthetic(work.events, work.clients, genders, days=work.days, seed=1))
        age_clients(deployment, work.model, client, round(work.yesterday * work.clients))
        base = counters(client, deployment, work.model)

        def write() -> float:
            """Server CPU seconds to write the events (pipelined XADD)."""
            before = target.cpu_s()
            with Producer(client, deployment) as producer:
                for event in produced:
                    producer.send_fields(event)
            return target.cpu_s() - before

        since = wall_clock_ms()
        xadd_s = write()
        stats0, cpu0 = target.commandstats(), target.cpu_s()
        processes = start_workers(
            target.url, work.model, work.workers, target.cluster, work.grading
        )
        try:
            wall, counted, worker_s = drain(client, deployment, work, base[0], processes)
            apply_s = target.cpu_s() - cpu0
            stats1 = target.commandstats()
        finally:
            stop_workers(processes)
        graded = counters(client, deployment, work.model)[1] - base[1]
        hashes = grades_hashes(client, deployment, work.model, since)
        # the same writes again, after the apply: a drift of the machine's speed during the
        # measurement moves both sides of the multiple
        xadd_s = (xadd_s + write()) / 2
        client.close()
    per_command = sorted(
        (
            (name, (usec - stats0.get(name, (0, 0))[1]) / work.events)
            for name, (_, usec) in stats1.items()
            if usec > stats0.get(name, (0, 0))[1]
        ),
        key=lambda item: -item[1],
    )
    n = work.events
    return Cost(
        work.model,
        work.workers,
        work.masters,
        work.grading,
        n,
        xadd_s / n * 1e6,
        apply_s / n * 1e6,
        worker_s / (n - counted) * 1e6,
        (n - counted) / wall,
        per_command[:4],
        dict(per_command).get("evalsha", 0.0),
        graded,
        hashes,
    )


def drain(
    client: Any,
    deployment: Deployment,
    work: Workload,
    before: int,
    processes: Sequence[subprocess.Popen[bytes]],
) -> tuple[float, int, float]:
    """Wait until the workers applied the events: the wall seconds and the workers' CPU
    seconds from their first progress on, and the events applied before it (the rate and
    the workers' CPU count from there, leaving out their start-up)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    first: tuple[float, int, float] | None = None
    while (done := counters(client, deployment, work.model)[0] - before) < work.events:
        if time.monotonic() > deadline:
            raise SystemExit(f"{work.model}: not drained within {DRAIN_TIMEOUT_S} s")
        if first is None and done:
            first = (time.perf_counter(), done, sum(process_cpu_s(p.pid) for p in processes))
        time.sleep(POLL_S)
    if first is None:  # drained before the first poll: nothing to leave out
        raise SystemExit(f"{work.model}: drained before the first poll; use more events")
    since, counted, cpu = first
    worker_s = sum(process_cpu_s(p.pid) for p in processes) - cpu
    return time.perf_counter() - since, counted, worker_s


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=6_000)
    parser.add_argument("--models", default="last,top,top7d,recency")
    parser.add_argument(
        "--workers-per-model", default="1", help="comma-separated worker counts, e.g. 1,2,4"
    )
    parser.add_argument(
        "--masters",
        default="1",
        help="comma-separated: 1 = one server, N = a local N-master cluster",
    )
    parser.add_argument(
        "--grading",
        default="on,off",
        help="comma-separated GENDERD_GRADING of the workers: on, off or both (alternated)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=0,
        help="0: live events (ts = when written, all graded); N: ts over the last N days",
    )
    parser.add_argument(
        "--yesterday",
        type=float,
        default=0.0,
        help="share of the clients whose stored state is yesterday's before the run",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="measure everything this many times (medians)"
    )
    parser.add_argument("--plot", help="also draw server CPU per event per model as a PNG here")
    parser.add_argument("--latency-rate", type=float, default=1_000.0, help="background events/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0: skip")
    args = parser.parse_args()
    modes = args.grading.split(",")
    if not modes or any(mode not in GRADING_MODES for mode in modes):
        parser.error("--grading takes on, off or on,off")
    if not 0 <= args.yesterday <= 1:
        parser.error("--yesterday is a share, from 0 to 1")
    return args


def rounds_of(args: argparse.Namespace) -> list[dict[tuple[int, int, str, str], Cost]]:
    """Every repeat measures each (masters, workers, model, grading) once, in the same order
    except that the grading modes alternate which goes first: the machine's speed swings
    between minutes, so each multiple and each on/off ratio compares measurements taken close
    together."""
    modes = args.grading.split(",")
    rounds = []
    for r in range(args.repeat):
        order = modes if r % 2 == 0 else modes[::-1]
        costs = [
            measure(Workload(m, w, args.events, args.clients, n, mode, args.days, args.yesterday))
            for n in (int(x) for x in args.masters.split(","))
            for w in (int(x) for x in args.workers_per_model.split(","))
            for m in args.models.split(",")
            for mode in order
        ]
        rounds.append({c.key: c for c in costs})
    return rounds


def print_costs(rounds: list[dict[tuple[int, int, str, str], Cost]]) -> list[Cost]:
    """The table of every measurement (medians over the repeats); returns, per measurement,
    the repeat nearest the median (for its commandstats and the plot)."""
    print(
        "| masters | model | workers | grading | events graded | server CPU per event (µs) "
        "| multiple of XADD | worker CPU per event (µs) | events/s | commandstats, µs per "
        "event (EVALSHA includes the calls inside) |"
    )
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---|")
    costs: list[Cost] = []
    for key, first in rounds[0].items():
        same = [r[key] for r in rounds]
        xadds = [
            statistics.median(x.xadd_us for x in r.values() if x.masters == first.masters)
            for r in rounds
        ]
        multiples = sorted(c.apply_us / x for c, x in zip(same, xadds, strict=True))
        apply_us = statistics.median(x.apply_us for x in same)
        c = min(same, key=lambda x: abs(x.apply_us - apply_us))
        costs.append(c)
        top = ", ".join(f"{name} {us:.1f}" for name, us in c.top_commands)
        spread = f" ({multiples[0]:.1f}-{multiples[-1]:.1f})" if len(multiples) > 1 else ""
        print(
            f"| {c.masters} | `{c.model}` | {c.workers} | {c.grading} | "
            f"{statistics.median(x.graded for x in same):,.0f} | {apply_us:.1f} | "
            f"{statistics.median(multiples):.1f}x{spread} (XADD {statistics.median(xadds):.2f}) | "
            f"{statistics.median(x.worker_us for x in same):.1f} | "
            f"{statistics.median(x.rate for x in same):,.0f} | {top} |"
        )
    return costs


def ratio(values: Sequence[float]) -> str:
    """The median of per-round ratios, with their range when there are several."""
    ordered = sorted(values)
    spread = f" ({ordered[0]:.2f}-{ordered[-1]:.2f})" if len(ordered) > 1 else ""
    return f"{statistics.median(ordered):.2f}{spread}"


def both(on: Sequence[Cost], off: Sequence[Cost], attr: str, form: str) -> str:
    """The medians of one figure over the on and the off runs, as "on / off"."""
    return " / ".join(
        format(statistics.median(getattr(c, attr) for c in side), form) for side in (on, off)
    )


def print_grading(rounds: list[dict[tuple[int, int, str, str], Cost]]) -> None:
    """Grading on against off, per model: the medians of each and of the per-round ratios
    (each round's on and off runs were measured one after the other)."""
    print(
        "\n| masters | model | workers | events graded, on / off | grades hashes, on / off "
        "| server CPU per event, on / off (µs) | server on/off | worker CPU per event, on / "
        "off (µs) | worker on/off | EVALSHA per event, on / off (µs) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for masters, workers, model, mode in rounds[0]:
        if mode != "on":
            continue
        on = [r[masters, workers, model, "on"] for r in rounds]
        off = [r[masters, workers, model, "off"] for r in rounds]

        server = ratio([a.apply_us / b.apply_us for a, b in zip(on, off, strict=True)])
        worker = ratio([a.worker_us / b.worker_us for a, b in zip(on, off, strict=True)])
        cells = [both(on, off, attr, form) for attr, form in FIGURES]
        print(
            f"| {masters} | `{model}` | {workers} | {cells[0]} | {cells[1]} | {cells[2]} | "
            f"{server} | {cells[3]} | {worker} | {cells[4]} |"
        )


def main() -> None:
    args = parse_args()
    models = args.models.split(",")
    rounds = rounds_of(args)
    print(f"\nmachine: {machine()}; server: {Path(find_binary()).name}, loopback")
    events = "live events (ts = when written)" if args.days == 0 else f"over {args.days} days"
    aged = f"; {args.yesterday:.0%} of the clients with yesterday's state" if args.yesterday else ""
    print(
        f"{args.events:,} events over {args.clients:,} clients, {events}{aged}; each model "
        f"alone; grading {args.grading}; {args.repeat} repeat(s), medians"
    )
    print(
        "multiple of XADD: server CPU per applied event / server CPU per event written with "
        "pipelined XADD (the median of the same repeat's writes on the same number of masters); "
        "the range is over the repeats; worker CPU from each run's first applied batch on\n"
    )
    costs = print_costs(rounds)
    if {"on", "off"} <= set(args.grading.split(",")):
        print_grading(rounds)
    if args.plot:
        plot(args.plot, costs)
    if args.latency_seconds > 0:
        timings = latency(models, args.latency_rate, args.latency_seconds)
        q = statistics.quantiles(timings, n=100)
        print(
            f"\nevent to answer (XADD until {', '.join(models)} answer), "
            f"{args.latency_rate:,.0f} events/s background, one worker per model: "
            f"{len(timings)} probes, p50 {q[49] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms"
        )


def plot(path: str, costs: list[Cost]) -> None:
    """Server CPU per event per model, one bar per grading mode, for the first (masters,
    workers) measured."""
    one = [c for c in costs if (c.masters, c.workers) == (costs[0].masters, costs[0].workers)]
    models = list(dict.fromkeys(c.model for c in one))
    modes = list(dict.fromkeys(c.grading for c in one))
    by_key = {(c.model, c.grading): c.apply_us for c in one}
    xadd = statistics.median(c.xadd_us for c in one)
    bar_chart(
        path,
        f"Redis server CPU per applied event ({one[0].masters} server(s), "
        f"{one[0].workers} worker(s))",
        models,
        {f"grading {mode} (µs)": [by_key[m, mode] for m in models] for mode in modes},
        "µs of the server's thread",
        line=(xadd, f"pipelined XADD ({xadd:.2f} µs)"),
        notes=[f"{by_key[m, modes[0]] / xadd:.1f}x" for m in models],
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
