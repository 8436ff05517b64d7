"""Switching a model off and retiring it are operator decisions (issue 27, finding 5):
``genderd up`` with ``GENDERD_MODELS`` switches nothing off (a model it leaves out may run
elsewhere, and its dead worker must show STALLED); ``genderd models off|on|retire`` do it,
refused while workers of the model are alive."""

from __future__ import annotations

import json
import logging
import time

import pytest
import redis
from click.testing import Result

from genderd import catalog, up
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.pause import heartbeat
from genderd.settings import Settings
from genderd.transport import Links

from .support.api_helpers import drain
from .support.commands import cli as plain_cli
from .support.factories import stopped
from .support.runtime import FakeClock, Loop

KEYS = Keys()
DAY = 86_400_000
TOP30 = ("tests.support.catalogplugins:Top30",)


def cli(redis_url: str, settings: Settings, *args: str) -> Result:
    """`genderd ARGS` with ``settings``' stall_after_s too."""
    env = {"GENDERD_STALL_AFTER_S": str(settings.stall_after_s)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return plain_cli(redis_url, settings, *args)


def _drain(aio: Loop, settings: Settings, clock: FakeClock, names: list[str] | None = None) -> None:
    """Apply what waits with in-process workers, which then stop (leave their groups)."""
    drain(aio.loop, aio.client, settings, clock, names)
    for name in names or Deployment.build(settings).registry.names():
        aio.run(stopped(aio.client, settings, name))


def _write(sync_redis: redis.Redis, settings: Settings, cid: str, ts: int) -> None:
    stream = KEYS.stream(shard_of(cid, settings.shards))
    sync_redis.xadd(stream, {"cid": cid, "gender": "kids", "ts": str(ts)})


def _records(aio: Loop, settings: Settings) -> dict[str, catalog.ModelRecord]:
    return aio.run(catalog.read(Links.over(aio.client).fast, Deployment.build(settings)))


def _status(redis_url: str, settings: Settings) -> tuple[int, dict[str, dict[str, object]]]:
    shown = cli(redis_url, settings, "status", "--json")
    return shown.exit_code, {m["model"]: m for m in json.loads(shown.stdout)}


def test_up_leaves_a_model_running_elsewhere_on_and_its_dead_worker_shows_stalled(
    aio: Loop,
    settings: Settings,
    clock: FakeClock,
    sync_redis: redis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The finding: `GENDERD_MODELS=top genderd up` while `last` runs on another host; that
    worker is then killed -9: `status` showed `last` "off (not in GENDERD_MODELS)"."""
    settings = settings.model_copy(update={"stall_after_s": 0.05})
    _drain(aio, settings, clock)  # every model has run: recorded
    sync_redis.hset(KEYS.workers("last"), "elsewhere-1", heartbeat("running"))

    chosen = settings.model_copy(update={"models": ("top",)})
    with caplog.at_level(logging.WARNING, logger="genderd.up"):
        started = up.start(up.Supervisor(chosen, []), Deployment.build(chosen, clock), None, None)
    started.client.close()
    assert all(record.on for record in _records(aio, settings).values())  # none switched off
    assert "left out by GENDERD_MODELS here: last, recency, top7d" in caplog.text

    time.sleep(0.1)  # the worker elsewhere is gone: its heartbeat is older than stall_after_s
    _write(sync_redis, settings, "A1", clock())
    _drain(aio, settings, clock, ["top"])
    code, rows = _status(redis_url, settings.model_copy())
    assert rows["last"]["stalled"] is True and rows["last"]["off"] is False
    assert code == 1


def _refused_while_running(
    sync_redis: redis.Redis, redis_url: str, settings: Settings, command: str, model: str
) -> None:
    """`genderd models COMMAND MODEL` while a worker of it heartbeats: refused (exit 1),
    naming it; then the worker stops (it deletes its heartbeat, as a stopping worker does)."""
    sync_redis.hset(KEYS.workers(model), "host-1", heartbeat("running"))
    refused = cli(redis_url, settings, "models", command, model)
    assert refused.exit_code == 1 and f"workers of {model} are alive (host-1)" in refused.output
    sync_redis.delete(KEYS.workers(model))


def test_models_off_and_on_are_refused_while_workers_run(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, redis_url: str
) -> None:
    _drain(aio, settings, clock)
    _refused_while_running(sync_redis, redis_url, settings, "off", "recency")
    assert _records(aio, settings)["recency"].on
    done = cli(redis_url, settings, "models", "off", "recency")
    assert done.exit_code == 0 and "switched off" in done.output
    assert not _records(aio, settings)["recency"].on
    back = cli(redis_url, settings, "models", "on", "recency")
    assert back.exit_code == 0 and _records(aio, settings)["recency"].on
    unknown = cli(redis_url, settings, "models", "off", "nope")
    assert unknown.exit_code == 2 and "no model 'nope' in this deployment" in unknown.output


def test_a_retired_model_is_gone_from_status_and_its_data_still_erased(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, redis_url: str
) -> None:
    """A model that no longer runs (here the plug-in `top30d`, not loaded by the commands)
    stayed STALLED forever: retired, status no longer shows it, its groups are gone, and an
    erasure still deletes its day buckets from its recorded shape."""
    with_top30 = settings.model_copy(update={"plugins": TOP30})
    for day in range(3):
        _write(sync_redis, settings, "W1", clock() - day * DAY)
    _drain(aio, with_top30, clock)
    _write(sync_redis, settings, "W2", clock())  # waits for top30d, which no longer runs
    _drain(aio, settings, clock)
    code, rows = _status(redis_url, settings.model_copy(update={"stall_after_s": 0.001}))
    assert code == 1 and rows["top30d"]["stalled"] and rows["top30d"]["lag"] == 1
    retired = cli(redis_url, settings, "models", "retire", "top30d")
    assert retired.exit_code == 0, retired.output
    assert "4 consumer groups destroyed; its record is kept, marked retired" in retired.output

    code, rows = _status(redis_url, settings)
    assert "top30d" not in rows and code == 0
    assert all(
        b"top30d" not in (g["name"] for g in sync_redis.xinfo_groups(KEYS.stream(s)))
        for s in range(settings.shards)
    )
    record = _records(aio, settings)["top30d"]
    assert (record.retired, record.on, record.shape.window_days) == (True, False, 30)
    listed = cli(redis_url, settings, "models", "list")
    assert any(
        line.startswith("top30d") and "retired" in line for line in listed.output.split("\n")
    )
    buckets = [k for k in sync_redis.scan_iter(match="*:m:top30d:d*:W1")]
    assert len(buckets) == 3
    assert cli(redis_url, settings, "erase", "W1").exit_code == 0
    assert list(sync_redis.scan_iter(match="*:m:top30d:d*:W1")) == []

    # a worker of it that starts again brings it back
    _drain(aio, with_top30, clock, ["top30d"])
    assert not _records(aio, settings)["top30d"].retired
    assert "top30d" in _status(redis_url, settings)[1]


def test_retire_is_refused_while_the_model_runs_and_forgets_what_it_cannot_keep(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, redis_url: str
) -> None:
    _drain(aio, settings, clock)
    _refused_while_running(sync_redis, redis_url, settings, "retire", "top7d")
    sync_redis.set(KEYS.pause("top7d"), "a-replay", px=10_000)
    during_replay = cli(redis_url, settings, "models", "retire", "top7d")
    assert during_replay.exit_code == 1 and "a replay of top7d is running" in during_replay.output
    assert sync_redis.xinfo_groups(KEYS.stream(0))  # nothing was destroyed
    sync_redis.delete(KEYS.pause("top7d"))

    forgot = cli(redis_url, settings, "models", "retire", "top7d", "--forget")
    assert forgot.exit_code == 0 and "its record is deleted" in forgot.output
    assert not sync_redis.hexists(KEYS.models, "top7d")
    sync_redis.hset(KEYS.models, "evil", "notjson")
    bad = cli(redis_url, settings, "models", "retire", "evil")
    assert bad.exit_code == 0 and "0 consumer groups destroyed; its record is deleted" in (
        bad.output
    )
    assert not sync_redis.hexists(KEYS.models, "evil")
    missing = cli(redis_url, settings, "models", "retire", "nope")
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
