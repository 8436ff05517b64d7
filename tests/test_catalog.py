"""The deployment knows its models (SPEC §13): each worker records its model in Redis, so
that every command names every model with a group, loaded in that process or not;
``GENDERD_MODELS`` selects the models a process runs and serves; erasure deletes the data of
models that are not loaded where it runs (issue 21, item 2)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from genderd import catalog, erasure, status
from genderd.cli import main
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.models.registry import PluginError, UnknownModelError
from genderd.settings import Settings
from genderd.transport import Links

from .support.api_helpers import MakeApi
from .support.factories import make_reader, make_worker
from .support.runtime import FakeClock, Loop

PLUGINS = "tests.support.pymodels:Count,tests.support.catalogplugins:Top30"
DAY = 86_400_000


@pytest.fixture
def with_plugins(settings: Settings) -> Settings:
    return settings.model_copy(update={"plugins": tuple(PLUGINS.split(","))})


def _env(settings: Settings, **more: str) -> dict[str, str]:
    env = {
        "GENDERD_REDIS_URL": settings.redis_url or "",
        "GENDERD_SHARDS": str(settings.shards),
        "GENDERD_GENDERS": "female,male,kids",
        "GENDERD_PLUGINS": "",
        "GENDERD_MODELS": "",
    }
    return env | more


def _write(sync_redis: redis.Redis, settings: Settings, cid: str, gender: str, ts: int) -> None:
    stream = Keys(settings.prefix).stream(shard_of(cid, settings.shards))
    sync_redis.xadd(stream, {"cid": cid, "gender": gender, "ts": str(ts)})


def _drain(aio: Loop, settings: Settings, clock: FakeClock, names: list[str]) -> None:
    deployment = Deployment.build(settings, clock)
    for name in names:
        worker = make_worker(aio.client, name, settings, clock=clock, deployment=deployment)
        aio.run(worker.ensure_groups())
        aio.run(worker.drain())


def _history(sync_redis: redis.Redis, settings: Settings, clock: FakeClock, cid: str) -> None:
    """Five days of events of ``cid`` (five day buckets of a windowed model)."""
    for day in range(5):
        _write(sync_redis, settings, cid, "kids", clock() - day * DAY)


def test_each_worker_records_its_model(
    aio: Loop, with_plugins: Settings, clock: FakeClock, sync_redis: redis.Redis
) -> None:
    _write(sync_redis, with_plugins, "A1", "male", clock())
    _drain(aio, with_plugins, clock, ["count", "top30d", "top", "top7d", "last"])

    deployment = Deployment.build(with_plugins, clock)
    found = aio.run(catalog.read(Links.over(aio.client).fast, deployment))
    assert set(found) == {"count", "top30d", "top", "top7d", "last"}
    count, top30, top, last = found["count"], found["top30d"], found["top"], found["last"]
    assert (count.kind, count.cls) == ("python", "tests.support.pymodels.Count")
    assert count.plugin == "tests.support.pymodels:Count"
    assert (top30.kind, top30.shape) == ("window", catalog.KeyShape(window_days=30))
    assert top30.plugin == "tests.support.catalogplugins:Top30"
    assert (top.kind, top.shape, top.loaded_from) == (
        "built-in",
        catalog.KeyShape(state=True),
        "entry point 'top'",
    )
    assert last.shape == catalog.KeyShape() and "last:id" in last.fields
    assert all(record.on and record.recorded for record in found.values())
    # a group made by anything else is named too, as unknown
    sync_redis.xgroup_create(Keys(with_plugins.prefix).stream(1), "legacy", id="0")
    legacy = aio.run(catalog.read(Links.over(aio.client).fast, deployment))["legacy"]
    assert (legacy.kind, legacy.recorded) == ("unknown", False)


def test_a_model_not_loaded_here_is_named_by_status_lookup_and_the_api(
    aio: Loop,
    with_plugins: Settings,
    settings: Settings,
    clock: FakeClock,
    sync_redis: redis.Redis,
    make_api: MakeApi,
) -> None:
    _write(sync_redis, with_plugins, "A1", "male", clock())
    _drain(aio, with_plugins, clock, with_plugins.plugins and ["count", "top30d"])
    plain = Deployment.build(settings, clock)  # no GENDERD_PLUGINS: count is not loaded

    rows = {m.name: m for m in aio.run(status.collect(aio.client, plain))}
    assert rows["count"].applied == 1 and rows["count"].not_served is not None
    assert "GENDERD_PLUGINS=tests.support.pymodels:Count" in rows["count"].not_served
    assert rows["top"].not_served is None

    env = _env(settings)
    shown = CliRunner().invoke(main, ["status", "--json"], env=env)
    by_name = {m["model"]: m for m in json.loads(shown.output)}
    assert by_name["count"]["served_here"] is False and by_name["count"]["kind"] == "python"
    assert by_name["top30d"]["loaded_from"] == "GENDERD_PLUGINS: tests.support.catalogplugins:Top30"
    table = CliRunner().invoke(main, ["status"], env=env).output
    row = next(line for line in table.splitlines() if line.startswith("count"))
    assert "not loaded here (python, GENDERD_PLUGINS: tests.support.pymodels:Count)" in row

    looked = CliRunner().invoke(main, ["lookup", "A1", "--model", "count"], env=env)
    assert looked.exit_code == 2
    assert "runs in this deployment but is not loaded in this process" in looked.output
    assert "GENDERD_PLUGINS=tests.support.pymodels:Count" in looked.output
    unknown = CliRunner().invoke(main, ["lookup", "A1", "--model", "nope"], env=env)
    assert unknown.exit_code == 2 and "unknown model 'nope'" in unknown.output

    api = make_api()
    listed = {m["name"]: m for m in api.get("/v1/models").json()["models"]}
    assert listed["count"]["served"] is False and listed["top"]["served"] is True
    assert "not loaded" in listed["count"]["not_served"]
    answer = api.get("/v1/clients/A1/gender?model=count")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "model_not_served"
    assert api.get("/v1/clients/A1/gender?model=nope").json()["detail"][0]["type"] == (
        "unknown_model"
    )


def test_genderd_models_selects_what_a_process_runs_and_serves(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, make_api: MakeApi
) -> None:
    chosen = settings.model_copy(update={"models": ("last", "model2")})  # model2: top's alias
    deployment = Deployment.build(chosen, clock)
    assert deployment.registry.names() == ["last", "top"]
    assert "recency" in deployment.registry.loaded
    with pytest.raises(UnknownModelError, match="left out by GENDERD_MODELS"):
        deployment.model("recency")
    assert deployment.registry.default(chosen).name == "top"
    with pytest.raises(PluginError, match="GENDERD_MODELS: unknown model 'nope'"):
        Deployment.build(settings.model_copy(update={"models": ("nope",)}))
    only_last = chosen.model_copy(update={"models": ("last",)})
    assert Deployment.build(only_last).registry.default(only_last).name == "last"
    with pytest.raises(PluginError, match="GENDERD_DEFAULT_MODEL 'top' is not among"):
        Deployment.build(only_last.model_copy(update={"default_model": "top"}))

    env = _env(settings, GENDERD_MODELS="last,top")
    refused = CliRunner().invoke(main, ["worker", "--model", "recency"], env=env)
    assert refused.exit_code == 2 and "left out by GENDERD_MODELS" in refused.output
    bad = CliRunner().invoke(main, ["status"], env=_env(settings, GENDERD_MODELS="last,nope"))
    assert bad.exit_code == 2 and "GENDERD_MODELS: unknown model 'nope'" in bad.output

    _write(sync_redis, settings, "A1", "male", clock())
    _drain(aio, settings, clock, ["last", "top", "top7d", "recency"])
    api = make_api(models=("last", "top"))
    assert set(api.get("/v1/clients/A1").json()["models"]) == {"last", "top"}
    left_out = api.get("/v1/clients/A1/gender?model=recency")
    assert left_out.status_code == 422 and "left out by GENDERD_MODELS" in left_out.text


def test_a_model_switched_off_is_neither_stalled_nor_failing(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis
) -> None:
    settings = settings.model_copy(update={"stall_after_s": 0.001})
    _drain(aio, settings, clock, ["last", "top", "top7d", "recency"])
    _write(sync_redis, settings, "A1", "male", clock())  # waits for every model: no worker
    time.sleep(0.01)  # every consumer idle for longer than stall_after_s
    deployment = Deployment.build(settings, clock)
    env = _env(settings, GENDERD_STALL_AFTER_S="0.001")
    switched = CliRunner().invoke(main, ["models", "off", "recency"], env=env)
    assert switched.exit_code == 0 and "model recency switched off" in switched.output
    again = CliRunner().invoke(main, ["models", "off", "recency"], env=env)
    assert "was off already" in again.output
    rows = {m.name: m for m in aio.run(status.collect(aio.client, deployment))}
    assert rows["recency"].off and not rows["recency"].stalled and rows["recency"].lag == 1
    assert rows["last"].stalled and not rows["last"].off
    _drain(aio, settings, clock, ["last", "top", "top7d"])
    shown = CliRunner().invoke(main, ["status"], env=env)
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if line.startswith("recency"))
    assert "off (switched off" in row
    # a worker of it that starts switches it on again
    _drain(aio, settings, clock, ["recency"])
    assert aio.run(catalog.read(Links.over(aio.client).fast, deployment))["recency"].on


def _data_keys(sync_redis: redis.Redis, cid: str) -> list[str]:
    return sorted(k.decode() for k in sync_redis.scan_iter(count=1000) if k.endswith(cid.encode()))


def test_erasure_without_the_plugin_loaded_deletes_its_data(
    aio: Loop,
    with_plugins: Settings,
    settings: Settings,
    clock: FakeClock,
    sync_redis: redis.Redis,
) -> None:
    """Issue 21 item 2, as it stands: a TopWindow plug-in `top30d` runs; `genderd erase W1`
    without GENDERD_PLUGINS; a later event must not bring the old counts back."""
    _history(sync_redis, with_plugins, clock, "W1")
    names = ["count", "top30d", "last", "top", "top7d", "recency"]
    _drain(aio, with_plugins, clock, names)
    buckets = [k for k in _data_keys(sync_redis, "W1") if ":m:top30d:d" in k]
    assert len(buckets) == 5

    result = CliRunner().invoke(main, ["erase", "W1"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert _data_keys(sync_redis, "W1") == []

    _write(sync_redis, with_plugins, "W1", "female", clock() + 1)
    _drain(aio, with_plugins, clock, names)
    reader = make_reader(aio.client, with_plugins, clock=clock)
    answers: dict[str, Any] = aio.run(reader.lookup("W1"))
    assert answers["top30d"] is not None and answers["top30d"].scores == {"female": 1}
    assert answers["count"].scores == {"n": 1}


def test_erasure_refuses_when_a_model_with_keys_of_its_own_is_not_loaded(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, make_api: MakeApi
) -> None:
    stamped = settings.model_copy(update={"plugins": ("tests.support.catalogplugins:Stamped",)})
    _write(sync_redis, stamped, "S1", "male", clock())
    _drain(aio, stamped, clock, ["stamped", "last", "top", "top7d", "recency"])
    record = aio.run(catalog.read(Links.over(aio.client).fast, Deployment.build(settings, clock)))[
        "stamped"
    ]
    assert (record.kind, record.shape) == ("lua", catalog.KeyShape(custom=True))
    before = _data_keys(sync_redis, "S1")
    assert before

    result = CliRunner().invoke(main, ["erase", "S1"], env=_env(settings))
    assert result.exit_code == 2
    assert "cannot erase: model 'stamped' keeps keys of its own and is not loaded here" in (
        result.output
    )
    assert "GENDERD_PLUGINS=tests.support.catalogplugins:Stamped" in result.output
    assert _data_keys(sync_redis, "S1") == before  # refused before anything was deleted
    refused = make_api().request("DELETE", "/v1/clients/S1")
    assert refused.status_code == 500 and "keeps keys of its own" in refused.json()["detail"]
    assert _data_keys(sync_redis, "S1") == before

    # loaded, its own code names its keys: the erasure goes through
    done = aio.run(
        erasure.erase(Links.over(aio.client).fast, Deployment.build(stamped, clock), ["S1"])
    )
    assert done.keys >= 1 and _data_keys(sync_redis, "S1") == []
