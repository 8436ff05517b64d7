"""The HTTP API (SPEC §5) against a real server: every call, its answers and its error paths.

Events go in through ``POST /v1/events``, in-process workers drain them, and the lookups must
then give the answers the models define. The app runs with its lifespan on the ``aio`` loop
(see :mod:`tests.api_helpers`); its read clock is a :class:`FakeClock` the tests move.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from genderd import streams
from genderd.api import MAX_BODY_BYTES, create_app
from genderd.events import MS_PER_DAY, Invalid, parse_entry
from genderd.keys import Keys
from genderd.metrics import LATENCY_BUCKETS_S
from genderd.models import Registry
from genderd.server import Server
from genderd.settings import Settings
from genderd.worker import Worker

from .api_helpers import ApiClient, RoundTripProxy, cid_path, drain, gender_url, stream_lengths
from .conftest import FakeClock, Loop

HOUR = 3_600_000
MODEL_NAMES = ["last", "top", "top7d"]
KNOWN = "last, model1, model2, model3, top, top7d"

MakeApi = Callable[..., ApiClient]


@pytest.fixture
def make_api(aio: Loop, settings: Settings, clock: FakeClock) -> Iterator[MakeApi]:
    """Apps on the test's loop: ``make_api(read_clock=..., **settings_overrides)``."""
    made: list[ApiClient] = []

    def make(read_clock: FakeClock | None = None, **overrides: Any) -> ApiClient:
        chosen = settings.model_copy(update=overrides) if overrides else settings
        client = ApiClient(create_app(chosen, clock=read_clock or clock), aio.loop)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def api(make_api: MakeApi) -> ApiClient:
    return make_api()


def produce(api: ApiClient, events: list[dict[str, Any]]) -> None:
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(events)}


def process(aio: Loop, clock: FakeClock, models: list[str] | None = None) -> None:
    drain(aio.loop, aio.client, aio.settings, clock, models)


def stream_key(settings: Settings, cid: str) -> str:
    shard = zlib.crc32(cid.encode("utf-8")) % settings.shards
    return f"genderd:{{s{shard}}}:events"


# -- GET /v1/clients/{cid}/gender -------------------------------------------------------------


def test_single_lookup_end_to_end_default_model_names_and_aliases(
    api: ApiClient, aio: Loop, clock: FakeClock
) -> None:
    now = clock.now_ms
    produce(
        api,
        [
            {"cid": "C1", "gender": "female", "ts": now - 3 * HOUR},
            {"cid": "C1", "gender": "FEMALE ", "ts": now - 2 * HOUR},
            {"cid": "C1", "gender": "male", "ts": now - HOUR},
        ],
    )
    process(aio, clock)

    top = {
        "cid": "C1",
        "model": "top",
        "gender": "female",
        "scores": {"female": 2, "male": 1},
        "last_event_ts": now - HOUR,
        "as_of": now,
    }
    last = {**top, "model": "last", "gender": "male", "scores": None}
    top7d = {**top, "model": "top7d"}
    default = api.get("/v1/clients/C1/gender")
    assert default.status_code == 200
    assert default.headers["content-type"] == "application/json"
    assert default.json() == top
    for name, expected in [
        ("top", top),
        ("model2", top),
        ("last", last),
        ("model1", last),
        ("top7d", top7d),
        ("model3", top7d),
        ("Model1", last),  # names are case-insensitive
    ]:
        response = api.get(gender_url("C1", name))
        assert (response.status_code, response.json()) == (200, expected), name


def test_default_model_is_the_configured_one(
    make_api: MakeApi, aio: Loop, clock: FakeClock
) -> None:
    api = make_api(default_model="model1")
    produce(api, [{"cid": "C1", "gender": "kids", "ts": clock.now_ms - HOUR}])
    process(aio, clock)
    response = api.get("/v1/clients/C1/gender")
    assert response.status_code == 200
    assert response.json()["model"] == "last"
    assert response.json()["gender"] == "kids"


def test_single_lookup_404_when_the_model_has_no_answer(
    api: ApiClient, aio: Loop, clock: FakeClock
) -> None:
    response = api.get("/v1/clients/nobody/gender")
    assert response.status_code == 404
    assert response.json() == {"detail": "model top has no answer for this client"}

    # An event older than the window: top and last answer, top7d does not.
    produce(api, [{"cid": "old", "gender": "male", "ts": clock.now_ms - 10 * MS_PER_DAY}])
    process(aio, clock)
    assert api.get(gender_url("old", "top")).status_code == 200
    assert api.get(gender_url("old", "last")).status_code == 200
    response = api.get(gender_url("old", "model3"))
    assert response.status_code == 404
    assert response.json() == {"detail": "model top7d has no answer for this client"}


