"""``--order arrival`` predicts what the live workers served (SPEC §11, §14): events written to
the real server one at a time, in arrival order, with explicit entry ids (about a third of them
late: hours or days after their ts, some older than a window when they arrive), each applied by
every model's worker with its clock at the entry's arrival; before each one, the live answer for
its client is read at the event's time. ``predictions(..., order="arrival")`` over the streams
as stored (read by the evaluation's own reader) equals those answers for every built-in model, a
PythonModel whose answer depends on the order (``streak``), a TopWindow plug-in and the
Lua-backed plug-in of docs/lua-models.md (``examples/lua-model``'s ``first``, with its
``predictor()``); time order does not, and a window read without the service's clock is
caught.

The live answer of ``last``, ``top`` and the Python models is the stored answer the API serves.
A windowed model's is what SPEC §14 grades: the sum of the day buckets D-W+1 .. D of the event's
time that exist when the worker processes it (Redis hides a bucket from its EXPIREAT on; the
history lies ahead of real time, so each bucket's expiry time is compared with the worker's
clock, as Redis would at that time)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.evaluation import ARRIVAL, TIME, InputSummary, predictions, stream_chunks
from genderd.evaluation.predictors import ArrivalWindowPredictor, Prediction
from genderd.events import Event
from genderd.keys import Keys, shard_of
from genderd.models.base import Answer
from genderd.settings import Settings

from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop, tomorrow_noon_ms

PLUGINS = (
    "tests.support.pymodels:Count",
    "tests.support.pymodels:Top3",
    "tests.support.pymodels:Streak",
    "genderd_first.model:First",
)
#: the Lua-backed plug-in of docs/lua-models.md (importable as if installed)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lua-model"
WINDOWS = {"top7d": 7, "top3d": 3}
GENDERS = ("female", "kids", "male")
CIDS = [f"a{n}" for n in range(6)] + ["a:6"]
EVENTS = 170
MINUTE, HOUR = 60_000, 3_600_000
#: the arrival clock's steps between two entries
STEPS_MS = (1, MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR)
#: how late an event arrives after its time (negative: a producer's clock a little ahead)
DELAYS_MS = (0, 0, 0, 20_000, 5 * HOUR, 20 * HOUR, 2 * MS_PER_DAY, 4 * MS_PER_DAY, 8 * MS_PER_DAY)
AHEAD_MS = 4 * MINUTE  # under GENDERD_MAX_FUTURE_MS (5 min)

# entry id -> model -> (gender, scores) served just before the entry was applied
Served = dict[str, dict[str, Prediction]]


@pytest.fixture
def plugin_loop(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    loop = Loop(settings.model_copy(update={"plugins": PLUGINS}))
    yield loop
    loop.close()


def arrivals(rnd: random.Random) -> list[Event]:
    """Events in arrival order over about two weeks from tomorrow on (ahead of real time, so
    that no bucket's EXPIREAT fires during the test), ids at their arrival; ts on whole hours
    half of the time (ties in ts are common)."""
    arrival = tomorrow_noon_ms()
    made = []
    for n in range(EVENTS):
        arrival += rnd.choice(STEPS_MS)
        if rnd.random() < 0.05:
            ts = arrival + rnd.randrange(AHEAD_MS)
        else:
            ts = arrival - rnd.choice(DELAYS_MS) - rnd.randrange(MINUTE)
            if rnd.random() < 0.5:
                ts -= ts % HOUR
        made.append(Event(f"{arrival}-{n % 3}", rnd.choice(CIDS), rnd.choice(GENDERS), ts))
    return made


def _top(counts: dict[str, int], newest: dict[str, int]) -> Prediction:
    if not counts:
        return None, None
    best = max(counts, key=lambda g: (counts[g], newest[g], [-ord(c) for c in g]))
    return best, counts


async def _window(client: Any, keys: Keys, shard: int, model: str, event: Event) -> Prediction:
    """The sum of the client's buckets of days D-W+1 .. D (D: the event's day) that exist at
    the worker's clock (the event's arrival)."""
    now, day = int(event.id.split("-")[0]), event.ts // MS_PER_DAY
    counts: dict[str, int] = {}
    newest: dict[str, int] = {}
    for d in range(day - WINDOWS[model] + 1, day + 1):
        key = keys.day_bucket(shard, model, d, event.cid)
        expires = await client.pexpiretime(key)
        if expires == -2 or 0 <= expires <= now:  # no such bucket, or expired by then
            continue
        for name, value in (await client.hgetall(key)).items():
            gender, _, newest_field = name.decode().partition(":")
            if newest_field:
                newest[gender] = max(newest.get(gender, 0), int(value))
            else:
                counts[gender] = counts.get(gender, 0) + int(value)
    return _top(counts, newest)


def _served(answer: Answer | None) -> Prediction:
    if answer is None:
        return None, None
    scores = answer.scores if isinstance(answer.scores, dict) else None
    return answer.gender, scores


def run_live(loop: Loop, events: list[Event]) -> Served:
    """Write each event with its id, read its client's answers just before the workers apply
    it (at the event's time), then apply it with every worker's clock at its arrival."""
    settings, client = loop.settings, loop.client
    keys = Keys(settings.prefix)
    clock = FakeClock(0)
    deployment = Deployment.build(settings, clock)
    workers = [make_worker(client, m, settings, clock=clock) for m in deployment.registry]
    for worker in workers:
        loop.run(worker.ensure_groups())
    plain = [m for m in deployment.registry if m.name not in WINDOWS]
    served: Served = {}
    for event in events:
        shard = shard_of(event.cid, settings.shards)
        reader = make_reader(client, settings, clock=FakeClock(event.ts))
        (answers,) = loop.run(reader.lookup_many([event.cid], plain))
        served[event.id] = {name: _served(answer) for name, answer in answers.items()}
        for model in WINDOWS:
            served[event.id][model] = loop.run(_window(client, keys, shard, model, event))
        fields = {"cid": event.cid, "gender": event.gender, "ts": event.ts}
        loop.run(client.xadd(keys.stream(shard), fields, id=event.id))
        clock.now_ms = int(event.id.split("-")[0])
        for worker in workers:
            assert loop.run(worker.poll(shard)).handled == 1
    return served


async def _stored(client: Any, settings: Settings, now_ms: int) -> list[Event]:
    """The streams as the evaluation reads them (validated at ``now_ms``, merged by id)."""
    deployment = Deployment.build(settings, FakeClock(now_ms))
    summary = InputSummary()
    chunks = stream_chunks(client, deployment, summary=summary)
    events = [event async for chunk in chunks for event in chunk]
    assert summary.invalid == 0
    return events


def _same(served: Prediction, predicted: Prediction, model: str) -> bool:
    if served[0] != predicted[0]:
        return False
    if model == "recency" and served[1] and predicted[1]:  # floating point, as stored
        return served[1].keys() == predicted[1].keys() and all(
            abs(served[1][g] - predicted[1][g]) < 1e-3 for g in served[1]
        )
    return served[1] == predicted[1]


def mismatches(served: Served, events: list[Event], order: str) -> list[str]:
    models = list(Deployment.build(Settings(genders=",".join(GENDERS), plugins=PLUGINS)).registry)
    found = {event.id: answers for event, answers in predictions(events, models, order=order)}
    assert found.keys() == served.keys()
    return [
        f"{entry} {model}: served {answer}, predicted {found[entry][model]}"
        for entry, answers in served.items()
        for model, answer in answers.items()
        if not _same(answer, found[entry][model], model)
    ]


@pytest.mark.parametrize("seed", [3, 4])
def test_arrival_order_predicts_what_the_workers_served(
    plugin_loop: Loop, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    events = arrivals(rnd)
    served = run_live(plugin_loop, events)
    stored = plugin_loop.run(_stored(plugin_loop.client, plugin_loop.settings, 2**62))
    assert [e.id for e in stored] == [e.id for e in events]  # the arrival order, merged
    models = {name for answers in served.values() for name in answers}
    assert models == {"last", "top", "top7d", "recency", "count", "top3d", "streak", "first"}

    # the history is one where the order matters: late events, windows, a streak that forms
    newest: dict[str, int] = {}
    late = 0
    for event in events:
        late += event.ts < newest.get(event.cid, -1)
        newest[event.cid] = max(newest.get(event.cid, -1), event.ts)
    assert late >= EVENTS // 5
    assert sum(a["top3d"][0] is None and a["top"][0] is not None for a in served.values()) >= 5
    assert sum(a["streak"][0] is not None for a in served.values()) >= 5

    assert mismatches(served, stored, ARRIVAL) == []

    # time order gives other answers than the workers served (so the comparison can fail) ...
    in_time = mismatches(served, stored, TIME)
    for model in ("last", "streak", "first"):
        assert any(f" {model}:" in p for p in in_time), model
    # ... and so does a window read without the service's clock (expired buckets counted)
    monkeypatch.setattr(ArrivalWindowPredictor, "clock", lambda self, state, now: None)
    assert any(" top3d:" in p or " top7d:" in p for p in mismatches(served, stored, ARRIVAL))
