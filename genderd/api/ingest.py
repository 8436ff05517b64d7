"""``POST /v1/events``: one event or up to 10,000, validated as the workers validate them.

An ordinary FastAPI route that reads its body raw (so that every bad event is reported with
its index and reason, and any bad body is a 422). The events go out on the pool, not on the
pipelined connection, so that a large batch never queues ahead of lookups. An
``Idempotency-Key`` header makes a repeat of the request write nothing twice
(:mod:`genderd.ingest`, SPEC §12).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genderd.api.inputs import check_item, event_items, read_body
from genderd.api.lookups import UNAVAILABLE
from genderd.api.responses import JSON, ApiError, invalid
from genderd.api.schemas import Accepted, BadEvents, Problem
from genderd.api.state import api_of
from genderd.events import EventError
from genderd.ingest import Event, IdempotencyKeyError, check_key, plan, write
from genderd.replication import confirm

KEY_HEADER = "idempotency-key"
KEY_LOCATION = ["header", "Idempotency-Key"]


def _key(request: Request) -> str | None:
    """The request's idempotency key, None without one; 422 for a bad one (nothing read)."""
    given = request.headers.getlist(KEY_HEADER)
    if not given:
        return None
    if len(given) > 1:
        raise invalid(
            KEY_LOCATION, "the Idempotency-Key is given more than once", "bad_idempotency_key"
        )
    try:
        return check_key(given[0])
    except IdempotencyKeyError as error:
        raise invalid(KEY_LOCATION, str(error), error.reason) from None


async def ingest(request: Request) -> Response:
    """Validates every event exactly as the workers do; writes all of them or none (with an
    ``Idempotency-Key``: none of those an earlier attempt wrote)."""
    api = api_of(request)
    api.check_token(request, api.settings.api_token)
    key = _key(request)
    items = event_items(await read_body(request, api.settings.api_body_timeout_s))
    deployment = await api.deployment()
    now = api.clock()
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(
                {"index": index, "reason": "not_an_object", "detail": "an event must be an object"}
            )
            continue
        try:
            cid, gender, ts = check_item(item, deployment.settings, now)
        except EventError as error:
            errors.append({"index": index, "reason": error.reason.value, "detail": error.detail})
            continue
        # an explicit ts always (see Producer.send_fields): ids may run ahead of the clock
        events.append((cid, gender, ts, now if ts is None else ts))
    if errors:
        api.metrics.ingest_rejected.inc(len(errors))
        raise ApiError(422, errors)
    batch = plan(deployment, events, key, api.settings.idempotency_ttl_s)
    try:
        written = await write(api.connected().pool, batch)
    except IdempotencyKeyError as error:
        raise invalid(KEY_LOCATION, str(error), error.reason) from None
    # GENDERD_INGEST_REPLICAS: 202 once the events reached the replicas, else 503
    shards = {deployment.shard_of(event[0]) for event in events}
    await confirm(api.connected().pool, deployment.keys, shards, api.settings)
    api.metrics.ingested.inc(written)
    if written < batch.count:
        api.metrics.ingest_repeated.inc(batch.count - written)
    return JSON({"accepted": batch.count}, 202)


def install(router: APIRouter) -> None:
    """Add the ingest route to ``router`` (the app's own; see :mod:`genderd.api.lookups`)."""
    router.add_api_route(
        "/v1/events",
        ingest,
        methods=["POST"],
        status_code=202,
        response_model=Accepted,
        responses={
            401: {"model": Problem, "description": "a bearer token is configured and missing"},
            413: {"model": Problem, "description": "the body is too large"},
            415: {"model": Problem, "description": "the body is not application/json"},
            422: {
                "model": BadEvents,
                "description": "every bad event; or (FastAPI's layout, loc [header, "
                "Idempotency-Key]) a bad Idempotency-Key or one used for another body; "
                "nothing was written (unless a shard had lost its record of the key: then "
                "the message says how many events were)",
            },
            503: UNAVAILABLE,
        },
        summary="Ingest one event or up to 10,000",
    )
