"""Evaluation benchmark: ``genderd.evaluation.evaluate`` over synthetic history, no Redis.

Makes N events over C clients with a seed (each client leans to one gender, with noise; event
times spread over ``--days`` days, some sharing a millisecond), then

1. evaluates the four built-in models (``last``, ``top``, ``top7d``, ``recency``) and the
   majority baseline in one pass: wall time and events/s overall;
2. runs each model's predictor alone over the same events (sorting included, no scoring):
   events/s per model.

Prints the figures, the peak RSS of the process (``resource.getrusage``) and the machine's
line; asserts nothing about speed.

    python scripts/bench_evaluate.py --events 1000000 --clients 100000
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import time

from benchlib import machine

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.evaluation import evaluate
from genderd.evaluation.prequential import Prequential
from genderd.events import Event
from genderd.settings import Settings

MODELS = ("last", "top", "top7d", "recency")
GENDERS = ("female", "kids", "male")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def synthetic(events: int, clients: int, days: int, seed: int) -> list[Event]:
    """``events`` events over ``clients`` clients: each client's favourite gender 70% of the
    time, times over ``days`` days at whole seconds (so that some share a ts), ids ordered by
    arrival (not by ts: about a tenth arrive late)."""
    rnd = random.Random(seed)
    favourite = [rnd.choice(GENDERS) for _ in range(clients)]
    cids = [f"client-{n:06d}" for n in range(clients)]
    span_s = days * MS_PER_DAY // 1000
    made = []
    for n in range(events):
        c = rnd.randrange(clients)
        gender = favourite[c] if rnd.random() < 0.7 else rnd.choice(GENDERS)
        ts = START_MS + rnd.randrange(span_s) * 1000
        arrival = ts + (rnd.randrange(3_600_000) if rnd.random() < 0.1 else 0)
        made.append(Event(f"{arrival}-{n}", cids[c], gender, ts))
    return made


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--no-per-model", action="store_true", help="skip step 2")
    args = parser.parse_args()
    print(machine())
    started = time.perf_counter()
    events = synthetic(args.events, args.clients, args.days, args.seed)
    print(
        f"made {len(events):,} events over {args.clients:,} clients in "
        f"{time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mib():.0f} MiB"
    )

    deployment = Deployment.build(Settings(genders=",".join(GENDERS)))
    models = [deployment.model(name) for name in MODELS]
    started = time.perf_counter()
    report = evaluate(events, models, genders=GENDERS)
    wall = time.perf_counter() - started
    print(
        f"evaluate, {len(MODELS)} models + baseline, one pass: {wall:.1f} s, "
        f"{len(events) / wall:,.0f} events/s; peak RSS {peak_rss_mib():.0f} MiB"
    )
    for score in report.models:
        acc = "-" if score.accuracy_all is None else f"{score.accuracy_all:.4f}"
        print(f"  {score.model:<9} coverage {score.coverage:.3f}  accuracy_all {acc}")

    if not args.no_per_model:
        for model in models:
            run = Prequential([model.predictor()])
            started = time.perf_counter()
            collections.deque(run.steps(events), maxlen=0)
            alone = time.perf_counter() - started
            print(
                f"  {model.name:<9} alone (sort + predict + apply): {alone:.1f} s, "
                f"{len(events) / alone:,.0f} events/s"
            )
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
