"""The HTTP API's lookups (SPEC §5): one client, all models of a client, batches.

Events go in through ``POST /v1/events``, in-process workers drain them (see
:mod:`tests.support.api_helpers`); the app's read clock is a :class:`FakeClock` the tests move.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from genderd.clock import MS_PER_DAY

from .support.api_helpers import (
    HOUR,
    KNOWN,
    MODEL_NAMES,
    ApiClient,
    MakeApi,
    cid_path,
    gender_url,
    process,
    produce,
)
from .support.runtime import FakeClock, Loop

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
    # the model parameter escaped, with other parameters, or given twice (the last counts)
    for query, expected in [
        ("model=%74op7d", top7d),
        ("x=1&model=last", last),
        ("model=last&x=1", last),
        ("model=top&model=last", last),
        ("model=top+", top),  # "+" is a space, and names are trimmed
        ("model=nope", None),
    ]:
        response = api.get(f"/v1/clients/C1/gender?{query}")
        if expected is None:
            assert response.status_code == 422, query
        else:
            assert (response.status_code, response.json()) == (200, expected), query


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
            "recency": {  # a day apart, 7 days' half-life: male weighs more
                "gender": "male",
                "scores": {"female": 0.9057, "male": 1.0},
                "last_event_ts": now - 9 * MS_PER_DAY,
                "as_of": now,
            },
        },
    }
    recent = api.get("/v1/clients/C3").json()["models"]
    assert {name: answer["gender"] for name, answer in recent.items()} == {
        "last": "kids",
        "top": "kids",
        "top7d": "kids",
        "recency": "kids",
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


def test_a_batch_of_1000_longest_cids_fits_however_it_is_escaped(api: ApiClient) -> None:
    # 128 characters outside the BMP each, JSON-escaped as surrogate pairs (12 bytes a
    # character): the largest batch a client can send in compact JSON (docs/api.md)
    cids = [f"{n:03d}" + "\U0001f600" * 125 for n in range(1000)]
    body = json.dumps({"cids": cids, "model": "top"}, separators=(",", ":")).encode()
    assert len(body) > 1_500_000
    response = api.post("/v1/lookup", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert [item["cid"] for item in response.json()["results"]] == cids
    too_big = body[:-2] + b"," + b" " * 600_000 + b"]}"
    response = api.post("/v1/lookup", content=too_big, headers={"content-type": "application/json"})
    assert response.status_code == 413
