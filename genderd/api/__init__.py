"""The HTTP API: ``create_app(settings)`` (see :mod:`genderd.api.app`)."""

from genderd.api.app import create_app
from genderd.api.inputs import MAX_BODY_BYTES, MAX_LOOKUP_BODY_BYTES

__all__ = ["MAX_BODY_BYTES", "MAX_LOOKUP_BODY_BYTES", "create_app"]
