"""The HTTP API's lookups are one Redis round trip, and right at read time (top7d).

Events go in through ``POST /v1/events``, in-process workers drain them (see
:mod:`tests.support.api_helpers`); the app's read clock is a :class:`FakeClock` the tests move.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from genderd.bundled import BundledServer
from genderd.clock import MS_PER_DAY

from .support.api_helpers import (
    HOUR,
    MODEL_NAMES,
    ApiClient,
    MakeApi,
    RoundTripProxy,
    gender_url,
    process,
    produce,
)
from .support.runtime import FakeClock, Loop

# -- one Redis round trip per lookup --------------------------------------------------------------


# Commands a refresh script may run inside (the server counts them too).
SCRIPT_INTERNAL = {"hget", "hgetall", "hmget", "hset", "hdel", "exists"}


def top_level(commands: dict[str, int]) -> int:
    """How many commands a client sent, from the server's per-command counts: HMGETs or
    EVALSHAs (not both: an EVALSHA's script runs its own HMGET)."""
    if "evalsha" in commands:
        assert set(commands) - {"evalsha"} <= SCRIPT_INTERNAL, commands
        return commands["evalsha"]
    assert set(commands) <= {"hmget"}, commands
    return commands.get("hmget", 0)


def command_calls(sync_redis: redis.Redis) -> Counter[str]:
    stats = sync_redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


@pytest.fixture
def proxy(aio: Loop, redis_server: BundledServer) -> Iterator[RoundTripProxy]:
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
