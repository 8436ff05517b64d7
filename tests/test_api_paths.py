"""A route matches the whole request path: a trailing line break (``%0A``) is not ignored, so
``GET /v1/clients/A5%0A`` is no lookup of ``A5`` and ``DELETE /v1/clients/A2%0A`` erases
nothing (Starlette's ``$`` matched before a final newline)."""

from __future__ import annotations

import pytest

from .support.api_helpers import ApiClient, drain
from .support.runtime import FakeClock, Loop

WITH_A_PATH_PARAMETER = [
    ("GET", "/v1/clients/A5%0A/gender"),
    ("GET", "/v1/clients/A5/gender%0A"),
    ("GET", "/v1/clients/A5%0A"),
    ("DELETE", "/v1/clients/A5%0A"),
    ("GET", "/docs/assets/swagger-ui.css%0A"),
]
FIXED = ["/healthz", "/readyz", "/metrics", "/v1/models", "/docs", "/openapi.json"]


@pytest.mark.parametrize(("method", "path"), WITH_A_PATH_PARAMETER)
def test_a_trailing_line_break_matches_no_route(
    aio: Loop, api: ApiClient, clock: FakeClock, method: str, path: str
) -> None:
    assert api.post("/v1/events", json={"cid": "A5", "gender": "kids"}).status_code == 202
    drain(aio.loop, aio.client, aio.settings, clock)
    assert api.get("/v1/clients/A5/gender").status_code == 200

    assert api.request(method, path).status_code == 404
    # nothing was erased: A5 still answers
    assert api.get("/v1/clients/A5/gender").json()["gender"] == "kids"


@pytest.mark.parametrize("path", FIXED)
def test_fixed_routes_do_not_take_a_trailing_line_break(api: ApiClient, path: str) -> None:
    assert api.get(path + "%0A").status_code == 404
    assert api.get(path).status_code != 404


def test_a_trailing_slash_is_not_redirected_to_the_hosts_name(api: ApiClient) -> None:
    # a 307 to the path without the slash built its Location from the Host header
    response = api.get("/v1/models/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
