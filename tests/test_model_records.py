"""One bad record in ``<prefix>:models`` takes nothing down (issue 27, finding 1): a record
that cannot be read is skipped and shown as an unreadable record by ``status``, ``models
list`` and ``GET /v1/models``, never a traceback or a 500; a field this release does not
know is tolerated; ``window_days`` is bounded where records are read and where models are
registered."""

from __future__ import annotations

import json

import pytest
import redis

from genderd import catalog
from genderd.keys import Keys, shard_of
from genderd.models import TopWindow
from genderd.models.registry import PluginError, Registration
from genderd.settings import MAX_WINDOW_DAYS, Settings

from .support.api_helpers import MakeApi, drain
from .support.commands import cli
from .support.runtime import FakeClock, Loop

#: the reproductions of the finding, by record name
BAD: dict[str, str | bytes] = {
    "evil": b"notjson",
    "listed": b"[1, 2]",
    "stamped": json.dumps({"kind": "python", "started_ms": "yesterday"}),
    "aliased": json.dumps({"kind": "python", "aliases": 5}),
    "wide": json.dumps({"kind": "window", "shape": {"window_days": 200_000}}),
    "wider": json.dumps({"kind": "window", "shape": {"window_days": 2_000_000}}),
    "deep": b"[" * 100_000,
    "binary": b"\xff\xfe{",
    "flagged": json.dumps({"kind": "python", "on": "yes"}),
}


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("evil", BAD["evil"], "not JSON"),
        ("listed", BAD["listed"], "not a JSON object"),
        ("stamped", BAD["stamped"], "'started_ms' is not a whole number"),
        ("aliased", BAD["aliased"], "'aliases' is not a list of strings"),
        ("wide", BAD["wide"], f"'window_days' is over {MAX_WINDOW_DAYS}"),
        ("deep", BAD["deep"], "not JSON"),
        ("binary", BAD["binary"], "not JSON"),
        ("flagged", BAD["flagged"], "'on' is not true or false"),
        ("negative", json.dumps({"started_ms": -1}), "'started_ms' is not a whole number"),
        ("shapeless", json.dumps({"shape": [1]}), "'shape' is not an object"),
        ("Shout", json.dumps({"kind": "python"}), "'Shout' is not a valid model name"),
    ],
)
def test_a_record_that_cannot_be_used_is_unreadable_and_says_why(
    name: str, raw: str | bytes, why: str
) -> None:
    found = catalog.recorded({name.encode(): raw})[name]
    assert why in found.unreadable
    assert found.kind == "unknown" and found.shape == catalog.KeyShape()


def test_fields_this_release_does_not_know_are_tolerated() -> None:
    """A newer release (a rolling upgrade) may add fields: ignored, except a key-shape field
    that is set, which only the model's code can name (the shape becomes custom)."""
    newer = {"kind": "window", "cls": "x.Y", "flavour": "new", "shape": {"window_days": 30}}
    plain = catalog.recorded({"top30d": json.dumps(newer)})["top30d"]
    assert plain.unreadable == "" and plain.shape == catalog.KeyShape(window_days=30)
    unset = newer | {"shape": {"window_days": 30, "hll": False}}
    assert catalog.recorded({"a": json.dumps(unset)})["a"].shape == catalog.KeyShape(window_days=30)
    keys_of_its_own = newer | {"shape": {"state": True, "hll": True}}
    found = catalog.recorded({"b": json.dumps(keys_of_its_own)})["b"]
    assert found.unreadable == "" and found.shape.custom


def _write_c1(sync_redis: redis.Redis, settings: Settings, clock: FakeClock) -> None:
    stream = Keys(settings.prefix).stream(shard_of("C1", settings.shards))
    sync_redis.xadd(stream, {"cid": "C1", "gender": "male", "ts": str(clock())})


def _write_bad(sync_redis: redis.Redis, settings: Settings) -> None:
    sync_redis.hset(Keys(settings.prefix).models, mapping=BAD)


