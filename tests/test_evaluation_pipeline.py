"""Evaluation predicts what the live service answers (SPEC §11): for sampled (client, time)
points of random histories, ``predictions`` equals the real pipeline's answer (workers, then the
reader at that read time) given the client's earlier events, for every built-in model, a
PythonModel and a TopWindow plug-in; and an off-by-one day in the window is caught."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.evaluation import predictions
from genderd.evaluation.predictors import Prediction, WindowPredictor
from genderd.events import Event, parse_entry, text
from genderd.keys import Keys, shard_of
from genderd.models.base import Answer
from genderd.models.window import WindowRuntime
from genderd.settings import Settings

from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop

PLUGINS = ("tests.support.pymodels:Count", "tests.support.pymodels:Top3")
HOUR = 3_600_000
GENDERS = ("female", "kids", "male")
CIDS = [f"e{n}" for n in range(8)] + ["e:8"]
READS = 14  # read times sampled per history

# (cid, read time) -> model -> the pipeline's answer
Served = dict[tuple[str, int], dict[str, Answer | None]]


@pytest.fixture
def plugin_loop(settings: Settings) -> Any:
    loop = Loop(settings.model_copy(update={"plugins": PLUGINS}))
    yield loop
    loop.close()


def history(rnd: random.Random) -> list[dict[str, Any]]:
    """Raw events from 10 days before real today to 2 days after, on whole hours (so that
    ties are common), some clients with gaps longer than the windows."""
    today = time.time_ns() // 1_000_000 // MS_PER_DAY
    # each client is active on a few days: returns after a long absence are common
    days = {cid: [today + rnd.randint(-10, 2) for _ in range(3)] for cid in CIDS}
    made = []
    for _ in range(160):
        cid = rnd.choice(CIDS)
        ts = rnd.choice(days[cid]) * MS_PER_DAY + rnd.randrange(24) * HOUR
        made.append({"cid": cid, "gender": rnd.choice(GENDERS), "ts": ts})
    # and one shopper back after 9 days (read at its return: see read_times)
    made += [{"cid": "back", "gender": g, "ts": (today - 8) * MS_PER_DAY} for g in GENDERS]
    made.append({"cid": "back", "gender": "male", "ts": back_ms(today)})
    return made


def back_ms(today: int) -> int:
    return (today + 1) * MS_PER_DAY + 5 * HOUR


def read_times(raw: list[dict[str, Any]], rnd: random.Random) -> list[int]:
    """Distinct event times from real today on (earlier read times would see day buckets that
    Redis, in real time, has already expired)."""
    today = time.time_ns() // 1_000_000 // MS_PER_DAY
    candidates = sorted({e["ts"] for e in raw if e["ts"] >= today * MS_PER_DAY} - {back_ms(today)})
    return sorted([*rnd.sample(candidates, min(READS, len(candidates))), back_ms(today)])


async def _write(client: Any, keys: Keys, shards: int, raw: list[dict[str, Any]]) -> None:
    for fields in raw:
        await client.xadd(keys.stream(shard_of(fields["cid"], shards)), fields)


def run_pipeline(
    loop: Loop, raw: list[dict[str, Any]], times: list[int], rnd: random.Random
) -> tuple[Served, list[Event]]:
    """Write the events before each read time (in a shuffled order: ids out of ts order),
    drain every model with the clock at the read time, and read the clients that have an
    event at that time; then write the rest. The served answers, and every event as stored."""
    settings, client = loop.settings, loop.client
    keys = Keys(settings.prefix)
    clock = FakeClock(times[0])
    deployment = Deployment.build(settings, clock)
    workers = [make_worker(client, m, settings, clock=clock) for m in deployment.registry]
    for worker in workers:
        loop.run(worker.ensure_groups())
    served: Served = {}
    written = 0
    ordered = sorted(raw, key=lambda e: e["ts"])
    for t in times:
        new = [e for e in ordered[written:] if e["ts"] < t]
        written += len(new)
        rnd.shuffle(new)
        loop.run(_write(client, keys, settings.shards, new))
        clock.now_ms = t
        for worker in workers:
            loop.run(worker.drain())
        cids = sorted({e["cid"] for e in raw if e["ts"] == t})
        reader = make_reader(client, settings, clock=FakeClock(t))
        for cid, answers in zip(cids, loop.run(reader.lookup_many(cids)), strict=True):
            served[(cid, t)] = answers
    loop.run(_write(client, keys, settings.shards, ordered[written:]))
    return served, loop.run(_stored(client, settings))


async def _stored(client: Any, settings: Settings) -> list[Event]:
    keys = Keys(settings.prefix)
    events = []
    for shard in range(settings.shards):
        for entry_id, fields in await client.xrange(keys.stream(shard)):
            event = parse_entry(text(entry_id), fields, settings.genders, 2**62, 0)
            assert isinstance(event, Event)
            events.append(event)
    return events


def predicted(settings: Settings, events: list[Event], served: Served) -> dict[Any, Any]:
    """(cid, t) -> the predictions for the client's first event at t (by (ts, id))."""
    models = list(Deployment.build(settings).registry)
    found: dict[tuple[str, int], dict[str, Prediction]] = {}
    for event, answers in predictions(events, models):
        key = (event.cid, event.ts)
        if key in served and key not in found:
            found[key] = answers
    return found


def _same(answer: Answer | None, prediction: Prediction, model: str) -> bool:
    gender, scores = prediction
    if answer is None or gender is None:
        return answer is None and gender is None
    if answer.gender != gender:
        return False
    if model == "recency":  # floating point: the pipeline applies in arrival order
        assert scores is not None and answer.scores is not None
        return scores.keys() == answer.scores.keys() and all(
            abs(scores[g] - answer.scores[g]) < 1e-3 for g in scores
        )
    return answer.scores == scores


def mismatches(served: Served, found: dict[Any, Any]) -> list[str]:
    problems = []
    for key, answers in served.items():
        for model, answer in answers.items():
            if not _same(answer, found[key][model], model):
                problems.append(f"{key} {model}: served {answer}, predicted {found[key][model]}")
    return problems


@pytest.mark.parametrize("seed", [1, 2])
def test_predictions_equal_the_pipelines_answers_at_each_read_time(
    plugin_loop: Loop, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    raw = history(rnd)
    times = read_times(raw, rnd)
    served, events = run_pipeline(plugin_loop, raw, times, rnd)
    assert len(events) == len(raw)
    models = {name for answers in served.values() for name in answers}
    assert models == {"last", "top", "top7d", "recency", "count", "top3d"}
    # the sample covers answers and their absence, windows included
    assert any(a["top7d"] is None and a["top"] is not None for a in served.values())
    assert sum(a["top3d"] is not None for a in served.values()) >= 3

    found = predicted(plugin_loop.settings, events, served)
    assert found.keys() == served.keys()
    assert mismatches(served, found) == []

    # a window one day too long at read time is caught
    monkeypatch.setattr(WindowRuntime, "predictor", lambda self: WindowPredictor(self.window + 1))
    mutated = mismatches(served, predicted(plugin_loop.settings, events, served))
    assert mutated
    assert all(" top7d:" in p or " top3d:" in p for p in mutated)
