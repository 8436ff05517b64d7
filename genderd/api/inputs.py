"""Reading request bodies of the HTTP API: size limits, batch lookups, events."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import ClientDisconnect

from genderd.api.responses import ApiError
from genderd.api.schemas import MAX_INGEST_EVENTS, LookupRequest
from genderd.errors import InputError
from genderd.events import EventError, Reason, check_event
from genderd.settings import Settings

MAX_BODY_BYTES = 4 * 1024 * 1024  # 10,000 events of ~200 bytes fit with room to spare
# 1,000 cids of 128 characters fit however they are written: a character outside the BMP,
# JSON-escaped, is 12 bytes (a surrogate pair, two 6-byte \\u escapes), so 1,000 x (128 x 12 + 3)
# = 1,539,000 bytes of cids, with room for the rest of a compact body
MAX_LOOKUP_BODY_BYTES = 2 * 1024 * 1024


class ClientGoneError(InputError):
    """The client disconnected before its body arrived (counted, not logged as an error)."""


async def read_body(request: Request, timeout_s: float, limit: int = MAX_BODY_BYTES) -> bytes:
    """The JSON request body: 415 unless the content type is ``application/json`` (a web page
    cannot post that cross-site without a CORS preflight), 413 beyond ``limit`` bytes (without
    reading it all), 408 when it has not arrived within ``timeout_s``."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "the body must be JSON with Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body may be at most {limit} bytes")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(left, 0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise ApiError(
                408, f"the body did not arrive within {timeout_s:g} s", {"Connection": "close"}
            ) from None
        except ClientDisconnect:
            raise ClientGoneError() from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def lookup_request(body: bytes) -> LookupRequest:
    """The batch lookup body; read raw so that any bad body is a 422 in FastAPI's layout."""
    try:
        return LookupRequest.model_validate_json(body)
    except PydanticValidationError as error:
        raise ApiError(
            422,
            [
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in error.errors(include_url=False, include_input=False)
            ],
        ) from None


def event_items(body: bytes) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(422, [{"index": 0, "reason": "bad_json", "detail": str(error)}]) from None
    if isinstance(data, dict) and "events" in data:
        items = data["events"]
        if not isinstance(items, list) or not items:
            raise ApiError(
                422,
                [
                    {
                        "index": 0,
                        "reason": "bad_request",
                        "detail": "events must be a non-empty list of events",
                    }
                ],
            )
        if len(items) > MAX_INGEST_EVENTS:
            raise ApiError(
                422,
                [
                    {
                        "index": MAX_INGEST_EVENTS,
                        "reason": "too_many_events",
                        "detail": f"at most {MAX_INGEST_EVENTS} events per request",
                    }
                ],
            )
        return items
    return [data]


def check_item(item: dict[str, Any], settings: Settings, now: int) -> tuple[str, str, int | None]:
    """check_event, after the type checks JSON needs (a stream entry is always strings)."""
    if not isinstance(item.get("cid", ""), str):
        raise EventError(Reason.BAD_CID, "cid must be a string")
    if not isinstance(item.get("gender", ""), str):
        raise EventError(Reason.UNKNOWN_GENDER, "gender must be a string")
    ts = item.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, str))):
        raise EventError(Reason.BAD_TS, "ts must be an integer of milliseconds")
    return check_event(item, settings.genders, now, settings.max_future_ms)
