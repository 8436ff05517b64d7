"""Drives the real pipeline through adversarial delivery schedules, for the property tests.

Events are written in a given order; several consumers of every model then poll, crash with
a batch in hand (entries left pending), reclaim each other's entries and come back late with
stale batches, in an order chosen by the test. At the end every answer is compared with the
oracle's for the set of events written.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from genderd import streams
from genderd.deployment import Deployment
from genderd.grading.plan import hour_of
from genderd.keys import Keys, shard_of
from genderd.models import Registry
from genderd.settings import Settings
from genderd.worker import Worker

from . import oracle
from .factories import make_reader, make_worker
from .runtime import FakeClock


@dataclass
class Schedule:
    """What a test run did, for assertions and failure messages."""

    crashes: int = 0
    stale_replays: int = 0
    stale_applied: int = 0


async def write(
    client: Any, settings: Settings, events: Sequence[dict[str, Any]]
) -> list[oracle.Ev]:
    """XADD raw events in order (as any producer following the key rule would)."""
    keys = Keys(settings.prefix)
    written = []
    for fields in events:
        entry_id = await client.xadd(keys.stream(shard_of(fields["cid"], settings.shards)), fields)
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        ts = int(fields["ts"]) if "ts" in fields else int(entry_id.split("-")[0])
        written.append(oracle.Ev(entry_id, fields["cid"], fields["gender"].strip().lower(), ts))
    return written


async def run_schedule(
    client: Any,
    settings: Settings,
    registry: Registry,
    clock: FakeClock,
    rnd: random.Random,
    consumers: int,
    steps: int,
    midway: Callable[[], Awaitable[None]] | None = None,
) -> Schedule:
    """Let ``consumers`` workers per model process every shard in a random, crashy order;
    ``midway`` runs once, at a random step, with whatever batches are in hand then."""
    schedule = Schedule()
    keys = Keys(settings.prefix)
    workers = [
        make_worker(client, model, settings, consumer=f"c{n}", clock=clock)
        for model in registry
        for n in range(consumers)
    ]
    for worker in workers:
        await worker.ensure_groups()
    stale: list[tuple[Worker, int, list[streams.Entry]]] = []
    midway_step = rnd.randint(0, steps) if midway else -1
    for step in range(steps + 1):
        if step == midway_step and midway is not None:
            await midway()
        if step == steps:
            break
        worker = rnd.choice(workers)
        shard = rnd.randrange(settings.shards)
        action = rnd.random()
        if action < 0.45:
            await worker.poll(shard)
        elif action < 0.65:
            # Crash with a batch in hand: the entries stay pending for this consumer.
            entries = await streams.read_new(
                client,
                keys.stream(shard),
                worker.model.name,
                worker.consumer,
                settings.batch_size,
                None,
            )
            if entries:
                schedule.crashes += 1
                stale.append((worker, shard, entries))
        elif action < 0.85:
            await worker.reclaim(shard, min_idle_ms=0)
        elif stale:
            # The crashed consumer comes back late and applies its stale batch.
            old_worker, old_shard, entries = stale.pop(rnd.randrange(len(stale)))
            outcome = await old_worker.processor.process(old_shard, entries)
            schedule.stale_replays += 1
            schedule.stale_applied += outcome.applied
    await _finish(workers, stale, settings, schedule)
    return schedule


async def _finish(
    workers: list[Worker],
    stale: list[tuple[Worker, int, list[streams.Entry]]],
    settings: Settings,
    schedule: Schedule,
) -> None:
    """Everybody drains, reclaims what crashed consumers left, late batches come back."""
    for worker in workers:
        await worker.drain()
        for shard in range(settings.shards):
            await worker.reclaim(shard, min_idle_ms=0)
    for old_worker, old_shard, entries in stale:
        outcome = await old_worker.processor.process(old_shard, entries)
        schedule.stale_replays += 1
        schedule.stale_applied += outcome.applied


async def pending_and_lag(client: Any, settings: Settings) -> tuple[int, int]:
    keys = Keys(settings.prefix)
    pending = lag = 0
    for shard in range(settings.shards):
        for info in await streams.groups(client, keys, shard):
            pending += info.pending
            lag += info.lag
    return pending, lag


async def applied_counts(client: Any, settings: Settings) -> dict[str, int]:
    """Entries applied per model, from the shards' stats hashes."""
    keys = Keys(settings.prefix)
    totals = dict.fromkeys(Deployment.build(settings).registry.names(), 0)
    for shard in range(settings.shards):
        for name, value in (await client.hgetall(keys.stats(shard))).items():
            model, _, kind = name.decode().partition(":")
            if kind == "applied":
                totals[model] = totals.get(model, 0) + int(value)
    return totals


async def graded_counts(
    client: Any, settings: Settings, events: Sequence[oracle.Ev]
) -> dict[str, int]:
    """Events graded per model, from the grades hashes of the hours of ``events``."""
    keys = Keys(settings.prefix)
    names = Deployment.build(settings).registry.names()
    hours = {hour_of(e.ts) for e in events}
    asked = [
        (name, shard, hour) for name in names for shard in range(settings.shards) for hour in hours
    ]
    pipe = client.pipeline(transaction=False)
    for name, shard, hour in asked:
        pipe.hgetall(keys.grades(shard, name, hour))
    totals = dict.fromkeys(names, 0)
    for (name, _, _), grades in zip(asked, await pipe.execute(), strict=True):
        totals[name] += sum(int(value.split()[0]) for value in grades.values())
    return totals


def gradable(events: Sequence[oracle.Ev], settings: Settings) -> int:
    """How many of ``events`` arrived within the grading delay (SPEC §14)."""
    limit = settings.grading_max_delay_s * 1000
    return sum(1 for e in events if int(e.id.split("-")[0]) - e.ts <= limit)


async def answers(
    client: Any, settings: Settings, registry: Registry, clock: FakeClock, cids: Sequence[str]
) -> list[dict[str, Any]]:
    reader = make_reader(client, settings, clock=clock)
    return await reader.lookup_many(list(cids))


def expected(
    events: Sequence[oracle.Ev], cid: str, processed_at: int, read_at: int, window: int
) -> dict[str, oracle.Expected | None]:
    mine = [e for e in events if e.cid == cid]
    return {
        "last": oracle.last(mine),
        "top": oracle.top(mine),
        "top7d": oracle.top_window(mine, processed_at, read_at, window),
    }


def mismatches(got: dict[str, Any], want: dict[str, oracle.Expected | None]) -> list[str]:
    problems = []
    for name, exp in want.items():
        answer = got[name]
        if exp is None or answer is None:
            if exp is not answer and not (exp is None and answer is None):
                problems.append(f"{name}: got {answer}, want {exp}")
            continue
        actual = (answer.gender, answer.scores, answer.last_event_ts)
        if actual != (exp.gender, exp.scores, exp.last_event_ts):
            problems.append(
                f"{name}: got {actual}, want {(exp.gender, exp.scores, exp.last_event_ts)}"
            )
    return problems
