"""Models written in Python (SPEC §7): identify_gender applied exactly once per event under
competing workers, crashes and stale batches; the model's failures are dead letters; plug-ins
load from GENDERD_PLUGINS; a TopWindow subclass answers like the oracle with its window."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from genderd import streams
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.models import PluginError
from genderd.models.registry import discover
from genderd.processor import Processor
from genderd.settings import Settings
from genderd.transport import Links

from .support import oracle, scenario
from .support.factories import make_reader, make_worker, stopped
from .support.runtime import FakeClock, Loop
from .test_deadletter import dead_entries

PLUGINS = "tests.support.pymodels:Count,tests.support.pymodels:Picky,tests.support.pymodels:Top3"
CIDS = ["P1", "P2", "P:3", "odd"]
HOUR = 3_600_000


@pytest.fixture
def py_loop(settings: Settings) -> Loop:
    loop = Loop(settings.model_copy(update={"plugins": tuple(PLUGINS.split(","))}))
    yield loop  # type: ignore[misc]
    loop.close()


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_each_event_reaches_identify_gender_once_under_any_schedule(
    py_loop: Loop, sync_redis: redis.Redis, clock: FakeClock, data: st.DataObject
) -> None:
    sync_redis.flushall()
    events = data.draw(
        st.lists(
            st.builds(
                lambda cid, gender, hours: {
                    "cid": cid,
                    "gender": gender,
                    "ts": str(clock.now_ms - hours * HOUR),
                },
                st.sampled_from(CIDS),
                st.sampled_from(["female", "male"]),
                st.integers(0, 5 * 24),
            ),
            max_size=40,
        ),
        label="events",
    )
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    consumers = data.draw(st.integers(1, 3), label="consumers")
    settings, registry = py_loop.settings, py_loop.registry
    written = py_loop.run(scenario.write(py_loop.client, settings, events))
    py_loop.run(
        scenario.run_schedule(
            py_loop.client, settings, registry, clock, rnd, consumers, rnd.randint(0, 60)
        )
    )
    assert py_loop.run(scenario.pending_and_lag(py_loop.client, settings)) == (0, 0)
    reader = make_reader(py_loop.client, settings, clock=clock)
    answers = py_loop.run(reader.lookup_many(CIDS, [registry.get("count"), registry.get("top3d")]))
    per_client = Counter(e.cid for e in written)
    for cid, got in zip(CIDS, answers, strict=True):
        n = per_client[cid]
        count = got["count"]
        if n == 0:
            assert count is None
        else:
            assert count is not None and count.scores == {"n": n}, (cid, n, count)
            assert count.gender == ("female" if n % 2 == 0 else "male")
            assert count.last_event_ts == max(e.ts for e in written if e.cid == cid)
        want = oracle.top_window(
            [e for e in written if e.cid == cid], clock.now_ms, clock.now_ms, 3
        )
        top3 = got["top3d"]
        if want is None:
            assert top3 is None, cid
        else:
            assert top3 is not None and (top3.gender, top3.scores) == (want.gender, want.scores)


def test_the_models_failures_are_dead_letters_and_leave_the_state_as_it_was(
    py_loop: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = py_loop.settings
    keys = Keys(settings.prefix)
    shard = shard_of("P1", settings.shards)
    for gender in ("female", "kids", "male"):
        sync_redis.xadd(keys.stream(shard), {"cid": "P1", "gender": gender, "ts": clock.now_ms})
    sync_redis.xadd(
        keys.stream(shard_of("odd", settings.shards)),
        {"cid": "odd", "gender": "male", "ts": clock.now_ms},
    )
    worker = make_worker(py_loop.client, "picky", settings, clock=clock)
    py_loop.run(worker.ensure_groups())
    outcome = py_loop.run(worker.drain())
    assert (outcome.applied, outcome.dead, outcome.failed) == (2, 2, 0)
    state = sync_redis.hget(keys.result(shard, "P1"), "picky:j")
    assert state == b'{"seen":["female","male"]}'  # the kids event changed nothing
    assert sync_redis.hget(keys.result(shard, "P1"), "picky") == b"male"
    assert not sync_redis.exists(keys.result(shard_of("odd", settings.shards), "odd"))
    details = sorted((row["_reason"], row["_detail"]) for row in dead_entries(sync_redis, settings))
    assert details == [
        ("model_error", "RuntimeError: no kids here"),
        (
            "model_error",
            "identify_gender answered 'unicorn', not one of the configured genders "
            f"({', '.join(settings.genders)})",
        ),
    ]


def test_plugins_load_and_refuse_mistakes_in_one_line() -> None:
    found = discover(PLUGINS.split(",")).found
    assert {cls.name for cls in found} >= {"count", "picky", "top3d"}
    for plugins, message in [
        (["tests.support.pymodels:Nope"], "has no 'Nope'"),
        (["tests.nowhere:Count"], "cannot import 'tests.nowhere'"),
        (["genderd.settings:Settings"], "is not a genderd model class"),
        (
            ["tests.support.pymodels:Count", "tests.support.pymodels:Count"],
            None,
        ),  # the same class twice: ok
    ]:
        if message is None:
            discover(plugins)
            continue
        with pytest.raises(PluginError, match=message):
            discover(plugins)
    with pytest.raises(ValueError, match="module:Class"):
        Settings(plugins="just_a_module")
    assert Deployment.build(Settings(plugins=PLUGINS)).model("top3d").window == 3


class _Interleaving:
    """A transport that runs ``then`` once, right after the first read it serves: another
    worker commits between this one's read of the states and its commit."""

    def __init__(self, real: Any, then: Any) -> None:
        self.real, self.then = real, then

    async def _after(self, reply: Any) -> Any:
        if self.then is not None:
            then, self.then = self.then, None
            await then()
        return reply

    async def execute_many(self, calls: Any) -> Any:
        return await self._after(await self.real.execute_many(calls))

    async def call(self, script: Any, keys: Any, args: Any) -> Any:
        return await self._after(await self.real.call(script, keys, args))