@pytest.mark.parametrize(
    ("path_cid", "message"),
    [
        ("a%20b", "cid contains whitespace or a control character (' ')"),
        ("a%09b", "cid contains whitespace or a control character ('\\t')"),
        ("a%01b", "cid contains whitespace or a control character ('\\x01')"),
        ("x" * 129, "cid has 129 characters, at most 128 are allowed"),
        ("", "cid is empty"),
    ],
)
def test_single_lookup_422_for_a_bad_cid(api: ApiClient, path_cid: str, message: str) -> None:
    for url in (f"/v1/clients/{path_cid}/gender", f"/v1/clients/{path_cid}"):
        response = api.get(url)
        assert response.status_code == 422, url
        assert response.json() == {
            "detail": [{"loc": ["path", "cid"], "msg": message, "type": "bad_cid"}]
        }


def test_a_128_character_cid_is_valid(api: ApiClient) -> None:
    assert api.get(gender_url("x" * 128)).status_code == 404


def test_single_lookup_422_for_an_unknown_model(api: ApiClient) -> None:
    for name in ("nope", "", "model4"):
        response = api.get(gender_url("C1", name))
        assert response.status_code == 422, name
        assert response.json() == {
            "detail": [
                {
                    "loc": ["query", "model"],
                    "msg": f"unknown model {name!r}; known: {KNOWN}",
                    "type": "unknown_model",
                }
            ]
        }


@pytest.mark.parametrize("cid", ["shop:eu:C9", "Ω-7", "a/b", "50%off", "q?x=1#y", "é" * 128])
def test_cids_with_reserved_and_non_ascii_characters(
    api: ApiClient, aio: Loop, clock: FakeClock, cid: str
) -> None:
    produce(api, [{"cid": cid, "gender": "kids", "ts": clock.now_ms - HOUR}])
    process(aio, clock)
    response = api.get(gender_url(cid, "top"))
    assert response.status_code == 200, response.text
    assert response.json()["cid"] == cid
    assert response.json()["gender"] == "kids"
    everything = api.get(f"/v1/clients/{cid_path(cid)}")
    assert everything.status_code == 200
    assert everything.json()["cid"] == cid
    assert everything.json()["models"]["last"]["gender"] == "kids"
    batch = api.post("/v1/lookup", json={"cids": [cid]})
    assert batch.json()["results"][0]["gender"] == "kids"


# -- GET /v1/clients/{cid} --------------------------------------------------------------------


def test_all_models_lookup(api: ApiClient, aio: Loop, clock: FakeClock) -> None:
    now = clock.now_ms
    produce(
        api,
        [
            {"cid": "C2", "gender": "female", "ts": now - 10 * MS_PER_DAY},
            {"cid": "C2", "gender": "male", "ts": now - 9 * MS_PER_DAY},
            {"cid": "C3", "gender": "kids", "ts": now - HOUR},
        ],
    )
    process(aio, clock)
    response = api.get("/v1/clients/C2")
    assert response.status_code == 200
    # Both events are older than the window: top7d has no answer (null).
    assert response.json() == {
        "cid": "C2",
        "models": {
            "last": {
                "gender": "male",
                "scores": None,
                "last_event_ts": now - 9 * MS_PER_DAY,
                "as_of": now,
            },
            "top": {  # a 1-1 tie goes to the newest event
                "gender": "male",
                "scores": {"female": 1, "male": 1},
                "last_event_ts": now - 9 * MS_PER_DAY,
                "as_of": now,
            },
            "top7d": None,
        },
    }
    recent = api.get("/v1/clients/C3").json()["models"]
    assert {name: answer["gender"] for name, answer in recent.items()} == {
        "last": "kids",
        "top": "kids",
        "top7d": "kids",
    }
    assert recent["top7d"]["scores"] == {"kids": 1}


def test_all_models_lookup_404_when_no_model_knows_the_client(api: ApiClient) -> None:
    response = api.get("/v1/clients/nobody")
    assert response.status_code == 404
    assert response.json() == {"detail": "no model has an answer for this client"}


# -- POST /v1/lookup --------------------------------------------------------------------------


def test_batch_lookup_keeps_order_and_answers_null_for_unknown_clients(
    api: ApiClient, aio: Loop, clock: FakeClock
) -> None:
    now = clock.now_ms
    produce(
        api,
        [
            {"cid": "C1", "gender": "female", "ts": now - 2 * HOUR},
            {"cid": "C2", "gender": "male", "ts": now - HOUR},
            {"cid": "C2", "gender": "kids", "ts": now - 3 * HOUR},
        ],
    )
    process(aio, clock)
    unknown = {"gender": None, "scores": None, "last_event_ts": None, "as_of": None}
    response = api.post("/v1/lookup", json={"cids": ["C2", "X", "C1", "C2"]})
    assert response.status_code == 200
    c1 = {"gender": "female", "scores": {"female": 1}, "last_event_ts": now - 2 * HOUR}
    c2 = {"gender": "male", "scores": {"kids": 1, "male": 1}, "last_event_ts": now - HOUR}
    assert response.json() == {
        "model": "top",
        "results": [
            {"cid": "C2", **c2, "as_of": now},
            {"cid": "X", **unknown},
            {"cid": "C1", **c1, "as_of": now},
            {"cid": "C2", **c2, "as_of": now},
        ],
    }
    by_alias = api.post("/v1/lookup", json={"cids": ["C2", "X"], "model": "model1"})
    assert by_alias.status_code == 200
    assert by_alias.json() == {
        "model": "last",
        "results": [
            {
                "cid": "C2",
                "gender": "male",
                "scores": None,
                "last_event_ts": now - HOUR,
                "as_of": now,
            },
            {"cid": "X", **unknown},
        ],
    }
    windowed = api.post("/v1/lookup", json={"cids": ["C1"], "model": "model3"})
    assert windowed.json()["model"] == "top7d"
    assert windowed.json()["results"][0]["gender"] == "female"


