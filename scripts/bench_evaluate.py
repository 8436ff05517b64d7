"""Evaluation benchmark: ``genderd.evaluation`` over synthetic history, no Redis.

Makes N events over C clients with a seed, lazily (a generator: the events never sit in a list
of the benchmark's own), as a reader of a file or of the streams gives them: each client leans
to one gender, with noise; event times spread over ``--days`` days at whole seconds (so that
some share a ts); entry ids in arrival order, about a tenth of the events arriving up to an
hour late (their ts before the ts of events that arrived earlier). Then

1. evaluates the four built-in models (``last``, ``top``, ``top7d``, ``recency``) and the
   majority baseline in one pass, in ``--order``:

   - ``time`` (the default): the events are kept (compactly) and sorted by ``(ts, id)``: memory
     grows with the events;
   - ``time --presorted``: the events are generated in time order and applied as they come
     (as for a file already in time order): memory grows with the clients only;
   - ``arrival``: applied as they come, in arrival order (as for the streams with
     ``--order arrival``): memory grows with the clients only;

   and prints the wall time, events/s and the peak RSS of the process (``ru_maxrss``);
2. unless ``--no-per-model``: each model's predictor alone over the same events (the
   events made again; ordering included, no scoring): events/s per model.

Asserts nothing about speed.

    python scripts/bench_evaluate.py --events 1000000 --clients 100000
    python scripts/bench_evaluate.py --events 10000000 --order arrival --no-per-model
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import time
from collections.abc import Iterator

from benchlib import machine

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.evaluation.predictors import ARRIVAL, ORDERS, TIME, in_order
from genderd.evaluation.prequential import Evaluation, Prequential
from genderd.events import Event
from genderd.settings import Settings

MODELS = ("last", "top", "top7d", "recency")
GENDERS = ("female", "kids", "male")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LATE_SHARE = 0.1  # events that arrive late
LATE_MAX_MS = 3_600_000  # by up to an hour
FAVOURITE_SHARE = 0.7  # a client's events in its favourite gender


def synthetic(
    events: int, clients: int, days: int, seed: int, *, time_ordered: bool = False
) -> Iterator[Event]:
    """``events`` events over ``clients`` clients, lazily: each client's favourite gender 70%
    of the time, at whole seconds over ``days`` days. In arrival order (entry ids ascending,
    a tenth of the events up to an hour late), or with ``time_ordered`` in ``(ts, id)``
    order (no late events)."""
    rnd = random.Random(seed)
    favourite = [rnd.choice(GENDERS) for _ in range(clients)]
    cids = [f"client-{n:06d}" for n in range(clients)]
    step_ms = days * MS_PER_DAY / events  # the arrival clock's mean step
    for n in range(events):
        c = rnd.randrange(clients)
        gender = favourite[c] if rnd.random() < FAVOURITE_SHARE else rnd.choice(GENDERS)
        arrival = START_MS + int(n * step_ms) // 1000 * 1000
        late = 0 if time_ordered or rnd.random() >= LATE_SHARE else rnd.randrange(LATE_MAX_MS)
        ts = max(START_MS, arrival - late) // 1000 * 1000
        yield Event(f"{arrival}-{n}", cids[c], gender, ts)


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """The process's CPU time so far (user + system), less sensitive than the wall time to
    other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--order", choices=ORDERS, default=TIME)
    parser.add_argument(
        "--presorted", action="store_true", help="time order: events made in time order"
    )
    parser.add_argument("--no-per-model", action="store_true", help="skip step 2")
    args = parser.parse_args()
    presorted = args.presorted and args.order == TIME
    mode = "time, presorted" if presorted else args.order
    print(machine())
    print(f"peak RSS before: {peak_rss_mib():.0f} MiB (interpreter and imports)")

    def made() -> Iterator[Event]:
        return synthetic(args.events, args.clients, args.days, args.seed, time_ordered=presorted)

    started, cpu = time.perf_counter(), cpu_s()
    collections.deque(made(), maxlen=0)
    making, making_cpu = time.perf_counter() - started, cpu_s() - cpu
    print(f"making the events alone: {making:.1f} s (CPU {making_cpu:.1f} s)")

    deployment = Deployment.build(Settings(genders=",".join(GENDERS)))
    models = [deployment.model(name) for name in MODELS]
    started, cpu = time.perf_counter(), cpu_s()
    evaluation = Evaluation(models, genders=GENDERS, order=args.order, presorted=presorted)
    evaluation.feed(made())
    report = evaluation.report()
    wall, used = time.perf_counter() - started, cpu_s() - cpu
    print(
        f"evaluate ({mode}), {args.events:,} events over {args.clients:,} clients, "
        f"{len(MODELS)} models + baseline, one pass: {wall:.1f} s, CPU {used:.1f} s (making "
        f"the events included; without it: {wall - making:.1f} s, CPU {used - making_cpu:.1f} "
        f"s, {args.events / (wall - making):,.0f} events/s); peak RSS {peak_rss_mib():.0f} MiB"
    )
    for score in report.models:
        acc = "-" if score.accuracy_all is None else f"{score.accuracy_all:.4f}"
        print(f"  {score.model:<9} coverage {score.coverage:.3f}  accuracy_all {acc}")

    del evaluation  # its clients' states: the runs below make their own
    if not args.no_per_model:
        for model in models:
            order = args.order
            run = Prequential([in_order(model.predictor(), order)], order=order)
            started = time.perf_counter()
            steps = run.run(made()) if presorted or order == ARRIVAL else run.steps(made())
            collections.deque(steps, maxlen=0)
            alone = time.perf_counter() - started
            print(
                f"  {model.name:<9} alone (making, ordering, predict + apply): {alone:.1f} s, "
                f"{args.events / alone:,.0f} events/s"
            )
    print(f"peak RSS {peak_rss_mib():.0f} MiB (the per-model runs included)")


if __name__ == "__main__":
    main()