def test_a_commit_over_a_state_another_worker_changed_is_computed_again(
    py_loop: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    settings = py_loop.settings
    keys = Keys(settings.prefix)
    shard = shard_of("P1", settings.shards)
    stream = keys.stream(shard)
    deployment = Deployment.build(settings, clock)
    model = deployment.model("count")
    py_loop.run(streams.ensure_group(py_loop.client, stream, "count"))
    for _ in range(2):
        sync_redis.xadd(stream, {"cid": "P1", "gender": "male", "ts": clock.now_ms})
    first = py_loop.run(streams.read_new(py_loop.client, stream, "count", "A", 1, None))
    second = py_loop.run(streams.read_new(py_loop.client, stream, "count", "B", 1, None))
    transport = Links.over(py_loop.client).fast
    b = Processor(deployment, transport, model, "B")
    a = Processor(
        deployment, _Interleaving(transport, lambda: b.process(shard, second)), model, "A"
    )
    assert py_loop.run(a.process(shard, first)).applied == 1
    assert sync_redis.hget(keys.result(shard, "P1"), "count:j") == b'{"n":2}'
    assert sync_redis.hget(keys.result(shard, "P1"), "count:v") == b"2"


def test_replay_rebuilds_a_python_model(
    py_loop: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    from genderd import replay

    settings = py_loop.settings
    keys = Keys(settings.prefix)
    for n in range(5):
        cid = f"P{n % 2}"
        sync_redis.xadd(
            keys.stream(shard_of(cid, settings.shards)),
            {"cid": cid, "gender": "male", "ts": clock.now_ms - n},
        )
    worker = make_worker(py_loop.client, "count", settings, clock=clock)
    py_loop.run(worker.ensure_groups())
    py_loop.run(worker.drain())
    reader = make_reader(py_loop.client, settings, clock=clock)
    model = [py_loop.registry.get("count")]
    before = py_loop.run(reader.lookup_many(["P0", "P1"], model))
    assert [a["count"].scores for a in before] == [{"n": 3}, {"n": 2}]  # type: ignore[union-attr]
    again = make_worker(py_loop.client, "count", settings, clock=clock)
    py_loop.run(stopped(py_loop.client, settings, "count"))
    assert py_loop.run(replay.replay(again, force=True)).applied == 5
    assert py_loop.run(reader.lookup_many(["P0", "P1"], model)) == before