def test_batch_lookup_limits(api: ApiClient, aio: Loop, clock: FakeClock) -> None:
    produce(api, [{"cid": "C1", "gender": "female", "ts": clock.now_ms - HOUR}])
    process(aio, clock)
    cids = ["C1"] + [f"U{i}" for i in range(999)]
    response = api.post("/v1/lookup", json={"cids": cids, "model": "top7d"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["cid"] for r in results] == cids
    assert results[0]["gender"] == "female"
    assert all(r["gender"] is None for r in results[1:])

    too_many = api.post("/v1/lookup", json={"cids": [*cids, "one-more"]})
    assert too_many.status_code == 422
    [error] = too_many.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "cids"], "too_long")

    empty = api.post("/v1/lookup", json={"cids": []})
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["type"] == "too_short"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"cids": "C1"},
        {"cids": [1]},
        {"cids": ["C1"], "extra": 1},
        {"cids": ["C1"], "model": 3},
        [],
    ],
)
def test_batch_lookup_422_for_a_malformed_body(api: ApiClient, body: Any) -> None:
    response = api.post("/v1/lookup", json=body)
    assert response.status_code == 422
    assert response.json()["detail"], response.text


def test_batch_lookup_422_for_invalid_json(api: ApiClient) -> None:
    response = api.post(
        "/v1/lookup", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_batch_lookup_422_for_a_bad_cid_inside(api: ApiClient) -> None:
    response = api.post("/v1/lookup", json={"cids": ["C1", "ok", "a b"]})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "cids", "2"],
                "msg": "cid contains whitespace or a control character (' ')",
                "type": "bad_cid",
            }
        ]
    }
    long = api.post("/v1/lookup", json={"cids": ["x" * 129]})
    assert long.status_code == 422
    assert long.json()["detail"][0]["loc"] == ["body", "cids", "0"]


