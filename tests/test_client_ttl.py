"""Forgetting inactive clients (SPEC §10): every key of a client expires GENDERD_CLIENT_TTL_DAYS
after its latest applied event, set by the apply scripts once per client per day; 0 keeps
clients forever."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
import redis
from click.testing import CliRunner
from pydantic import ValidationError

from genderd.cli import main
from genderd.clock import MS_PER_DAY, client_expiry_ms
from genderd.keys import Keys, shard_of
from genderd.models import PluginError, TopWindow
from genderd.models.registry import check_models
from genderd.settings import Settings

from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop


class Top30(TopWindow):
    name = "top30d"
    window_days: ClassVar[int | None] = 30


def _apply(
    aio: Loop, clock: FakeClock, models: str | list[str], cid: str, gender: str = "male"
) -> None:
    """One event of ``cid``, applied by each of ``models``."""
    settings = aio.settings
    stream = Keys(settings.prefix).stream(shard_of(cid, settings.shards))
    aio.run(aio.client.xadd(stream, {"cid": cid, "gender": gender, "ts": str(clock.now_ms)}))
    for model in [models] if isinstance(models, str) else models:
        worker = make_worker(aio.client, model, settings, clock=clock)
        aio.run(worker.ensure_groups())
        assert aio.run(worker.drain()).applied == 1


def _result(settings: Settings, cid: str) -> str:
    return Keys(settings.prefix).result(shard_of(cid, settings.shards), cid)


def _pexpireat_calls(sync_redis: redis.Redis) -> int:
    stats: dict[str, Any] = sync_redis.info("commandstats")
    return int(stats.get("cmdstat_pexpireat", {}).get("calls", 0))


@pytest.mark.parametrize("model", ["last", "top", "top7d", "recency"])
def test_every_model_sets_the_expiry_once_a_day_and_moves_it_with_activity(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock, model: str
) -> None:
    cid = f"ttl-{model}"
    key = _result(aio.settings, cid)
    _apply(aio, clock, model, cid)
    assert sync_redis.pexpiretime(key) == client_expiry_ms(clock.now_ms, 365)
    assert sync_redis.hget(key, ":expires") == str(client_expiry_ms(clock.now_ms, 365)).encode()

    calls = _pexpireat_calls(sync_redis)
    clock.advance(MS_PER_DAY // 4)  # later the same day: nothing to set again
    _apply(aio, clock, model, cid, "female")
    assert _pexpireat_calls(sync_redis) == calls
    clock.advance(2 * MS_PER_DAY)
    _apply(aio, clock, model, cid, "kids")
    assert sync_redis.pexpiretime(key) == client_expiry_ms(clock.now_ms, 365)
    assert _pexpireat_calls(sync_redis) == calls + 1


def test_an_inactive_client_is_gone_once_its_ttl_has_passed(
    aio: Loop, sync_redis: redis.Redis
) -> None:
    """Processing clocks set in the past: Redis expires in real time, so a client last active
    400 days ago with a 365-day TTL is gone at once, one active 300 days ago is kept for the
    65 days left (and its top7d buckets, long out of the window, are gone)."""
    real_now = time.time_ns() // 1_000_000
    for days_ago, kept in [(400, False), (300, True)]:
        clock = FakeClock(real_now - days_ago * MS_PER_DAY)
        cid = f"seen-{days_ago}-days-ago"
        _apply(aio, clock, aio.registry.names(), cid)
        keys = [k for k in sync_redis.scan_iter(count=1000) if k.endswith(f":{cid}".encode())]
        [got] = aio.run(make_reader(aio.client, aio.settings, clock=clock).lookup_many([cid]))
        if kept:
            assert keys == [_result(aio.settings, cid).encode()]
            left_days = sync_redis.pttl(keys[0]) / MS_PER_DAY
            assert 64 < left_days <= 66
            assert got["top"] is not None and got["top"].gender == "male"
        else:
            assert keys == []
            assert got == dict.fromkeys(aio.registry.names())


def test_ttl_zero_keeps_clients_and_removes_an_expiry_set_before(
    aio: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    key = _result(aio.settings, "forever")
    _apply(aio, clock, "top", "forever")
    assert sync_redis.pttl(key) > 0
    aio.settings = aio.settings.model_copy(update={"client_ttl_days": 0})
    _apply(aio, clock, "top", "forever")
    assert sync_redis.pttl(key) == -1
    assert sync_redis.hget(key, ":expires") is None
    _apply(aio, clock, "top", "never-expiring")
    assert sync_redis.pttl(_result(aio.settings, "never-expiring")) == -1


def test_the_ttl_must_outlive_every_window() -> None:
    with pytest.raises(ValidationError, match="at least GENDERD_WINDOW_DAYS \\+ 1 \\(8\\)"):
        Settings(client_ttl_days=7)
    Settings(client_ttl_days=8)
    Settings(client_ttl_days=0, window_days=366)
    plugin = f"{__name__}:Top30"
    with pytest.raises(PluginError, match="'top30d': its window of 30 days needs"):
        check_models(Settings(plugins=plugin, client_ttl_days=30))
    found = check_models(Settings(plugins=plugin, client_ttl_days=31)).found
    assert Top30 in [r.cls for r in found]


def test_backfill_gives_clients_of_an_earlier_release_their_expiry(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    """Clients applied without expiry (as an earlier release did): the backfill sets the one
    their latest applied event gives, deletes those inactive for longer, leaves the rest."""
    real_now = time.time_ns() // 1_000_000
    forever = aio.settings.model_copy(update={"client_ttl_days": 0})
    aio.settings = forever
    for days_ago, cid in [(10, "recent"), (400, "stale")]:
        clock = FakeClock(real_now - days_ago * MS_PER_DAY)
        _apply(aio, clock, ["last", "top"], cid)
    # an upgraded client: top's layout-1 counters beside a result hash written by layout 1
    keys, shard = Keys(forever.prefix), shard_of("upgraded", forever.shards)
    sync_redis.hset(keys.result(shard, "upgraded"), mapping={"top": "male", "top:at": real_now})
    sync_redis.hset(keys.state(shard, "top", "upgraded"), mapping={"male": 1, "male:t": real_now})
    assert all(sync_redis.pttl(_result(forever, cid)) == -1 for cid in ("recent", "stale"))

    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4"}
    done = CliRunner().invoke(main, ["backfill-expiry"], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "2 clients given an expiry, 1 deleted (inactive for longer than 365 days)" in done.stdout
    # one line per shard, with that shard's figures (not running totals): they add up
    per_shard = [line.split() for line in done.stderr.splitlines() if line.startswith("shard")]
    assert len(per_shard) == 4
    assert sum(int(words[2]) for words in per_shard) == 2
    assert sum(int(words[6]) for words in per_shard) == 1
    recent = client_expiry_ms(real_now - 10 * MS_PER_DAY, 365)
    assert sync_redis.pexpiretime(_result(forever, "recent")) == recent
    assert not sync_redis.exists(_result(forever, "stale"))
    upgraded = client_expiry_ms(real_now, 365)
    assert sync_redis.pexpiretime(keys.result(shard, "upgraded")) == upgraded
    assert sync_redis.pexpiretime(keys.state(shard, "top", "upgraded")) == upgraded
    again = CliRunner().invoke(main, ["backfill-expiry"], env=env, catch_exceptions=False)
    assert "0 clients given an expiry, 0 deleted" in again.stdout  # the rest left as they were
    refused = CliRunner().invoke(
        main, ["backfill-expiry"], env={**env, "GENDERD_CLIENT_TTL_DAYS": "0"}
    )
    assert refused.exit_code == 2 and "kept forever" in refused.output