def test_status_models_list_and_erase_skip_a_bad_record(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, redis_url: str
) -> None:
    _write_c1(sync_redis, settings, clock)
    drain(aio.loop, aio.client, settings, clock)
    _write_bad(sync_redis, settings)

    shown = cli(redis_url, settings, "status")
    assert shown.exit_code == 0, shown.output
    for name in BAD:
        row = next(line for line in shown.output.splitlines() if line.startswith(name))
        assert "unreadable record (" in row, row
    rows = {m["model"]: m for m in json.loads(cli(redis_url, settings, "status", "--json").stdout)}
    assert rows["evil"]["unreadable_record"] == "not JSON"
    assert rows["top"]["unreadable_record"] is None and rows["top"]["applied"] == 1
    listed = cli(redis_url, settings, "models", "list")
    assert listed.exit_code == 0 and "unreadable record (not JSON)" in listed.output

    erased = cli(redis_url, settings, "erase", "C1")  # "too many results to unpack" before
    assert erased.exit_code == 0, erased.output
    assert not sync_redis.exists(Keys().result(shard_of("C1", settings.shards), "C1"))


def _every_call_answers(api: object, cid: str) -> None:
    assert hasattr(api, "request")
    calls = [
        ("GET", f"/v1/clients/{cid}", {}, 200),
        ("GET", f"/v1/clients/{cid}/gender?model=top", {}, 200),
        ("POST", "/v1/lookup", {"json": {"cids": [cid]}}, 200),
        ("GET", "/readyz", {}, 200),
        ("POST", "/v1/events", {"json": {"cid": "N1", "gender": "kids"}}, 202),
        ("GET", "/v1/models", {}, 200),
        ("DELETE", "/v1/clients/gone", {}, 202),
    ]
    for method, url, kwargs, status in calls:
        response = api.request(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.text)


def test_the_api_answers_with_a_bad_record_fresh_and_running(
    aio: Loop, settings: Settings, clock: FakeClock, sync_redis: redis.Redis, make_api: MakeApi
) -> None:
    _write_c1(sync_redis, settings, clock)
    drain(aio.loop, aio.client, settings, clock)
    running = make_api()
    assert running.get("/v1/clients/C1").status_code == 200  # the deployment is open
    _write_bad(sync_redis, settings)

    _every_call_answers(running, "C1")
    fresh = make_api()  # opens the deployment, and reads the records, with them there
    _every_call_answers(fresh, "C1")
    listed = {m["name"]: m for m in fresh.get("/v1/models").json()["models"]}
    assert listed["evil"]["unreadable_record"] == "not JSON"
    assert listed["evil"]["served"] is False and "unreadable record" in listed["evil"]["not_served"]
    assert listed["top"]["unreadable_record"] is None
    wide = fresh.get("/v1/clients/C1/gender?model=wide")
    assert wide.status_code == 422 and wide.json()["detail"][0]["type"] == "model_not_served"


def test_an_unreadable_record_of_a_model_with_a_group_refuses_erasure_in_one_line(
    settings: Settings, sync_redis: redis.Redis, redis_url: str, make_api: MakeApi
) -> None:
    """Its keys are unknown and it runs (it has a group): as for a group without a record,
    the erasure is refused before anything is deleted, never a traceback."""
    sync_redis.hset(Keys().models, "evil", "notjson")
    sync_redis.xgroup_create(Keys().stream(1), "evil", id="0", mkstream=True)
    sync_redis.hset(Keys().result(0, "C1"), "top", "male")
    refused = cli(redis_url, settings, "erase", "C1")
    assert refused.exit_code == 2
    assert "model 'evil' has a group but no readable record" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert sync_redis.exists(Keys().result(0, "C1"))
    answer = make_api().request("DELETE", "/v1/clients/C1")
    assert answer.status_code == 500 and "no readable record" in answer.json()["detail"]


class Top30(TopWindow):
    name = "top30w"
    window_days = 30


def test_window_days_is_bounded_where_models_are_registered() -> None:
    with pytest.raises(TypeError, match=f"window_days must be a whole number of days, 1-{366}"):

        class Wide(TopWindow):  # refused as the class is made
            name = "wide"
            window_days = MAX_WINDOW_DAYS + 1

    class Widened(TopWindow):
        name = "widened"
        window_days = 30

    Widened.window_days = 200_000  # changed after the class was made: refused at load
    with pytest.raises(PluginError, match="window_days must be a whole number of days"):
        Registration.of(Widened, "GENDERD_PLUGINS: here:Widened")
    assert Registration.of(Top30, "GENDERD_PLUGINS: here:Top30").name == "top30w"
    with pytest.raises(ValueError, match="less than or equal to 366"):
        Settings(window_days=MAX_WINDOW_DAYS + 1)