def test_batch_lookup_422_for_an_unknown_model(api: ApiClient) -> None:
    response = api.post("/v1/lookup", json={"cids": ["C1"], "model": "nope"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["msg"], error["type"]) == (
        f"unknown model 'nope'; known: {KNOWN}",
        "unknown_model",
    )
    # The model of a batch lookup is in the body: the error must point there, not at a query
    # parameter that this call does not have.
    assert error["loc"] == ["body", "model"]


def test_concurrent_lookups_each_get_their_own_answer(
    make_api: MakeApi, aio: Loop, clock: FakeClock
) -> None:
    """Many lookups in flight at once (sharing connections) are not mixed up, also while the
    stored top7d answers are being recomputed."""
    read_clock = FakeClock(clock.now_ms)
    api = make_api(read_clock=read_clock)
    genders = ["female", "male", "kids"]
    cids = [f"K{i}" for i in range(300)]
    produce(
        api,
        [
            {"cid": cid, "gender": genders[i % 3], "ts": clock.now_ms - HOUR - i}
            for i, cid in enumerate(cids)
        ],
    )
    process(aio, clock)
    http = api.http
    assert http is not None

    async def all_at_once() -> list[Any]:
        singles = [http.get(gender_url(cid, MODEL_NAMES[i % 3])) for i, cid in enumerate(cids)]
        batches = [
            http.post("/v1/lookup", json={"cids": [*cids[i : i + 50], "U"], "model": "top7d"})
            for i in range(0, 300, 50)
        ]
        everything = [http.get(f"/v1/clients/{cid}") for cid in cids[:30]]
        unknown = [http.get(gender_url(f"U{i}", "top7d")) for i in range(30)]
        return await asyncio.wait_for(asyncio.gather(*singles, *batches, *everything, *unknown), 30)

    for day in (0, 1):  # on day 1 every stored top7d answer has expired and is recomputed
        read_clock.now_ms = clock.now_ms + day * MS_PER_DAY
        responses = api.run(all_at_once())
        singles, rest = responses[:300], responses[300:]
        batches, rest = rest[:6], rest[6:]
        everything, unknown = rest[:30], rest[30:]
        for i, response in enumerate(singles):
            assert response.status_code == 200
            body = response.json()
            assert (body["cid"], body["gender"]) == (cids[i], genders[i % 3])
            if body["model"] == "top7d":
                assert body["as_of"] == (read_clock.now_ms if day else clock.now_ms)
        for b, response in enumerate(batches):
            results = response.json()["results"]
            assert [r["cid"] for r in results] == [*cids[b * 50 : b * 50 + 50], "U"]
            want = [genders[(b * 50 + j) % 3] for j in range(50)]
            assert [r["gender"] for r in results] == [*want, None]
        for i, response in enumerate(everything):
            models = response.json()["models"]
            assert {m["gender"] for m in models.values()} == {genders[i % 3]}, models
        assert {r.status_code for r in unknown} == {404}


# -- one Redis round trip per lookup --------------------------------------------------------------


# Commands a refresh script may run inside (the server counts them too).
SCRIPT_INTERNAL = {"hget", "hgetall", "hmget", "hset", "hdel", "exists"}


def top_level(commands: dict[str, int]) -> int:
    """How many commands a client sent, from the server's per-command counts: HGETALLs or
    EVALSHAs (not both: an EVALSHA's script runs its own HGETALL)."""
    if "evalsha" in commands:
        assert set(commands) - {"evalsha"} <= SCRIPT_INTERNAL, commands
        return commands["evalsha"]
    assert set(commands) <= {"hgetall"}, commands
    return commands.get("hgetall", 0)


def command_calls(sync_redis: redis.Redis) -> Counter[str]:
    stats = sync_redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


@pytest.fixture
def proxy(aio: Loop, redis_server: Server) -> Iterator[RoundTripProxy]:
    """A round-trip counting proxy to the session's server (list it before ``make_api``, so
    that it outlives the apps that use it)."""
    proxy = RoundTripProxy(redis_server.port)
    aio.run(proxy.start())
    yield proxy
    aio.run(proxy.close())


def commands_and_round_trips(
    api: ApiClient,
    proxy: RoundTripProxy,
    sync_redis: redis.Redis,
    method: str,
    url: str,
    status: int,
    **kwargs: Any,
) -> tuple[dict[str, int], int]:
    """The commands the server ran for one request (by name), and its round trips."""
    before, trips = command_calls(sync_redis), proxy.round_trips
    response = api.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    delta = command_calls(sync_redis) - before
    delta.pop("info", None)  # the INFO that took ``before``
    return dict(delta), proxy.round_trips - trips


def test_a_lookup_is_one_redis_round_trip(
    proxy: RoundTripProxy,
    make_api: MakeApi,
    aio: Loop,
    clock: FakeClock,
    sync_redis: redis.Redis,
) -> None:
    """Counted on the wire (a proxy between the app and the server) and by the server."""
    api = make_api(redis_url=proxy.url)
    produce(
        api,
        [{"cid": f"C{i}", "gender": "female", "ts": clock.now_ms - HOUR} for i in range(50)],
    )
    process(aio, clock)
    # warm: deployment facts, connections
    for model in MODEL_NAMES:
        assert api.get(gender_url("C1", model)).status_code == 200
    assert api.post("/v1/lookup", json={"cids": ["C1", "C2"]}).status_code == 200

    def measure(method: str, url: str, status: int, **kwargs: Any) -> tuple[dict[str, int], int]:
        return commands_and_round_trips(api, proxy, sync_redis, method, url, status, **kwargs)

    # Every model, alone or all at once, known client or not: one command per client,
    # in one round trip.
    for url, status in [
        ("/v1/clients/C1/gender", 200),
        (gender_url("C1", "last"), 200),
        (gender_url("C1", "top7d"), 200),
        (gender_url("nobody"), 404),
        (gender_url("nobody", "model3"), 404),
        ("/v1/clients/C1", 200),
        ("/v1/clients/nobody", 404),
    ]:
        commands, trips = measure("GET", url, status)
        assert (top_level(commands), trips) == (1, 1), (url, commands)

    cids = [f"C{i}" for i in range(100)]  # 50 known, 50 unknown
    for model in MODEL_NAMES:
        body = {"cids": cids, "model": model}
        commands, trips = measure("POST", "/v1/lookup", 200, json=body)
        assert (top_level(commands), trips) == (100, 1), (model, commands)
        answers = api.post("/v1/lookup", json=body).json()["results"]
        assert [r["gender"] for r in answers] == ["female"] * 50 + [None] * 50

    # The proxy sees every round trip: a call that waits between commands takes several.
    assert measure("GET", "/v1/models", 200)[1] > 1


def test_a_lookup_is_one_round_trip_also_when_the_window_has_moved(
    proxy: RoundTripProxy,
    make_api: MakeApi,
    aio: Loop,
    clock: FakeClock,
    sync_redis: redis.Redis,
) -> None:
    """The issue: "a lookup is one Redis round trip on the result hash; top7d is right at read
    time" - also on the first read of a day, when the stored top7d answer has expired."""
    read_clock = FakeClock(clock.now_ms)
    api = make_api(read_clock=read_clock, redis_url=proxy.url)
    cids = [f"C{i}" for i in range(10)]
    produce(api, [{"cid": cid, "gender": "kids", "ts": clock.now_ms - HOUR} for cid in cids])
    process(aio, clock)
    assert api.get(gender_url("C0", "top7d")).status_code == 200  # warm
    assert api.get("/readyz").status_code == 200  # the refresh script is loaded

    def measure(method: str, url: str, status: int, **kwargs: Any) -> tuple[dict[str, int], int]:
        return commands_and_round_trips(api, proxy, sync_redis, method, url, status, **kwargs)

    read_clock.advance(MS_PER_DAY)  # every stored top7d answer is now past its valid-until
    trips = {
        "single": measure("GET", gender_url("C0", "top7d"), 200)[1],
        "all models": measure("GET", "/v1/clients/C1", 200)[1],
        "batch": measure("POST", "/v1/lookup", 200, json={"cids": cids[2:], "model": "top7d"})[1],
    }
    # the answers are right at read time either way
    answer = api.get(gender_url("C0", "top7d")).json()
    assert (answer["gender"], answer["as_of"]) == ("kids", read_clock.now_ms)
    assert trips == {"single": 1, "all models": 1, "batch": 1}


# -- POST /v1/events --------------------------------------------------------------------------


def test_ingest_one_event_lands_in_its_shard_stream_normalised(
    api: ApiClient, clock: FakeClock, sync_redis: redis.Redis, settings: Settings
) -> None:
    ts = clock.now_ms - 1000
    response = api.post("/v1/events", json={"cid": "Ω-7", "gender": "  Female ", "ts": ts})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    key = stream_key(settings, "Ω-7")
    [(_, fields)] = sync_redis.xrange(key)
    assert fields == {b"cid": "Ω-7".encode(), b"gender": b"female", b"ts": str(ts).encode()}
    assert sum(stream_lengths(sync_redis, settings)) == 1

    # Without ts the entry has none (arrival time is the entry id); extra fields are dropped;
    # a ts given as a string of digits is accepted.
    assert api.post("/v1/events", json={"cid": "p", "gender": "kids", "page": "/x"}).json() == {
        "accepted": 1
    }
    [(_, fields)] = sync_redis.xrange(stream_key(settings, "p"), count=1)
    assert fields == {b"cid": b"p", b"gender": b"kids"}
    response = api.post("/v1/events", json={"cid": "q", "gender": "male", "ts": str(ts)})
    assert response.status_code == 202
    [(_, fields)] = sync_redis.xrange(stream_key(settings, "q"))
    assert fields[b"ts"] == str(ts).encode()


def test_ingest_a_batch(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    events = [
        {"cid": f"B{i}", "gender": ["female", "male", "kids"][i % 3], "ts": clock.now_ms - i}
        for i in range(30)
    ]
    produce(api, events)
    assert sum(stream_lengths(sync_redis, settings)) == 30
    for event in events:
        entries = sync_redis.xrange(stream_key(settings, str(event["cid"])))
        assert [f for _, f in entries if f[b"cid"] == str(event["cid"]).encode()] == [
            {
                b"cid": str(event["cid"]).encode(),
                b"gender": str(event["gender"]).encode(),
                b"ts": str(event["ts"]).encode(),
            }
        ]


def test_ingest_10000_events_and_not_10001(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings
) -> None:
    events = [{"cid": f"M{i}", "gender": "male"} for i in range(10_001)]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "index": 10_000,
                "reason": "too_many_events",
                "detail": "at most 10000 events per request",
            }
        ]
    }
    assert sum(stream_lengths(sync_redis, settings)) == 0
    response = api.post("/v1/events", json={"events": events[:10_000]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 10_000}
    assert sum(stream_lengths(sync_redis, settings)) == 10_000


def test_ingest_reports_every_bad_item_and_writes_nothing(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, clock: FakeClock
) -> None:
    now, future = clock.now_ms, settings.max_future_ms
    events: list[Any] = [
        {"cid": "ok1", "gender": "male"},
        {"cid": "a b", "gender": "male"},
        {"cid": "ok2", "gender": "alien"},
        {"cid": "ok3", "gender": "male", "ts": "soon"},
        {"cid": "ok4", "gender": "male", "ts": now + future + 1},
        {"gender": "male"},
        "not an event",
        {"cid": "ok5", "gender": "female", "ts": now + future},  # just inside max_future
        {"cid": "ok6"},
        {"cid": 12, "gender": "male"},
        {"cid": "ok7", "gender": "male", "ts": 1.5},
        {"cid": "ok8", "gender": "male", "ts": True},
        {"cid": "ok9", "gender": "male", "ts": -1},
        {"cid": "x" * 129, "gender": "male"},
        None,
        [],
        {"cid": "ok10", "gender": 3},
        {"cid": "", "gender": "male"},
    ]
    response = api.post("/v1/events", json={"events": events})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(e["index"], e["reason"]) for e in detail] == [
        (1, "bad_cid"),
        (2, "unknown_gender"),
        (3, "bad_ts"),
        (4, "future_ts"),
        (5, "missing_cid"),
        (6, "not_an_object"),
        (8, "missing_gender"),
        (9, "bad_cid"),
        (10, "bad_ts"),
        (11, "bad_ts"),
        (12, "bad_ts"),
        (13, "bad_cid"),
        (14, "not_an_object"),
        (15, "not_an_object"),
        (16, "unknown_gender"),
        (17, "bad_cid"),
    ]
    assert all(isinstance(e["detail"], str) and e["detail"] for e in detail)
    assert detail[2]["detail"] == "ts 'soon' is not a non-negative integer of milliseconds"
    assert detail[6]["detail"] == "the gender field is missing"
    assert stream_lengths(sync_redis, settings) == [0] * settings.shards

    # A single bad event: index 0.
    single = api.post("/v1/events", json={"cid": "C1", "gender": "robot"})
    assert single.status_code == 422
    assert single.json() == {
        "detail": [
            {
                "index": 0,
                "reason": "unknown_gender",
                "detail": "gender 'robot' is not one of female, kids, male",
            }
        ]
    }
    assert stream_lengths(sync_redis, settings) == [0] * settings.shards


