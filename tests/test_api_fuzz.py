"""Requests generated from the app's own OpenAPI schema (schemathesis 4) against a real server.

Every operation gets the schema's own examples (against seeded data, so that they reach the
success answers) and a bounded number of generated requests, valid ones (positive) and, where
the operation has parameters or a body, invalid ones (negative), derandomised so that every
run sends the same requests. No answer may be a 5xx; answers must have documented status codes,
content types, headers and bodies. The app runs through schemathesis' ASGI transport (its own
in-process client: no starlette TestClient, no warnings), with its lifespan shut down after
each test.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import checks
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from genderd.api import create_app
from genderd.api.schemas import (
    Accepted,
    ClientAnswers,
    Erasure,
    ErasureProgress,
    GenderAnswer,
    LookupResponse,
    ModelsResponse,
)
from genderd.clock import wall_clock_ms
from genderd.keys import Keys, shard_of
from genderd.settings import Settings

from .support.api_helpers import drain
from .support.runtime import Loop

MAX_EXAMPLES = 30  # per operation and generation mode

FUZZ_SETTINGS = hsettings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)


def _schema_offline() -> dict[str, Any]:
    """The OpenAPI document (building it needs no Redis)."""
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()


OPENAPI = _schema_offline()
OPERATIONS = [
    (method.upper(), path, bool(op.get("parameters") or op.get("requestBody")))
    for path, methods in OPENAPI["paths"].items()
    for method, op in methods.items()
]
IDS = [f"{method} {path}" for method, path, _ in OPERATIONS]

CONFORMANCE = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def seeded(aio: Loop, settings: Settings) -> Settings:
    """The clients of the schema's examples have answers, so that examples reach the 200s."""
    keys = Keys(settings.prefix)
    now = wall_clock_ms()
    for i, cid in enumerate(["C1", "C2", "C9", "C42"]):
        for gender in ("female", "male", "female")[: i % 3 + 1]:
            fields = {"cid": cid, "gender": gender, "ts": str(now - 3_600_000)}
            aio.run(aio.client.xadd(keys.stream(shard_of(cid, settings.shards)), fields))
    drain(aio.loop, aio.client, settings, wall_clock_ms)
    return settings


def _run(kind: str, strategy: Any, checks_: list[Any], failures: dict[str, str]) -> None:
    """Send the strategy's cases; record the first failure of each check and status code."""

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call()
        for check in checks_:
            try:
                case.validate_response(response, checks=[check])
            except BaseException as failure:  # a schemathesis FailureGroup
                key = f"{check.__name__} [{response.status_code}]"
                failures.setdefault(key, f"{kind}: {failure}")

    run()


def fuzz(
    settings: Settings, method: str, path: str, has_input: bool, checks_: list[Any]
) -> dict[str, str]:
    """Run the generated requests of one operation; the distinct failures, by kind."""
    app = create_app(settings)
    failures: dict[str, str] = {}
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operation = schema[path][method]
        strategies = [("example", s) for s in schema.get_strategies_from_examples(operation)]
        strategies.append(("positive", operation.as_strategy(GenerationMode.POSITIVE)))
        if has_input:
            strategies.append(("negative", operation.as_strategy(GenerationMode.NEGATIVE)))
        for kind, strategy in strategies:
            _run(kind, strategy, checks_, failures)
    finally:
        shutdown_lifespans()
    return failures


@pytest.mark.parametrize(("method", "path", "has_input"), OPERATIONS, ids=IDS)
def test_generated_requests_never_get_a_server_error(
    seeded: Settings, method: str, path: str, has_input: bool
) -> None:
    failures = fuzz(seeded, method, path, has_input, [checks.not_a_server_error])
    assert not failures, "\n\n".join(failures.values())


@pytest.mark.parametrize(("method", "path", "has_input"), OPERATIONS, ids=IDS)
def test_generated_requests_get_documented_answers(
    seeded: Settings, method: str, path: str, has_input: bool
) -> None:
    """Status code, content type, headers and body as the schema documents them."""
    failures = fuzz(seeded, method, path, has_input, CONFORMANCE)
    assert not failures, "\n\n".join(f"== {k}\n{v}" for k, v in sorted(failures.items()))


def test_the_schema_documents_the_answers_and_their_errors() -> None:
    """Each success answer refers to its model; every call that validates input documents
    its 422 (checked directly, without generating requests)."""
    expected = {
        ("get", "/v1/clients/{cid}/gender", "200"): GenderAnswer,
        ("get", "/v1/clients/{cid}", "200"): ClientAnswers,
        ("post", "/v1/lookup", "200"): LookupResponse,
        ("post", "/v1/events", "202"): Accepted,
        ("get", "/v1/models", "200"): ModelsResponse,
        ("delete", "/v1/clients/{cid}", "202"): Erasure,
        ("get", "/v1/erasures/{erasure_id}", "200"): ErasureProgress,
    }
    wrong = {}
    for (method, path, status), model in expected.items():
        responses = OPENAPI["paths"][path][method]["responses"]
        schema = responses.get(status, {}).get("content", {}).get("application/json", {})
        if schema.get("schema") != {"$ref": f"#/components/schemas/{model.__name__}"}:
            wrong[f"{method.upper()} {path} {status}"] = schema.get("schema")
    assert not wrong, f"success answers documented with the wrong schema: {wrong}"
    for path in ("/v1/clients/{cid}/gender", "/v1/clients/{cid}", "/v1/lookup", "/v1/events"):
        for method, operation in OPENAPI["paths"][path].items():
            assert "422" in operation["responses"], (method, path)
