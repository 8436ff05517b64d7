"""Upgrading a deployment written by the previous release (data layout 1) keeps every answer
and count (issue 8, SPEC §4): the new scripts read the old layout, the first worker records
the new one, and workers refuse to mix releases."""

from __future__ import annotations

import random
import time

import pytest
import redis

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.layout import LAYOUT, LAYOUT_FIELD, LayoutError, claim_layout, may_hold_layout1

from . import layout1, oracle, scenario
from .conftest import FakeClock, Loop
from .factories import make_reader, make_worker

HOUR = 3_600_000
CIDS = [f"U{n}" for n in range(12)] + ["user:with:colons"]


def _events(rnd: random.Random, now: int, cids: list[str], n: int) -> list[dict[str, str]]:
    return [
        {
            "cid": rnd.choice(cids),
            "gender": rnd.choice(["female", "male", "kids"]),
            "ts": str(now - rnd.randint(0, 9 * 24) * HOUR),
        }
        for _ in range(n)
    ]


def _layout1_deployment(sync_redis: redis.Redis, aio: Loop) -> None:
    """A deployment as the previous release initialised it: no layout recorded."""
    keys = Keys(aio.settings.prefix)
    sync_redis.hset(keys.meta, mapping={"shards": aio.settings.shards, "created_ms": 1})


def _check_all(aio: Loop, processed: list[tuple[oracle.Ev, int]], read_at: int) -> None:
    got = aio.run(make_reader(aio.client, aio.settings, clock=FakeClock(read_at)).lookup_many(CIDS))
    window = aio.settings.window_days
    for cid, answers in zip(CIDS, got, strict=True):
        mine = [(e, at) for e, at in processed if e.cid == cid]
        want = {
            "last": oracle.last(e for e, _ in mine),
            "top": oracle.top(e for e, _ in mine),
            "top7d": oracle.top_window_per_event(mine, read_at, window),
        }
        assert not scenario.mismatches(answers, want), (cid, scenario.mismatches(answers, want))


def test_state_written_by_the_previous_release_is_kept_and_upgraded(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    rnd = random.Random(8)
    keys = Keys(aio.settings.prefix)
    _layout1_deployment(sync_redis, aio)
    processed: list[tuple[oracle.Ev, int]] = []

    # The previous release applies a first wave.
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(rnd, clock.now_ms, CIDS, 80))
    )
    assert aio.run(layout1.apply_all(aio.client, aio.settings, clock.now_ms)) == 3 * len(written)
    processed += [(e, clock.now_ms) for e in written]
    legacy = set(sync_redis.scan_iter(f"{keys.prefix}:*:m:top:*"))
    assert len(legacy) == len(CIDS)
    # This release reads layout 1 as it is, before any worker of it ran.
    _check_all(aio, processed, clock.now_ms)
    # the old workers stop cleanly (their consumers leave the groups)
    for shard in range(aio.settings.shards):
        for model in layout1.MODELS:
            sync_redis.xgroup_delconsumer(keys.stream(shard), model, "old")

    # The first worker of this release records the layout; then a second wave, a day later,
    # touches half of the clients.
    deployment = Deployment.build(aio.settings)
    assert aio.run(claim_layout(aio.client, deployment)) == 1
    assert sync_redis.hget(keys.meta, LAYOUT_FIELD) == str(LAYOUT).encode()
    later = FakeClock(clock.now_ms + MS_PER_DAY + 3 * HOUR)
    touched = CIDS[::2]
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(rnd, later.now_ms, touched, 60))
    )
    for model in aio.registry:
        worker = make_worker(aio.client, model, aio.settings, clock=later)
        aio.run(worker.ensure_groups())  # (recency is new in this release)
        aio.run(worker.drain())
    processed += [(e, later.now_ms) for e in written]
    for read_at in (later.now_ms, later.now_ms + 2 * MS_PER_DAY, later.now_ms + 8 * MS_PER_DAY):
        _check_all(aio, processed, read_at)
    # The touched clients' old counters moved into their result hashes; the others' wait.
    moved = {e.cid for e in written}
    remaining = set(sync_redis.scan_iter(f"{keys.prefix}:*:m:top:*"))
    assert remaining == {
        keys.state(shard_of(c, aio.settings.shards), "top", c).encode()
        for c in CIDS
        if c not in moved
    }
    for cid in moved:
        fields = sync_redis.hgetall(keys.result(shard_of(cid, aio.settings.shards), cid))
        assert any(name.startswith(b"top:n:") for name in fields), cid


def test_a_worker_refuses_a_newer_layout_and_an_upgrade_under_running_old_workers(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    keys = Keys(aio.settings.prefix)
    settings = aio.settings.model_copy(update={"stall_after_s": 0.3})
    deployment = Deployment.build(settings)
    _layout1_deployment(sync_redis, aio)
    aio.run(scenario.write(aio.client, settings, _events(random.Random(1), clock.now_ms, CIDS, 5)))
    aio.run(layout1.apply_all(aio.client, settings, clock.now_ms, consumer="old-host-1"))
    # an old worker just read: it is consuming
    with pytest.raises(LayoutError, match="old-host-1"):
        aio.run(claim_layout(aio.client, deployment))
    assert sync_redis.hget(keys.meta, LAYOUT_FIELD) is None  # nothing written
    time.sleep(0.4)  # the old worker stopped (killed: its consumer stays, idle)
    assert aio.run(claim_layout(aio.client, deployment)) == 1
    assert aio.run(claim_layout(aio.client, deployment)) == LAYOUT  # recorded once

    sync_redis.hset(keys.meta, LAYOUT_FIELD, LAYOUT + 1)
    with pytest.raises(LayoutError, match="newer genderd"):
        aio.run(claim_layout(aio.client, deployment))


def test_a_new_deployment_records_the_layout_it_is_written_in(
    aio: Loop, sync_redis: redis.Redis
) -> None:
    from genderd.deployment import open_deployment

    aio.run(open_deployment(aio.client, aio.settings))
    assert sync_redis.hget(Keys(aio.settings.prefix).meta, LAYOUT_FIELD) == str(LAYOUT).encode()


def test_top_passes_layout1_keys_only_where_they_may_exist(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """A deployment created with layout 2 has no layout-1 counters: its workers' top script
    gets one key per client, and answers as the oracle; an upgraded one keeps passing them."""
    from genderd.deployment import open_deployment

    deployment = aio.run(open_deployment(aio.client, aio.settings))
    assert aio.run(may_hold_layout1(aio.client, deployment)) is False
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(random.Random(3), clock.now_ms, CIDS, 60))
    )
    worker = make_worker(aio.client, "top", aio.settings, clock=clock)
    aio.run(worker.check_layout1())
    model = worker.model
    assert not model.layout1 and len(model.client_keys(0, "x", [], clock.now_ms)) == 1
    aio.run(worker.ensure_groups())
    assert aio.run(worker.drain()).applied == len(written)
    [*got] = aio.run(scenario.answers(aio.client, aio.settings, aio.registry, clock, CIDS))
    for cid, answer in zip(CIDS, got, strict=True):
        want = oracle.top([e for e in written if e.cid == cid])
        top = answer["top"]
        assert (top and (top.gender, top.scores)) == (want and (want.gender, want.scores))

    sync_redis.flushall()
    _layout1_deployment(sync_redis, aio)  # no created_layout: an upgrade may have left keys
    assert aio.run(may_hold_layout1(aio.client, deployment)) is True
    aio.run(worker.check_layout1())
    assert model.layout1 and len(model.client_keys(0, "x", [], clock.now_ms)) == 2