def test_ingest_validates_exactly_as_the_workers_do(
    api: ApiClient, settings: Settings, clock: FakeClock
) -> None:
    """What the API refuses, a worker would dead-letter with the same reason, and vice versa."""
    now = clock.now_ms
    candidates: list[dict[str, str]] = [
        {"cid": "ok", "gender": "Kids"},
        {"cid": "ok", "gender": "male", "ts": "0"},
        {"cid": "ok", "gender": "male", "ts": str(now + settings.max_future_ms)},
        {"cid": "ok", "gender": "male", "ts": str(now + settings.max_future_ms + 1)},
        {"cid": "ok", "gender": "male", "ts": "1" * 16},
        {"cid": "ok", "gender": "male", "ts": "12a"},
        {"cid": "ok", "gender": "male", "ts": ""},
        {"cid": "ok", "gender": ""},
        {"cid": "ok", "gender": "  "},
        {"cid": "ok"},
        {"gender": "male"},
        {"cid": "", "gender": "male"},
        {"cid": "tab\there", "gender": "male"},
        {"cid": "nul\x00", "gender": "male"},
        {"cid": "\u2028", "gender": "male"},
        {"cid": "é" * 128, "gender": "male"},
        {"cid": "é" * 129, "gender": "male"},
    ]
    for fields in candidates:
        response = api.post("/v1/events", json=fields)
        # What a worker makes of the same fields read from a stream (strings).
        seen = parse_entry(f"{now}-0", fields, settings.genders, now, settings.max_future_ms)
        if isinstance(seen, Invalid):
            detail = [{"index": 0, "reason": seen.reason.value, "detail": seen.detail}]
            expected: tuple[int, Any] = (422, {"detail": detail})
        else:
            expected = (202, {"accepted": 1})
        assert (response.status_code, response.json()) == expected, fields


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b'{"events": []}', "bad_request"),
        (b'{"events": "x"}', "bad_request"),
        (b'{"events": null}', "bad_request"),
        (b"[]", "not_an_object"),
        (b"42", "not_an_object"),
    ],
)
def test_ingest_422_for_a_body_that_is_not_events(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings, body: bytes, reason: str
) -> None:
    response = api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["index"], error["reason"]) == (0, reason)
    assert sum(stream_lengths(sync_redis, settings)) == 0


