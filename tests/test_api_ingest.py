"""The HTTP API's ingest (SPEC §5): validation as the workers do it, limits, tokens.

Events go in through ``POST /v1/events``, in-process workers drain them (see
:mod:`tests.support.api_helpers`); the app's read clock is a :class:`FakeClock` the tests move.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis

from genderd.api import MAX_BODY_BYTES
from genderd.events import Invalid, parse_entry
from genderd.settings import Settings

from .support.api_helpers import (
    ApiClient,
    MakeApi,
    produce,
    stream_key,
    stream_lengths,
)
from .support.runtime import FakeClock

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

    # Without ts the entry gets the API's clock (never the entry id's time, which an explicit
    # future id can push ahead); extra fields are dropped; a ts of digits in a string is fine.
    assert api.post("/v1/events", json={"cid": "p", "gender": "kids", "page": "/x"}).json() == {
        "accepted": 1
    }
    [(_, fields)] = sync_redis.xrange(stream_key(settings, "p"), count=1)
    assert fields == {b"cid": b"p", b"gender": b"kids", b"ts": str(clock.now_ms).encode()}
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


JSON_TYPE = {"content-type": "application/json"}


def test_ingest_413_for_a_body_over_4_mib(
    api: ApiClient, sync_redis: redis.Redis, settings: Settings
) -> None:
    assert MAX_BODY_BYTES == 4 * 1024 * 1024
    too_big = b'{"cid": "C1", "gender": "male", "pad": "' + b"a" * MAX_BODY_BYTES + b'"}'
    response = api.post("/v1/events", content=too_big, headers=JSON_TYPE)
    assert response.status_code == 413
    assert response.json() == {"detail": f"the body may be at most {MAX_BODY_BYTES} bytes"}

    async def chunked() -> Any:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    response = api.post("/v1/events", content=chunked(), headers=JSON_TYPE)
    assert response.status_code == 413
    assert sum(stream_lengths(sync_redis, settings)) == 0

    # Just under the limit is fine (extra fields are ignored).
    head = b'{"cid": "C1", "gender": "male", "pad": "'
    fits = head + b"a" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'
    assert len(fits) == MAX_BODY_BYTES
    response = api.post("/v1/events", content=fits, headers=JSON_TYPE)
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
    api = make_api(read_token="r3ad", api_token="1ngest")
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
    event = {"cid": "C1", "gender": "male"}
    read = {"authorization": "Bearer r3ad"}
    assert api.post("/v1/events", json=event, headers=read).status_code == 401
    ingest = {"authorization": "Bearer 1ngest"}
    assert api.post("/v1/events", json=event, headers=ingest).status_code == 202


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"],
)
@pytest.mark.parametrize("url", ["/v1/events", "/v1/lookup"])
def test_posts_must_be_json_415(
    api: ApiClient,
    sync_redis: redis.Redis,
    settings: Settings,
    url: str,
    content_type: str | None,
) -> None:
    """A web page can post text/plain or a form cross-site without a CORS preflight."""
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"cids": ["C1"]}' if url == "/v1/lookup" else b'{"cid": "C1", "gender": "male"}'
    response = api.post(url, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert sum(stream_lengths(sync_redis, settings)) == 0
    ok = api.post(url, content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code in (200, 202), ok.text


def test_a_body_that_does_not_arrive_in_time_is_408(
    make_api: MakeApi, sync_redis: redis.Redis, settings: Settings
) -> None:
    api = make_api(api_body_timeout_s=0.2)

    async def trickle() -> Any:
        yield b'{"cid": "C1", '
        await asyncio.sleep(2)  # the rest never comes in time
        yield b'"gender": "male"}'

    response = api.post("/v1/events", content=trickle(), headers=JSON_TYPE)
    assert response.status_code == 408
    assert response.json() == {"detail": "the body did not arrive within 0.2 s"}
    assert sum(stream_lengths(sync_redis, settings)) == 0


def test_a_client_that_disconnects_mid_body_is_counted_not_logged(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        {"type": "http.request", "body": b'{"cid": "C1", ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    with caplog.at_level(logging.INFO):
        api.run(api.app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    metrics = api.get("/metrics").text
    assert "genderd_http_client_disconnects_total 1.0" in metrics
