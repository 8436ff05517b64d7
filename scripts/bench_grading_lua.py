"""Where live grading's cost goes inside the apply scripts: variants of the scripts, each
leaving out one more part of grading, measured from the server's own counters.

For each model and variant, on a server flushed before each run (the bundled binary, a free
loopback port), this writes N live events over C clients (each ``ts`` the time it is written,
so that every event is graded), then an in-process worker of the model drains them with the
variant's apply script, and reads the server's ``INFO commandstats`` (``EVALSHA``: µs and
calls) and main-thread CPU (``INFO cpu``) over the drain. The variants, each one the one before
it less one part (the product's Lua files, changed as they are read, never on disk):

- ``off``: the product's script, the worker not grading (``GENDERD_GRADING=off``);
- ``on``: the product's script, grading;
- ``-writes``: ``write_grades`` does nothing (no ``HINCRBY`` of the totals, no ``HMGET`` /
  ``HSET`` / ``EXPIREAT`` of the grades hashes);
- ``-grade``: ``grade_all`` is not called either (no tally of the client's entries);
- ``-predict``: the model's apply gets no ``predictions`` table (no answer per entry);
- ``-gradable``: no client is found to have an entry to grade: what is left is the grading
  block and the one ARGV per client (its grading: group and marks) the worker sends.

The change from one row to the next is what the part left out costs.

A second table gives the worker's side: the Python work of one apply call per event (the
model's ``LuaApplier`` building the call's KEYS and ARGV, with a transport that answers at once:
no I/O, no server), grading off and on, over the same events cut into per-shard batches as a
worker reads them; the best of ``--repeat`` timings. ``--yesterday S`` first
gives a share S of the clients one event of yesterday, applied on a clock one day behind (as
``bench_engine.py --yesterday``): ``top7d`` then grades their entries from the window's day
buckets, deferring them to a second call. Everything is measured ``--repeat`` times, the
variants taking turns to go first; medians. Prints a table; asserts nothing about speed.

    python scripts/bench_grading_lua.py --events 30000 --clients 3000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from bench_engine import age_clients
from benchlib import drain_worker, machine, server_cpu_s

from genderd.apply.batch_frame import LuaApplier
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment, open_deployment_sync
from genderd.events import Event
from genderd.grading.plan import Grading
from genderd.lua import Script, read_resource
from genderd.producer import Producer, synthetic
from genderd.settings import Settings

#: the Python side: apply calls timed per repeat, over the batches in turn
PYTHON_CALLS = 2_000
#: how long callgrind may take to write a dump (it is slow)
CALLGRIND_DUMP_TIMEOUT_S = 60.0

#: per variant: whether the worker grades, and the (file, text, replacement) edits made to
#: the product's Lua as it is read; each variant keeps the edits of the ones before it
STEPS: list[tuple[str, bool, list[tuple[str, str, str]]]] = [
    ("off", False, []),
    ("on", True, []),
    (
        "-writes",
        True,
        [
            (
                "_grades.lua",
                "local function write_grades(spec, stats, model)\n",
                "local function write_grades(spec, stats, model)\n  do return 0, 0, 0 end\n",
            )
        ],
    ),
    (
        "-grade",
        True,
        [
            (
                "_frame.lua",
                "if told and model.grades and not each then",
                "if false then",
            ),
            ("_frame.lua", "elseif told and model.grades then", "elseif false then"),
        ],
    ),
    (
        "-predict",
        True,
        [("_frame.lua", "local told = grading and predictions or nil", "local told = nil")],
    ),
    (
        "-gradable",
        True,
        [
            (
                "_frame.lua",
                "local grading = graded and ARGV[a] or nil",
                "local grading = nil",
            )
        ],
    ),
]


@dataclass(frozen=True)
class Variant:
    name: str
    grading: bool
    edits: tuple[tuple[str, str, str], ...]

    def reader(self) -> Callable[[str, str], str]:
        """How the variant reads a Lua file: the product's, with its edits."""

        def read(package: str, name: str) -> str:
            text = read_resource(package, name)
            for file, old, new in self.edits:
                if file == name:
                    if old not in text:
                        raise SystemExit(f"{self.name}: {file} no longer holds {old!r}")
                    text = text.replace(old, new)
            return text

        return read


def variants() -> list[Variant]:
    made, edits = [], []
    for name, grading, more in STEPS:
        edits += more
        made.append(Variant(name, grading, tuple(edits)))
    return made


