"""Responses and errors of the HTTP API: orjson JSON, direct-call routes, error answers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from genderd.errors import InputError


class JSON(JSONResponse):
    """A JSON response encoded with orjson (no pydantic, no validation on the way out).

    A JSONResponse subclass so that FastAPI documents the routes' response models."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class RawRoute(APIRoute):
    """A route whose endpoint takes the request and returns a Response: called directly.

    FastAPI's dependency solving costs about as much as a lookup's Redis round trip; every
    genderd endpoint parses what it needs itself, and the route still documents itself in
    OpenAPI (response models, parameters given in ``openapi_extra``).
    """

    def get_route_handler(self) -> Endpoint:
        return cast(Endpoint, self.endpoint)


class ApiError(InputError):
    """An error answer: status, body and headers."""

    def __init__(self, status_code: int, detail: Any, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def invalid(location: list[str], message: str, kind: str) -> ApiError:
    """A 422 in FastAPI's error layout."""
    return ApiError(422, [{"loc": location, "msg": message, "type": kind}])