def test_ingest_413_for_a_body_over_4_mib(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings
) -> None:
    assert MAX_BODY_BYTES == 4 * 1024 * 1024
    too_big = b'{"cid": "C1", "gender": "male", "pad": "' + b"a" * MAX_BODY_BYTES + b'"}'
    response = api.post("/v1/events", content=too_big)
    assert response.status_code == 413
    assert response.json() == {"detail": f"the body may be at most {MAX_BODY_BYTES} bytes"}

    async def chunked() -> Any:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    response = api.post("/v1/events", content=chunked())
    assert response.status_code == 413
    assert sum(stream_lengths(sync_redis, settings)) == 0

    # Just under the limit is fine (extra fields are ignored).
    head = b'{"cid": "C1", "gender": "male", "pad": "'
    fits = head + b"a" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'
    assert len(fits) == MAX_BODY_BYTES
    response = api.post("/v1/events", content=fits)
    assert response.status_code == 202
    assert sum(stream_lengths(sync_redis, settings)) == 1


def test_ingest_bearer_token(
    make_api: MakeApi, sync_redis: redis.Redis, settings: Settings
) -> None:
    api = make_api(api_token="s3cret")
    event = {"cid": "C1", "gender": "male"}
    refused = {"detail": "a valid bearer token is required"}
    for headers in (
        {},
        {"authorization": "Bearer nope"},
        {"authorization": "Bearer s3cret-and-more"},
        {"authorization": "Bearer "},
        {"authorization": "Basic s3cret"},
        {"authorization": "s3cret"},
    ):
        response = api.post("/v1/events", json=event, headers=headers)
        assert response.status_code == 401, headers
        assert response.json() == refused
        assert response.headers["www-authenticate"] == "Bearer"
    # The token is checked before the body: no validation details without it.
    response = api.post("/v1/events", content=b"{not json")
    assert response.status_code == 401
    assert sum(stream_lengths(sync_redis, settings)) == 0

    for scheme in ("Bearer", "bearer"):
        response = api.post("/v1/events", json=event, headers={"authorization": f"{scheme} s3cret"})
        assert (response.status_code, response.json()) == (202, {"accepted": 1})
    assert sum(stream_lengths(sync_redis, settings)) == 2

    # Reads stay open when only the ingest token is configured.
    assert api.get("/v1/clients/C1/gender").status_code == 404
    assert api.get("/v1/clients/C1").status_code == 404
    assert api.post("/v1/lookup", json={"cids": ["C1"]}).status_code == 200
    assert api.get("/v1/models").status_code == 200