@dataclass
class Run:
    evalsha_us: float  # µs inside EVALSHA per event
    calls: float  # EVALSHA calls per 1,000 events
    cpu_us: float  # server main-thread CPU per event over the drain
    graded: int
    instructions: float = 0.0  # with --callgrind: the server's instructions per event


class Callgrind:
    """The server run under valgrind's callgrind (``--callgrind``): instructions counted, the
    same for the same work whatever else the machine does. Counted between :meth:`zero` and
    :meth:`count` (``callgrind_control``)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def wrapper(self, binary: str) -> str:
        """An executable that runs ``binary`` under callgrind, its dumps in ``out``."""
        path = self.out / "valkey-under-callgrind"
        dumps = self.out / "callgrind.out.%p"
        path.write_text(
            "#!/bin/sh\n"
            f"exec valgrind --tool=callgrind --callgrind-out-file={dumps} "
            f'--dump-instr=no --compress-strings=no "{binary}" "$@"\n'
        )
        path.chmod(0o755)
        return str(path)

    def zero(self, pid: int) -> None:
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)

    def count(self, pid: int) -> int:
        """The instructions since :meth:`zero`: a dump's totals."""
        before = set(self.out.glob(f"callgrind.out.{pid}*"))
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        deadline = time.monotonic() + CALLGRIND_DUMP_TIMEOUT_S
        while True:
            fresh = sorted(set(self.out.glob(f"callgrind.out.{pid}*")) - before)
            for dump in fresh:
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            if time.monotonic() > deadline:
                raise SystemExit("callgrind wrote no dump in time")
            time.sleep(0.1)


def run(
    server: redis.Redis,
    url: str,
    model: str,
    variant: Variant,
    args: argparse.Namespace,
    meter: tuple[Callgrind, int] | None = None,
) -> Run:
    server.flushall()
    deployment = open_deployment_sync(server, Settings(redis_url=url))
    age_clients(deployment, model, server, round(args.yesterday * args.clients))
    genders = deployment.settings.genders
    with Producer(server, deployment) as producer:
        for event in synthetic(args.events, args.clients, genders, seed=1):
            producer.send_fields(event)
    chosen = deployment.model(model)
    chosen.apply_script = Script.from_files(
        *chosen.apply_files, package=chosen.script_package, read=variant.reader()
    )
    server.config_resetstat()
    if meter is not None:
        meter[0].zero(meter[1])
    cpu = server_cpu_s(server)
    graded = drain_worker(deployment, chosen, variant.grading).graded
    cpu = server_cpu_s(server) - cpu
    counted = 0 if meter is None else meter[0].count(meter[1])
    stats = server.info("commandstats").get("cmdstat_evalsha", {"usec": 0, "calls": 0})
    n = args.events
    return Run(stats["usec"] / n, stats["calls"] / n * 1000, cpu / n * 1e6, graded, counted / n)


