"""What an evaluation evaluated (``--json``'s ``provenance``): the input and its digest or id
ranges, the settings that shaped the figures, the version and each model's origin.

Two reports with the same provenance were made from the same bytes (or the same retained
entries) with the same settings; the server's address is given without credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from genderd import __version__
from genderd.catalog import kind_of
from genderd.deployment import Deployment
from genderd.evaluation.digest import Digest
from genderd.evaluation.inputs import InputSummary
from genderd.evaluation.predictors import Order
from genderd.evaluation.report import ModelOrigin, Provenance, ShardRange, Source
from genderd.evaluation.selection import Selection
from genderd.models.base import Model
from genderd.models.window import WindowRuntime


def server_address(url: str) -> str:
    """``url`` without its user name, password and query (which may carry a password):
    ``redis://host:port/db``, ``unix:///path``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def file_source(path: str, digest: Digest, *, stdin: bool = False) -> Source:
    """The provenance of events read from a file (or from stdin, spooled)."""
    return Source(
        kind="stdin" if stdin else "file",
        path=None if stdin else path,
        sha256=digest.sha256,
        size=digest.size,
    )


def streams_source(deployment: Deployment, summary: InputSummary) -> Source:
    """The provenance of events read from the deployment's streams: the server, the prefix
    and what was read of each stream."""
    settings = deployment.settings
    return Source(
        kind="streams",
        server=server_address(settings.redis_url) if settings.redis_url else None,
        prefix=settings.prefix,
        shards=tuple(
            ShardRange(read.stream, read.entries, read.first_id, read.last_id)
            for read in summary.streams
        ),
    )


def model_origin(deployment: Deployment, model: Model) -> ModelOrigin:
    """What ``model`` is and where it comes from, as the catalog records it."""
    cls = model.defined_by
    return ModelOrigin(
        name=model.name,
        kind=kind_of(model),
        cls=f"{cls.__module__}.{cls.__qualname__}",
        loaded_from=deployment.registry.where(model.name),
        window_days=model.window if isinstance(model, WindowRuntime) else None,
    )


def provenance(
    source: Source,
    deployment: Deployment,
    models: Sequence[Model],
    *,
    order: Order,
    selection: Selection,
    evaluated_at_ms: int,
) -> Provenance:
    """The provenance of an evaluation of ``models`` on ``source``."""
    settings = deployment.settings
    return Provenance(
        input=source,
        since_ms=selection.since_ms,
        until_ms=selection.until_ms,
        warmup=selection.warmup,
        order=order,
        session_gap_ms=selection.session_gap_ms,
        max_delay_ms=selection.max_delay_ms,
        window_days=settings.window_days,
        genders=tuple(settings.genders),
        version=__version__,
        models=tuple(model_origin(deployment, model) for model in models),
        evaluated_at_ms=evaluated_at_ms,
    )


__all__ = ["file_source", "model_origin", "provenance", "server_address", "streams_source"]