def test_read_token_guards_lookups_and_models(make_api: MakeApi) -> None:
    api = make_api(read_token="r3ad")
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/v1/clients/C1/gender", {}, 404),
        ("GET", "/v1/clients/C1", {}, 404),
        ("POST", "/v1/lookup", {"json": {"cids": ["C1"]}}, 200),
        ("GET", "/v1/models", {}, 200),
    ]
    for method, url, kwargs, status in calls:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            response = api.request(method, url, headers=headers, **kwargs)
            assert response.status_code == 401, url
            assert response.json() == {"detail": "a valid bearer token is required"}
            assert response.headers["www-authenticate"] == "Bearer"
        response = api.request(method, url, headers={"authorization": "Bearer r3ad"}, **kwargs)
        assert response.status_code == status, url
    # Health, readiness and metrics stay open; ingest needs the ingest token, not this one.
    for url in ("/healthz", "/readyz", "/metrics"):
        assert api.get(url).status_code == 200, url
    response = api.post("/v1/events", json={"cid": "C1", "gender": "male"})
    assert response.status_code == 202


# -- GET /v1/models ---------------------------------------------------------------------------


def models_by_name(api: ApiClient) -> dict[str, dict[str, Any]]:
    response = api.get("/v1/models")
    assert response.status_code == 200
    rows = response.json()["models"]
    assert [row["name"] for row in rows] == MODEL_NAMES
    return {row["name"]: row for row in rows}


def counts(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
    return {
        name: (row["lag"], row["pending"], row["dead"], row["applied"])
        for name, row in rows.items()
    }


def test_models_with_aliases_default_and_counts(
    api: ApiClient,
    aio: Loop,
    clock: FakeClock,
    sync_redis: redis.Redis,
    settings: Settings,
) -> None:
    rows = models_by_name(api)
    registry = Registry.load(settings)
    for name, row in rows.items():
        model = registry.get(name)
        assert row["aliases"] == list(model.aliases)
        assert row["description"] == model.description
        assert row["default"] is (name == "top")
        assert row["stalled"] is False
    assert [rows[n]["aliases"] for n in MODEL_NAMES] == [["model1"], ["model2"], ["model3"]]
    assert counts(rows) == {name: (0, 0, 0, 0) for name in MODEL_NAMES}

    produce(
        api, [{"cid": f"C{i}", "gender": "female", "ts": clock.now_ms - HOUR} for i in range(6)]
    )
    rows = models_by_name(api)
    assert counts(rows) == {name: (6, 0, 0, 0) for name in MODEL_NAMES}
    assert all(row["stalled"] for row in rows.values())  # waiting work, no consumer

    process(aio, clock, ["top"])
    rows = models_by_name(api)
    assert counts(rows) == {"last": (6, 0, 0, 0), "top": (0, 0, 0, 6), "top7d": (6, 0, 0, 0)}
    assert rows["top"]["stalled"] is False

    # Entries delivered to a consumer of `last` and never acknowledged are pending.
    keys = Keys(settings.prefix)
    last = Registry.load(settings).get("last")
    aio.run(Worker(aio.client, last, settings, clock=clock).ensure_groups())
    lengths = stream_lengths(sync_redis, settings)
    shard = max(range(settings.shards), key=lambda s: lengths[s])
    taken = aio.run(streams.read_new(aio.client, keys.stream(shard), "last", "ghost", 100, None))
    assert len(taken) == lengths[shard] > 0
    rows = models_by_name(api)
    assert counts(rows)["last"] == (6 - len(taken), len(taken), 0, 0)

    # An invalid entry (written around the API) is dead-lettered by every model that drains.
    sync_redis.xadd(keys.stream(0), {"cid": "bad cid", "gender": "male"})
    process(aio, clock)
    rows = models_by_name(api)
    assert counts(rows) == {
        "last": (0, len(taken), 1, 6 - len(taken)),
        "top": (0, 0, 1, 6),
        "top7d": (0, 0, 1, 6),
    }


def test_models_default_flag_follows_the_setting(make_api: MakeApi) -> None:
    rows = models_by_name(make_api(default_model="top7d"))
    assert {name: row["default"] for name, row in rows.items()} == {
        "last": False,
        "top": False,
        "top7d": True,
    }


# -- health, readiness, metrics ---------------------------------------------------------------


def test_healthz(api: ApiClient) -> None:
    response = api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_reloads_scripts_after_script_flush(
    make_api: MakeApi, aio: Loop, clock: FakeClock, sync_redis: redis.Redis, settings: Settings
) -> None:
    read_clock = FakeClock(clock.now_ms)
    api = make_api(read_clock=read_clock)
    response = api.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})
    source = Registry.load(settings).get("top7d").refresh_source()
    assert source is not None
    sha = hashlib.sha1(source.encode()).hexdigest()
    assert sync_redis.script_exists(sha) == [True]

    sync_redis.script_flush()
    assert sync_redis.script_exists(sha) == [False]
    response = api.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})
    assert sync_redis.script_exists(sha) == [True]

    # Lookups that need the refresh script (the stored top7d answers expired a day later)
    # recover by themselves too, single and batch.
    produce(api, [{"cid": f"C{i}", "gender": "kids", "ts": clock.now_ms - HOUR} for i in range(3)])
    process(aio, clock)
    read_clock.advance(MS_PER_DAY)
    sync_redis.script_flush()
    response = api.get(gender_url("C0", "top7d"))
    assert response.status_code == 200
    assert (response.json()["gender"], response.json()["as_of"]) == ("kids", read_clock.now_ms)
    sync_redis.script_flush()
    response = api.post("/v1/lookup", json={"cids": ["C1", "C2", "nobody"], "model": "top7d"})
    assert response.status_code == 200
    assert [(r["gender"], r["as_of"]) for r in response.json()["results"]] == [
        ("kids", read_clock.now_ms),
        ("kids", read_clock.now_ms),
        (None, None),
    ]


