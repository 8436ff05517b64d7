"""`genderd status` and `genderd dead` agree on each model's dead letters (issue 19): after a
purge, after the dead-letter stream's cap trimmed old ones, after a re-drive without
`--model`."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis

from genderd import processor, status
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of

from .support.api_helpers import drain
from .support.commands import cli
from .support.runtime import FakeClock, Loop

KEYS = Keys()


def _status_dead(aio: Loop, clock: FakeClock) -> Counter[str]:
    models = aio.run(status.collect(aio.client, Deployment.build(aio.settings, clock)))
    return Counter({m.name: m.dead for m in models if m.dead})


def _listed_dead(redis_url: str, settings: Any) -> Counter[str]:
    rows = json.loads(cli(redis_url, settings, "dead", "list", "--json", "--by-model").output)
    counts: Counter[str] = Counter()
    for row in rows:
        counts[row["model"]] += row["count"]
    return counts


def _write_bad(sync_redis: redis.Redis, settings: Any, n: int, gender: str = "robot") -> None:
    for i in range(n):
        cid = f"C{i}"
        stream = KEYS.stream(shard_of(cid, settings.shards))
        sync_redis.xadd(stream, {"cid": cid, "gender": gender, "ts": str(wall_clock_ms() - 9)})


def test_purge_lowers_the_counters(aio: Loop, sync_redis: redis.Redis, redis_url: str) -> None:
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    _write_bad(sync_redis, settings, 6)
    drain(aio.loop, aio.client, settings, clock)
    every = dict.fromkeys(aio.registry.names(), 6)
    assert _status_dead(aio, clock) == _listed_dead(redis_url, settings) == every

    purged = cli(redis_url, settings, "dead", "purge", "--model", "top", "--yes")
    assert "deleted 6 dead letters" in purged.output
    assert _status_dead(aio, clock) == _listed_dead(redis_url, settings)
    assert "top" not in _status_dead(aio, clock)
    shard = shard_of("C0", settings.shards)
    purged = cli(redis_url, settings, "dead", "purge", "--shard", str(shard), "--yes")
    assert purged.exit_code == 0
    assert _status_dead(aio, clock) == _listed_dead(redis_url, settings)
    assert cli(redis_url, settings, "dead", "purge", "--yes").exit_code == 0
    assert _status_dead(aio, clock) == _listed_dead(redis_url, settings) == Counter()


def test_the_cap_trims_old_dead_letters_and_lowers_the_counters(
    aio: Loop, sync_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    monkeypatch.setattr(processor, "DEAD_LETTER_MAXLEN", 5)
    _write_bad(sync_redis, settings, 80)
    drain(aio.loop, aio.client, settings, clock)
    lengths = [sync_redis.xlen(KEYS.dead(shard)) for shard in range(settings.shards)]
    assert lengths == [5] * settings.shards  # every shard had more than five
    listed = _listed_dead(redis_url, settings)
    assert sum(listed.values()) == 5 * settings.shards
    assert _status_dead(aio, clock) == listed
    # the newest stay: the last model to run wrote them
    last = list(aio.registry.names())[-1]
    assert listed == Counter({last: 5 * settings.shards})


def test_redrive_without_model_lowers_the_counters(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    settings, clock = aio.settings, FakeClock(wall_clock_ms())
    _write_bad(sync_redis, settings, 3, gender="robot")
    _write_bad(sync_redis, settings, 2, gender="bad gender")
    drain(aio.loop, aio.client, settings, clock)
    with_robot = ",".join((*settings.genders, "robot"))
    redriven = cli(redis_url, settings, "dead", "redrive", genders=with_robot)
    assert redriven.exit_code == 1  # the "bad gender" ones are left
    assert f"re-drove 3 entries; deleted {3 * len(aio.registry)}" in redriven.output
    assert _status_dead(aio, clock) == _listed_dead(redis_url, settings)
    assert _status_dead(aio, clock) == dict.fromkeys(aio.registry.names(), 2)
