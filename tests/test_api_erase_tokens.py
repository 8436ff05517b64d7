"""``DELETE /v1/clients/{cid}`` and ``GET /v1/erasures/{id}`` are never less protected than
the lookups (SPEC §9): they take the ingest token, and the API refuses to start with a read
token but no ingest token (erasure would be open to anyone while reads are closed)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from genderd.api import create_app
from genderd.cli import main
from genderd.errors import ConfigurationError
from genderd.settings import Settings

from .support.api_helpers import MakeApi

INGEST = {"Authorization": "Bearer 1ngest"}
READ = {"Authorization": "Bearer r3ad"}


@pytest.mark.parametrize(
    ("tokens", "allowed", "refused"),
    [
        ({}, [{}], []),
        ({"api_token": "1ngest"}, [INGEST], [{}, READ]),
        ({"api_token": "1ngest", "read_token": "r3ad"}, [INGEST], [{}, READ]),
    ],
)
def test_delete_takes_the_ingest_token(
    make_api: MakeApi,
    tokens: dict[str, str],
    allowed: list[dict[str, str]],
    refused: list[dict[str, str]],
) -> None:
    api = make_api(**tokens)
    for headers in refused:
        response = api.request("DELETE", "/v1/clients/C1", headers=headers)
        assert response.status_code == 401, headers
        # a refused caller learns nothing about whether the client existed
        assert response.json() == {"detail": "a valid bearer token is required"}
    for headers in allowed:
        response = api.request("DELETE", "/v1/clients/C1", headers=headers)
        assert response.status_code == 202, headers
        assert response.json()["cid"] == "C1"
        where = response.json()["status"]
        for other in refused:
            assert api.get(where, headers=other).status_code == 401, other
        assert api.get(where, headers=headers).json()["state"] == "scrubbing"


def test_a_read_token_without_an_ingest_token_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="GENDERD_API_TOKEN"):
        create_app(settings.model_copy(update={"read_token": "r3ad"}))


def test_serve_refuses_it_in_one_line(redis_url: str) -> None:
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_READ_TOKEN": "r3ad"}
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 2
    assert "GENDERD_READ_TOKEN is set but GENDERD_API_TOKEN is not" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