def samples(api: ApiClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics(
    api: ApiClient, aio: Loop, clock: FakeClock, sync_redis: redis.Redis, settings: Settings
) -> None:
    produce(api, [{"cid": f"C{i}", "gender": "male", "ts": clock.now_ms - HOUR} for i in range(3)])
    sync_redis.xadd(Keys(settings.prefix).stream(1), {"cid": "C9", "gender": "robot"})
    before = samples(api)
    assert before[("genderd_lag", frozenset({("model", "top")}))] == 4
    process(aio, clock)
    assert api.get("/v1/clients/C1/gender").status_code == 200
    assert api.post("/v1/lookup", json={"cids": ["C1", "C2"]}).status_code == 200
    assert api.get("/v1/clients/C2").status_code == 200

    got = samples(api)
    for model in MODEL_NAMES:
        label = frozenset({("model", model)})
        assert got[("genderd_events_applied_total", label)] == 3
        assert got[("genderd_events_dead_lettered_total", label)] == 1
        assert got[("genderd_lag", label)] == 0
        assert got[("genderd_pending", label)] == 0
    for endpoint in ("client_gender", "lookup", "client"):
        assert got[("genderd_lookup_seconds_count", frozenset({("endpoint", endpoint)}))] == 1
        for bound in [*(str(float(b)) for b in LATENCY_BUCKETS_S), "+Inf"]:
            key = (
                "genderd_lookup_seconds_bucket",
                frozenset({("endpoint", endpoint), ("le", bound)}),
            )
            assert key in got, key
        inf = frozenset({("endpoint", endpoint), ("le", "+Inf")})
        assert got[("genderd_lookup_seconds_bucket", inf)] == 1


# -- top7d is right at read time --------------------------------------------------------------


def test_top7d_is_right_at_read_time(make_api: MakeApi, aio: Loop, clock: FakeClock) -> None:
    read_clock = FakeClock(clock.now_ms)
    api = make_api(read_clock=read_clock)
    now = clock.now_ms
    produce(
        api,
        [
            {"cid": "C6", "gender": "female", "ts": now - 6 * MS_PER_DAY},
            {"cid": "C7", "gender": "female", "ts": now - 6 * MS_PER_DAY},
            {"cid": "C7", "gender": "female", "ts": now - 6 * MS_PER_DAY + HOUR},
            {"cid": "C7", "gender": "male", "ts": now - 5 * MS_PER_DAY},
        ],
    )
    process(aio, clock)

    c6 = api.get(gender_url("C6", "top7d"))
    assert c6.status_code == 200
    assert c6.json() == {
        "cid": "C6",
        "model": "top7d",
        "gender": "female",
        "scores": {"female": 1},
        "last_event_ts": now - 6 * MS_PER_DAY,
        "as_of": now,
    }
    c7 = api.get(gender_url("C7", "model3")).json()
    assert (c7["gender"], c7["scores"], c7["as_of"]) == ("female", {"female": 2, "male": 1}, now)

    # One day later day D-6 has left the window; no event came, the answer is recomputed.
    read_clock.advance(MS_PER_DAY)
    assert api.get(gender_url("C6", "top7d")).status_code == 404
    c7 = api.get(gender_url("C7", "top7d")).json()
    assert c7 == {
        "cid": "C7",
        "model": "top7d",
        "gender": "male",
        "scores": {"male": 1},
        "last_event_ts": now - 5 * MS_PER_DAY,
        "as_of": now + MS_PER_DAY,
    }

    # Two days later nothing is left in the window.
    read_clock.advance(MS_PER_DAY)
    for cid in ("C6", "C7"):
        response = api.get(gender_url(cid, "top7d"))
        assert response.status_code == 404
        assert response.json() == {"detail": "model top7d has no answer for this client"}
    everything = api.get("/v1/clients/C7").json()["models"]
    assert everything["top7d"] is None
    assert everything["top"]["gender"] == "female"
    assert everything["top"]["scores"] == {"female": 2, "male": 1}
    assert everything["top"]["as_of"] == now  # top does not change with the clock
    batch = api.post("/v1/lookup", json={"cids": ["C6", "C7"], "model": "top7d"}).json()
    assert [r["gender"] for r in batch["results"]] == [None, None]
