"""The HTTP API's operator routes: models, health, readiness, metrics.

Events go in through ``POST /v1/events``, in-process workers drain them (see
:mod:`tests.support.api_helpers`); the app's read clock is a :class:`FakeClock` the tests move.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from genderd import streams
from genderd.api.metrics import LATENCY_BUCKETS_S
from genderd.bundled import free_port
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.keys import Keys
from genderd.settings import Settings

from .support.api_helpers import (
    HOUR,
    MODEL_NAMES,
    ApiClient,
    MakeApi,
    gender_url,
    process,
    produce,
    stream_lengths,
)
from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

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
    registry = Deployment.build(settings).registry
    for name, row in rows.items():
        model = registry.get(name)
        assert row["aliases"] == list(model.aliases)
        assert row["description"] == model.description
        assert row["default"] is (name == "top")
        assert row["stalled"] is False
    assert [rows[n]["aliases"] for n in MODEL_NAMES] == [["model1"], [], ["model2"], ["model3"]]
    assert counts(rows) == {name: (0, 0, 0, 0) for name in MODEL_NAMES}

    produce(
        api, [{"cid": f"C{i}", "gender": "female", "ts": clock.now_ms - HOUR} for i in range(6)]
    )
    rows = models_by_name(api)
    assert counts(rows) == {name: (6, 0, 0, 0) for name in MODEL_NAMES}
    assert all(row["stalled"] for row in rows.values())  # waiting work, no consumer

    process(aio, clock, ["top"])
    rows = models_by_name(api)
    assert counts(rows) == {
        "last": (6, 0, 0, 0),
        "recency": (6, 0, 0, 0),
        "top": (0, 0, 0, 6),
        "top7d": (6, 0, 0, 0),
    }
    assert rows["top"]["stalled"] is False

    # Entries delivered to a consumer of `last` and never acknowledged are pending.
    keys = Keys(settings.prefix)
    last = Deployment.build(settings).registry.get("last")
    aio.run(make_worker(aio.client, last, settings, clock=clock).ensure_groups())
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
        "recency": (0, 0, 1, 6),
        "top": (0, 0, 1, 6),
        "top7d": (0, 0, 1, 6),
    }


def test_models_default_flag_follows_the_setting(make_api: MakeApi) -> None:
    rows = models_by_name(make_api(default_model="top7d"))
    assert {name: row["default"] for name, row in rows.items()} == {
        "last": False,
        "recency": False,
        "top": False,
        "top7d": True,
    }


# -- health, readiness, metrics ---------------------------------------------------------------


def test_healthz(api: ApiClient) -> None:
    response = api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


READY = {"status": "ready", "transport": "pipelined"}


def test_readyz_reloads_scripts_after_script_flush(
    make_api: MakeApi, aio: Loop, clock: FakeClock, sync_redis: redis.Redis, settings: Settings
) -> None:
    read_clock = FakeClock(clock.now_ms)
    api = make_api(read_clock=read_clock)
    response = api.get("/readyz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ready", "transport": "pipelined"},
    )
    script = Deployment.build(settings).registry.get("top7d").refresh_script
    assert script is not None
    sha = hashlib.sha1(script.source.encode()).hexdigest()
    assert sync_redis.script_exists(sha) == [True]

    sync_redis.script_flush()
    assert sync_redis.script_exists(sha) == [False]
    response = api.get("/readyz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ready", "transport": "pipelined"},
    )
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
    make_api: MakeApi, aio: Loop, clock: FakeClock, sync_redis: redis.Redis, settings: Settings
) -> None:
    api = make_api(metrics_cache_s=0)  # every scrape reads Redis
    produce(api, [{"cid": f"C{i}", "gender": "male", "ts": clock.now_ms - HOUR} for i in range(3)])
    sync_redis.xadd(Keys(settings.prefix).stream(1), {"cid": "C9", "gender": "robot"})
    before = samples(api)
    assert before[("genderd_lag", frozenset({("model", "top")}))] == 4
    process(aio, clock)
    assert api.get("/v1/clients/C1/gender").status_code == 200
    assert api.post("/v1/lookup", json={"cids": ["C1", "C2"]}).status_code == 200
    assert api.get("/v1/clients/C2").status_code == 200

    got = samples(api)
    assert got[("genderd_events_ingested_total", frozenset())] == 3  # through the API
    bad = api.post("/v1/events", json={"events": [{"cid": "C1", "gender": "x"}, {"cid": ""}]})
    assert bad.status_code == 422
    assert samples(api)[("genderd_events_rejected_total", frozenset())] == 2
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


def test_the_interactive_docs_work_without_the_internet(api: ApiClient) -> None:
    """/docs loads Swagger UI from the app itself, never from a CDN."""
    page = api.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        assert api.get(asset).status_code == 200, asset
    assert "/openapi.json" in page.text
    assert api.get("/openapi.json").json()["info"]["title"] == "genderd"
    assert api.get("/redoc").status_code == 404  # ReDoc has no offline bundle


def test_http_requests_are_counted_per_route_template_method_and_status(
    api: ApiClient, make_api: MakeApi, aio: Loop, clock: FakeClock
) -> None:
    produce(api, [{"cid": "C1", "gender": "male", "ts": clock.now_ms - HOUR}])
    process(aio, clock)
    assert api.get("/v1/clients/C1/gender").status_code == 200
    assert api.get("/v1/clients/C2/gender").status_code == 404  # no answer
    assert api.get("/v1/clients/C1/gender?model=nope").status_code == 422
    assert api.get("/nowhere/C1").status_code == 404  # no route
    got = samples(api)
    gender = "/v1/clients/{cid}/gender"
    for status, n in (("200", 1), ("404", 1), ("422", 1)):
        key = frozenset({("route", gender), ("method", "GET"), ("status", status)})
        assert got[("genderd_http_requests_total", key)] == n, status
    unmatched = frozenset({("route", "unmatched"), ("method", "GET"), ("status", "404")})
    assert got[("genderd_http_requests_total", unmatched)] == 1
    assert not any("C1" in dict(labels).get("route", "") for _, labels in got)  # no raw ids
    # FastAPI's own routes and the docs' mounted assets are labelled with their templates too
    assert api.get("/openapi.json").status_code == 200
    assert api.get("/docs/assets/nothing-here.js").status_code == 404
    got = samples(api)
    for route, status in (("/openapi.json", "200"), ("/docs/assets/{path}", "404")):
        key = frozenset({("route", route), ("method", "GET"), ("status", status)})
        assert got[("genderd_http_requests_total", key)] == 1, route
    assert got[("genderd_http_requests_total", unmatched)] == 1
    count = ("genderd_http_request_duration_seconds_count", frozenset({("route", gender)}))
    assert got[count] == 3
    inf = frozenset({("route", gender), ("le", "+Inf")})
    assert got[("genderd_http_request_duration_seconds_bucket", inf)] == 3

    # Redis gone: the lookup is a 503, counted as such
    down = make_api(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert down.get("/v1/clients/C1/gender").status_code == 503
    key = frozenset({("route", gender), ("method", "GET"), ("status", "503")})
    assert samples(down)[("genderd_http_requests_total", key)] == 1


def test_scrapers_share_one_read_of_redis_per_cache_period(
    make_api: MakeApi, aio: Loop, clock: FakeClock, sync_redis: redis.Redis
) -> None:
    """Many scrapers cost Redis one status read per GENDERD_METRICS_CACHE_S, not one each."""
    api = make_api(metrics_cache_s=60)
    produce(api, [{"cid": "C1", "gender": "male", "ts": clock.now_ms - HOUR}])
    top = ("genderd_lag", frozenset({("model", "top")}))
    assert samples(api)[top] == 1
    calls = sync_redis.info("commandstats").get("cmdstat_xinfo|groups", {}).get("calls", 0)
    assert calls > 0  # the first scrape read the groups
    process(aio, clock)
    for _ in range(5):
        assert samples(api)[top] == 1  # the cached figure
    after = sync_redis.info("commandstats").get("cmdstat_xinfo|groups", {}).get("calls", 0)
    assert after == calls  # no scrape read Redis again
    assert samples(make_api(metrics_cache_s=0))[top] == 0  # what it reads now
