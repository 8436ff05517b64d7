"""Upgrading a deployment written by an earlier release (data layouts 1 and 2) keeps every
answer and count (issue 8, SPEC §4): the new scripts and readers read the old layouts, the
first worker records the new one, and workers refuse to mix releases."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import redis

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment, open_deployment
from genderd.keys import Keys, shard_of
from genderd.layout import (
    CREATED_LAYOUT_FIELD,
    LAYOUT,
    LAYOUT_FIELD,
    LayoutError,
    claim_layout,
    oldest_layout,
)

from .support import layout1, layout2, oracle, scenario
from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop

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


def _layout2_deployment(sync_redis: redis.Redis, aio: Loop) -> None:
    """A deployment as the release of layout 2 created it."""
    keys = Keys(aio.settings.prefix)
    sync_redis.hset(
        keys.meta,
        mapping={
            "shards": aio.settings.shards,
            "created_ms": 1,
            LAYOUT_FIELD: 2,
            CREATED_LAYOUT_FIELD: 2,
        },
    )


def _first_wave(
    aio: Loop, rnd: random.Random, clock: FakeClock, apply_all: Any
) -> list[tuple[oracle.Ev, int]]:
    """The earlier release (its ``apply_all``) applies a first wave of events: (event, the
    time it was applied) each."""
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(rnd, clock.now_ms, CIDS, 80))
    )
    assert aio.run(apply_all(aio.client, aio.settings, clock.now_ms)) == 3 * len(written)
    return [(e, clock.now_ms) for e in written]


def _check_all(
    aio: Loop, processed: list[tuple[oracle.Ev, int]], read_at: int, oldest: int = 1
) -> None:
    reader = make_reader(aio.client, aio.settings, clock=FakeClock(read_at), oldest_layout=oldest)
    got = aio.run(reader.lookup_many(CIDS))
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
    processed = _first_wave(aio, rnd, clock, layout1.apply_all)
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
    aio.run(open_deployment(aio.client, aio.settings))
    assert sync_redis.hget(Keys(aio.settings.prefix).meta, LAYOUT_FIELD) == str(LAYOUT).encode()


def test_state_written_by_layout_2_is_kept_and_its_old_fields_go(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """Layout 2's result hashes (answers with their scores JSON and newest ts beside the
    counters) are read right by this release before and after its workers touch them; the
    counting models' first write of a client deletes the two fields layout 3 no longer keeps."""
    rnd = random.Random(2)
    keys = Keys(aio.settings.prefix)
    _layout2_deployment(sync_redis, aio)
    processed = _first_wave(aio, rnd, clock, layout2.apply_all)

    def result(cid: str) -> dict[bytes, bytes]:
        return sync_redis.hgetall(keys.result(shard_of(cid, aio.settings.shards), cid))

    assert all(b"top:s" in result(c) and b"top:ts" in result(c) for c in CIDS)
    before = {cid: result(cid) for cid in CIDS}
    # Read as the API of this release reads them: told the deployment's oldest layout, or not.
    deployment = Deployment.build(aio.settings)
    assert aio.run(oldest_layout(aio.client, deployment)) == 2
    for oldest in (1, 2):  # (reads later in time come after the second wave)
        _check_all(aio, processed, clock.now_ms, oldest)
    for shard in range(aio.settings.shards):
        for model in layout2.MODELS:
            sync_redis.xgroup_delconsumer(keys.stream(shard), model, "old")

    assert aio.run(claim_layout(aio.client, deployment)) == 2
    later = FakeClock(clock.now_ms + 4 * HOUR)  # the same day: top7d adds to its counters
    touched = CIDS[::2]
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(rnd, later.now_ms, touched, 60))
    )
    opened = aio.run(open_deployment(aio.client, Deployment.build(aio.settings, later)))
    for model in ("last", "top", "top7d"):
        worker = make_worker(aio.client, model, aio.settings, deployment=opened)
        assert worker.model.oldest_layout == 2
        aio.run(worker.drain())
    processed += [(e, later.now_ms) for e in written]
    # Where a model counted an event of a layout-2 client, the client's scores and newest ts
    # fields of that model are gone; elsewhere they are left as they were (and not read).
    first_day = later.now_ms // MS_PER_DAY - aio.settings.window_days + 1
    counted = {
        "top": {e.cid for e in written},
        "top7d": {e.cid for e in written if e.ts // MS_PER_DAY >= first_day},
    }
    for cid in CIDS:
        fields = result(cid)
        for model, cids in counted.items():
            old = [f"{model}:{part}".encode() for part in ("s", "ts")]
            left = {name: fields.get(name) for name in old if name in fields}
            if cid in cids:
                assert not left, (cid, model, left)
            else:
                assert left == {n: before[cid][n] for n in old if n in before[cid]}, (cid, model)
    for read_at in (later.now_ms, later.now_ms + 2 * MS_PER_DAY, later.now_ms + 8 * MS_PER_DAY):
        _check_all(aio, processed, read_at, 2)


def test_scripts_and_readers_look_for_old_layouts_only_where_they_may_exist(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    """A deployment created with this layout: its workers' top script gets one key per client
    and reads no old fields, lookups ask for no old fields, and answers are the oracle's; an
    upgraded deployment (no created layout recorded) keeps looking for layout 1."""
    deployment = aio.run(open_deployment(aio.client, Deployment.build(aio.settings, clock)))
    assert deployment.oldest_layout == 3
    assert aio.run(oldest_layout(aio.client, deployment)) == LAYOUT == 3
    written = aio.run(
        scenario.write(aio.client, aio.settings, _events(random.Random(3), clock.now_ms, CIDS, 60))
    )
    worker = make_worker(aio.client, "top", aio.settings, deployment=deployment)
    model = worker.model
    assert model.params()[0] == "3" and len(model.client_keys(0, "x", [], clock.now_ms)) == 1
    assert b"top:s" not in model.answer_fields
    aio.run(worker.ensure_groups())
    assert aio.run(worker.drain()).applied == len(written)
    [*got] = aio.run(scenario.answers(aio.client, aio.settings, aio.registry, clock, CIDS))
    for cid, answer in zip(CIDS, got, strict=True):
        want = oracle.top([e for e in written if e.cid == cid])
        top = answer["top"]
        assert (top and (top.gender, top.scores, top.last_event_ts)) == (
            want and (want.gender, want.scores, want.last_event_ts)
        )
        fields = sync_redis.hgetall(keys_result(aio, cid))
        assert not {b"top:s", b"top:ts"} & set(fields)

    sync_redis.flushall()
    _layout1_deployment(sync_redis, aio)  # no created_layout: an upgrade may have left keys
    assert aio.run(oldest_layout(aio.client, deployment)) == 1
    model = aio.run(open_deployment(aio.client, aio.settings)).model("top")
    assert model.params()[0] == "1" and len(model.client_keys(0, "x", [], clock.now_ms)) == 2
    assert {b"top:s", b"top:ts"} <= set(model.answer_fields)


def keys_result(aio: Loop, cid: str) -> str:
    return Keys(aio.settings.prefix).result(shard_of(cid, aio.settings.shards), cid)
