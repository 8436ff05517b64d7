"""The champion (SPEC §14): it passes to a model only on evidence, lookups that name no model
answer from it and name it, every change is recorded, equal models never take over, and an
operator can pin and unpin it."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import pytest
import redis
from click.testing import CliRunner

from genderd.cli import main
from genderd.deployment import Deployment
from genderd.evaluation.report import Interval
from genderd.grading import champion
from genderd.grading.live import Window, score
from genderd.keys import Keys, shard_of
from genderd.settings import Settings
from genderd.transport import Links

from .support.api_helpers import ApiClient
from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

MINUTE = 60_000
PLUGINS = ("tests.support.pymodels:Count", "tests.support.pymodels:CountToo")


# -- the decision, on windows made by hand ---------------------------------------------------
def window(models: dict[str, Sequence[tuple[int, int, int]]]) -> Window:
    """A window whose model ``m`` has the counts ``models[m][i]`` in client group ``i``."""
    grades = {
        name: {(0, str(i)): counts for i, counts in enumerate(rows)}
        for name, rows in models.items()
    }
    return Window(86_400, 0, 86_400_000, grades)


def test_identical_models_never_take_over_from_each_other() -> None:
    rnd = random.Random(14)
    settings = Settings(champion_min_events=1)
    for _ in range(100):
        rows = []
        for _ in range(rnd.randint(50, 200)):
            events = rnd.randint(1, 40)
            predicted = rnd.randint(0, events)
            rows.append((events, predicted, rnd.randint(0, predicted)))
        found = window({"top": rows, "twin": rows})
        for holder, other in (("top", "twin"), ("twin", "top")):
            grades = score(found, [holder, other], holder)
            versus = grades.grade(other).versus
            assert versus is not None and versus.interval == Interval(0.0, 0.0)
            assert champion.decide(grades, settings).winner is None


def _groups(rnd: random.Random, groups: int, edge: float) -> tuple[list[tuple[int, int, int]], ...]:
    """Per group: the counts of a champion right 60% of the time and of a challenger right
    ``edge`` more often, on the same events."""
    held, challenger = [], []
    for _ in range(groups):
        events = rnd.randint(50, 150)
        right = sum(rnd.random() < 0.6 for _ in range(events))
        better = min(events, right + round(edge * events))
        held.append((events, events, right))
        challenger.append((events, events, better))
    return held, challenger


def test_a_better_model_takes_over_only_with_enough_evidence() -> None:
    rnd = random.Random(26)
    held, better = _groups(rnd, 64, 0.10)
    grades = score(window({"top": held, "last": better}), ["top", "last"], "top")
    decision = champion.decide(grades, Settings(champion_min_events=1_000))
    assert decision.winner == "last" and decision.evidence is not None
    assert decision.evidence["interval"][0] > 0 and decision.evidence["difference"] > 0.09
    # too few events, or too few clients: it stays
    assert champion.decide(grades, Settings(champion_min_events=10**7)).winner is None
    few = score(window({"top": held[:40], "last": better[:40]}), ["top", "last"], "top")
    assert few.grade("last").clusters == 40
    assert champion.decide(few, Settings(champion_min_events=1)).winner is None


def test_the_surest_of_several_challengers_wins_and_a_worse_one_never() -> None:
    rnd = random.Random(3)
    held, better = _groups(rnd, 80, 0.10)
    _, slightly = _groups(random.Random(3), 80, 0.04)
    worse = [(e, p, max(0, c - e // 5)) for e, p, c in held]
    found = window({"top": held, "last": better, "top7d": slightly, "recency": worse})
    models = ["top", "last", "top7d", "recency"]
    decision = champion.decide(score(found, models, "top"), Settings(champion_min_events=1))
    assert decision.winner == "last"
    assert "recency" not in decision.beaten_by
    assert score(found, models, "top").grade("last").versus.challengers == 3  # type: ignore[union-attr]


# -- on real workers, through the API ----------------------------------------------------------
def drifting(clients: int, now: int) -> list[tuple[str, str, int]]:
    """Clients whose first 10 events are of one department and next 10 of another: `last`
    is right on 18 of 20, `top` on about 9."""
    events = []
    for c in range(clients):
        first, then = ("female", "male") if c % 2 else ("male", "female")
        for k in range(20):
            events.append((f"d{c}", first if k < 10 else then, now - (20 - k) * MINUTE))
    return events


def write(
    sync_redis: redis.Redis, settings: Settings, events: Sequence[tuple[str, str, int]]
) -> None:
    keys = Keys(settings.prefix)
    for cid, gender, ts in sorted(events, key=lambda e: e[2]):
        stream = keys.stream(shard_of(cid, settings.shards))
        sync_redis.xadd(stream, {"cid": cid, "gender": gender, "ts": ts})


def process(aio: Loop, settings: Settings, clock: FakeClock, models: Sequence[str]) -> None:
    deployment = Deployment.build(settings, clock)
    for model in models:
        worker = make_worker(aio.client, model, settings, clock=clock, deployment=deployment)
        aio.run(worker.ensure_groups())
        aio.run(worker.drain())


def checked_by_hand(api: ApiClient) -> ApiClient:
    """``api`` with its background check stopped: the test checks when it says."""
    api.run(api.app.state.champion.stop())
    return api


def step(api: ApiClient) -> champion.Champion:
    """One check (the lock taken away first: the test does not wait for the interval)."""
    keeper = api.app.state.champion
    api.run(api.app.state.api.connected().client.delete(keeper.api.serving.keys.champion_lock))
    return api.run(keeper.step())  # type: ignore[no-any-return]


def test_the_champion_passes_to_a_better_model_and_lookups_follow_it(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, make_api
) -> None:
    settings = aio.settings.model_copy(update={"champion_min_events": 2_000})
    api = checked_by_hand(make_api(default_model="best", champion_min_events=2_000))
    write(sync_redis, settings, drifting(320, clock.now_ms))
    process(aio, settings, clock, ["last", "top"])
    before = api.get("/v1/clients/d1/gender")
    assert before.status_code == 200 and before.json()["model"] == "top"

    after = step(api)
    assert after.model == "last" and after.since_ms == clock.now_ms and not after.pinned
    assert after.evidence is not None and after.evidence["from"] == "top"
    assert after.evidence["difference"] > 0.3 and after.evidence["interval"][0] > 0.3
    assert after.evidence["client_groups"] >= 50 and after.evidence["events"] >= 2_000

    answer = api.get("/v1/clients/d1/gender")
    assert answer.json()["model"] == "last" and answer.json()["gender"] == "male"
    batch = api.post("/v1/lookup", json={"cids": ["d1", "d2"]})
    assert batch.json()["model"] == "last"
    models = api.get("/v1/models?window=24h").json()
    assert models["champion"]["model"] == "last" and models["champion"]["served_by_default"]
    last = next(m for m in models["models"] if m["name"] == "last")
    assert last["grading"]["events"] == 6_400 and last["grading"]["correct"] == 320 * 18
    assert api.get("/v1/models?window=2m").status_code == 422
    assert 'genderd_champion{model="last"} 1.0' in api.get("/metrics").text

    # the change is in `genderd champion`, with its evidence
    env = {"GENDERD_REDIS_URL": settings.redis_url or "", "GENDERD_SHARDS": str(settings.shards)}
    shown = CliRunner().invoke(main, ["champion"], env=env, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "champion: last since" in shown.output and "change  top -> last" in shown.output
    # and it stays: `top` is not better in turn
    assert step(api).model == "last"


def test_a_pinned_champion_stays_and_says_what_it_is_behind(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, make_api
) -> None:
    settings = aio.settings
    write(sync_redis, settings, drifting(320, clock.now_ms))
    process(aio, settings, clock, ["last", "top"])
    env = {"GENDERD_REDIS_URL": settings.redis_url or "", "GENDERD_SHARDS": str(settings.shards)}
    runner = CliRunner()
    pinned = runner.invoke(main, ["champion", "--pin", "model2"], env=env)  # top's alias
    assert pinned.exit_code == 0 and "champion: top" in pinned.output and "pinned" in pinned.output
    api = checked_by_hand(make_api(default_model="best", champion_min_events=2_000))
    held = step(api)
    assert held.model == "top" and held.pinned and held.behind == "last"
    assert 'genderd_champion_behind{model="last"} 1.0' in api.get("/metrics").text
    assert runner.invoke(main, ["champion", "--unpin"], env=env).exit_code == 0
    assert step(api).model == "last"
    history = json.loads(runner.invoke(main, ["champion", "--json"], env=env).output)["history"]
    assert [change["what"] for change in history] == ["change", "unpin", "pin"]


@pytest.fixture
def twins(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"plugins": PLUGINS, "champion_start": "count", "champion_min_events": 1}
    )


def test_identical_models_on_real_workers_never_take_over_in_100_checks(
    twins: Settings, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    loop = Loop(twins)
    try:
        rnd = random.Random(9)
        events = [
            (f"t{rnd.randrange(300)}", rnd.choice(("female", "male")), clock.now_ms - k * 1000)
            for k in range(4_000)
        ]
        write(sync_redis, twins, events)
        process(loop, twins, clock, ["count", "count-too"])
        deployment = Deployment.build(twins, clock)
        links = Links.over(loop.client)
        for _ in range(100):
            sync_redis.delete(deployment.keys.champion_lock)
            held = loop.run(champion.check(links, deployment, set(), clock.now_ms))
            assert held is not None and held.model == "count" and held.behind is None
        grades = loop.run(champion.read_champion(links, deployment))
        assert grades.changes == 0
    finally:
        loop.close()
