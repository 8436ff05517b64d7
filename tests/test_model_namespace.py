"""A user's model class is the user's namespace (issue 17): helpers named after every public
name of the framework's model change nothing, through workers, the API, replay and
genderd.testing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from genderd import replay
from genderd.keys import Keys, shard_of
from genderd.settings import Settings
from genderd.testing import run_model

from .support.api_helpers import MakeApi, gender_url
from .support.clashing import NAMES, Clash, ClashWindow
from .support.factories import make_reader, make_worker, stopped
from .support.runtime import FakeClock, Loop

PLUGINS = ("tests.support.clashing:Clash", "tests.support.clashing:ClashWindow")
HOUR = 3_600_000
# per client: (gender, hours ago); every client has one majority gender and one newest event
SCRIPT = {
    "C1": [("male", 5), ("female", 4), ("male", 3), ("female", 1), ("female", 2)],
    "C2": [("kids", 1), ("male", 6), ("male", 2)],
    "C:3": [("female", 2)],
}


def _events(now: int) -> list[dict[str, Any]]:
    return [
        {"cid": cid, "gender": gender, "ts": now - hours * HOUR}
        for cid, rows in SCRIPT.items()
        for gender, hours in rows
    ]


def _expected() -> dict[str, dict[str, Any]]:
    """Per model and client: (gender, scores), worked out without genderd."""
    newest = {cid: min(rows, key=lambda row: row[1])[0] for cid, rows in SCRIPT.items()}
    counts = {cid: dict(Counter(g for g, _ in rows)) for cid, rows in SCRIPT.items()}
    top = {cid: max(c, key=lambda g: c[g]) for cid, c in counts.items()}
    return {
        "clash": {cid: (newest[cid], counts[cid]) for cid in SCRIPT},
        "clashwindow": {cid: (top[cid], counts[cid]) for cid in SCRIPT},
    }


def _got(answers: dict[str, Any]) -> dict[str, Any]:
    return {cid: a and (a.gender, a.scores) for cid, a in answers.items()}


def test_the_framework_names_are_all_there() -> None:
    assert {"run", "keys", "settings", "answer", "served", "client_keys"} <= NAMES
    assert {"apply_script", "result_fields", "answer_fields", "params"} <= NAMES


def test_helpers_named_like_the_framework_change_nothing(
    aio: Loop,
    sync_redis: redis.Redis,
    settings: Settings,
    clock: FakeClock,
    make_api: MakeApi,
) -> None:
    configured = settings.model_copy(update={"plugins": PLUGINS})
    keys, want = Keys(configured.prefix), _expected()
    for fields in _events(clock.now_ms):
        sync_redis.xadd(keys.stream(shard_of(fields["cid"], configured.shards)), fields)
    cids = list(SCRIPT)
    reader = make_reader(aio.client, configured, clock=clock)
    for name in ("clash", "clashwindow"):
        worker = make_worker(aio.client, name, configured, clock=clock)
        aio.run(worker.ensure_groups())
        assert aio.run(worker.drain()).applied == len(_events(0))
        model = reader.deployment.model(name)
        got = aio.run(reader.lookup_many(cids, [model]))
        assert _got({c: a[name] for c, a in zip(cids, got, strict=True)}) == want[name]
        # replay rebuilds the same answers
        again = make_worker(aio.client, name, configured, clock=clock)
        aio.run(stopped(aio.client, configured, name))
        assert aio.run(replay.replay(again, force=True)).applied == len(_events(0))
        got = aio.run(reader.lookup_many(cids, [model]))
        assert _got({c: a[name] for c, a in zip(cids, got, strict=True)}) == want[name]

    api = make_api(plugins=PLUGINS)
    for name, alias in (("clash", "clash2"), ("clashwindow", "clashwindow")):
        for cid in cids:
            body = api.get(gender_url(cid, alias)).json()
            assert (body["model"], body["gender"], body["scores"]) == (name, *want[name][cid])
    listed = {m["name"]: m for m in api.get("/v1/models").json()["models"]}
    assert listed["clash"]["aliases"] == ["clash2"]


def test_genderd_testing_runs_them_in_process_and_through_redis(clock: FakeClock) -> None:
    events, want = _events(clock.now_ms), _expected()
    for redis_ in (False, True):
        got = run_model(
            Clash, events, now_ms=clock.now_ms, genders="female,male,kids", redis=redis_
        )
        assert _got(got) == want["clash"]
    got = run_model(ClashWindow, events, now_ms=clock.now_ms, genders="female,male,kids")
    assert _got(got) == want["clashwindow"]


def test_recency_half_life_is_a_setting(monkeypatch: Any) -> None:
    from genderd.deployment import Deployment

    monkeypatch.setenv("GENDERD_RECENCY_HALF_LIFE_DAYS", "2.5")
    settings = Settings(redis_url="redis://unused.invalid")
    assert settings.recency_half_life_days == 2.5
    model = Deployment.build(settings).model("recency")
    assert model.definition.half_life_ms == 2.5 * 86_400_000  # type: ignore[attr-defined]