class Answering:
    """A transport that answers every apply call at once: all applied, nothing deferred."""

    async def call(self, script: object, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        return [1, 0, 0, 0, 0, 0]


def batches(deployment: Deployment, args: argparse.Namespace) -> list[tuple[int, list[Event]]]:
    """The run's events as a worker reads them: per shard, in batches of the batch size, each
    with an entry id of its time."""
    now, shards = wall_clock_ms(), deployment.settings.shards
    per_shard: dict[int, list[Event]] = {}
    live = synthetic(args.events, args.clients, deployment.settings.genders, seed=1)
    for seq, fields in enumerate(live):
        cid = fields["cid"]
        own = per_shard.setdefault(deployment.shard_of(cid), [])
        own.append(Event(f"{now}-{seq}", cid, fields["gender"], now))
    size = deployment.settings.batch_size
    return [
        (shard, own[i : i + size])
        for shard in range(shards)
        for own in [per_shard.get(shard, [])]
        for i in range(0, len(own), size)
    ]


def python_side(model: str, args: argparse.Namespace) -> tuple[float, float]:
    """The worker's µs per event of building the model's apply calls, grading off and on."""
    deployment = Deployment.build(Settings())
    work = batches(deployment, args)
    applier = LuaApplier(deployment, Answering(), deployment.model(model))  # type: ignore[arg-type]
    settings = deployment.settings
    grading = Grading(deployment.keys, settings.shards, settings.grading_max_delay_s * 1000)
    events = sum(len(own) for _, own in work[:PYTHON_CALLS]) or 1
    now = wall_clock_ms()

    async def timed(chosen: Grading | None) -> float:
        started = time.perf_counter()
        for shard, own in work[:PYTHON_CALLS]:
            await applier.apply(shard, own, now, chosen)
        return (time.perf_counter() - started) / events * 1e6

    async def both() -> tuple[float, float]:
        off, on = [], []
        for _ in range(args.repeat):
            off.append(await timed(None))
            on.append(await timed(grading))
        return min(off), min(on)

    return asyncio.run(both())


def print_instructions(
    models: Sequence[str], kinds: Sequence[Variant], results: dict[tuple[str, str], list[Run]]
) -> None:
    """The table of ``--callgrind``: the server's instructions per event (the same from run to
    run: the minimum is shown), and each variant's change from the one above."""
    print(
        "| model | variant | graded | server instructions per event | change from the row above |"
    )
    print("|---|---|---:|---:|---:|")
    for model in models:
        above = None
        for variant in kinds:
            runs = results[model, variant.name]
            instructions = min(x.instructions for x in runs)
            less = "" if above is None else f"{instructions - above:+,.0f}"
            above = instructions
            graded = statistics.median(x.graded for x in runs)
            print(f"| `{model}` | {variant.name} | {graded:,.0f} | {instructions:,.0f} | {less} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=3_000)
    parser.add_argument("--models", default="last,top,top7d")
    parser.add_argument("--yesterday", type=float, default=0.0, help="share of aged clients")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians)")
    parser.add_argument(
        "--variants",
        default=",".join(name for name, _, _ in STEPS),
        help="the variants to measure, comma-separated (each keeps the edits of those above)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run the server under valgrind's callgrind and count its instructions per event "
        "(the same for the same work, whatever else the machine does; about 50x slower)",
    )
    args = parser.parse_args()
    models = args.models.split(",")
    wanted = args.variants.split(",")
    kinds = [v for v in variants() if v.name in wanted]
    results: dict[tuple[str, str], list[Run]] = {(m, v.name): [] for m in models for v in kinds}
    with tempfile.TemporaryDirectory() as data:
        callgrind = Callgrind(Path(data)) if args.callgrind else None
        binary = find_binary() if callgrind is None else callgrind.wrapper(find_binary())
        with BundledServer(binary, free_port(), Path(data), persistent=False) as bundled:
            server = redis.Redis.from_url(bundled.url)
            assert bundled.process is not None
            meter = None if callgrind is None else (callgrind, bundled.process.pid)
            for r in range(args.repeat):
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for model in models:
                    for variant in order:
                        results[model, variant.name].append(
                            run(server, bundled.url, model, variant, args, meter)
                        )
            server.close()
    print(f"\nmachine: {machine()}; server: {Path(find_binary()).name}, loopback")
    aged = f"; {args.yesterday:.0%} of the clients with yesterday's state" if args.yesterday else ""
    print(
        f"{args.events:,} live events over {args.clients:,} clients{aged}; one in-process "
        f"worker; {args.repeat} rounds, medians; each variant is the one above it less one part\n"
    )
    if args.callgrind:
        print_instructions(models, kinds, results)
        return
    print(
        "| model | variant | graded | EVALSHA µs per event (range) | change from the row above "
        "| EVALSHA calls per 1,000 events | server CPU µs per event |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in models:
        above = None
        for variant in kinds:
            runs = results[model, variant.name]
            us = statistics.median(x.evalsha_us for x in runs)
            less = "" if above is None else f"{us - above:+.2f}"
            above = us
            spread = sorted(x.evalsha_us for x in runs)
            print(
                f"| `{model}` | {variant.name} | {statistics.median(x.graded for x in runs):,.0f} "
                f"| {us:.2f} ({spread[0]:.2f}-{spread[-1]:.2f}) | {less} | "
                f"{statistics.median(x.calls for x in runs):.1f} | "
                f"{statistics.median(x.cpu_us for x in runs):.2f} |"
            )
    print(
        "\n| model | worker's Python per event, grading off (µs) | on (µs) | on - off | on / off |"
    )
    print("|---|---:|---:|---:|---:|")
    for model in models:
        off, on = python_side(model, args)
        print(f"| `{model}` | {off:.2f} | {on:.2f} | {on - off:+.2f} | {on / off:.2f} |")


if __name__ == "__main__":
    main()
