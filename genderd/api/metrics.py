"""Prometheus metrics of the API process: one registry per app, no module globals.

HTTP requests (per route template, method and status) and lookup latency are measured in the
process; the pipeline's counters (events applied and dead-lettered per model, lag, pending)
live in Redis and are read when /metrics is scraped.

The HTTP counters are plain dicts that the event loop's single thread increments, turned into
metric families only when scraped: prometheus_client's ``Counter.inc`` and
``Histogram.observe`` take a lock each, which every request would pay.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match

from genderd.erasure import Erased
from genderd.status import ModelStatus

# Lookups take well under a millisecond of server time; buckets resolve that range.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class PipelineCollector(Collector):
    """Exports the last snapshot of the pipeline's per-model status."""

    def __init__(self) -> None:
        self.snapshot: Sequence[ModelStatus] = ()

    def collect(self) -> Iterator[Metric]:
        applied = CounterMetricFamily(
            "genderd_events_applied", "Stream entries applied, per model", labels=["model"]
        )
        dead = CounterMetricFamily(
            "genderd_events_dead_lettered",
            "Stream entries dead-lettered, per model",
            labels=["model"],
        )
        lag = GaugeMetricFamily(
            "genderd_lag", "Entries not yet delivered to the model's group", labels=["model"]
        )
        pending = GaugeMetricFamily(
            "genderd_pending", "Entries delivered and not yet acknowledged", labels=["model"]
        )
        stalled = GaugeMetricFamily(
            "genderd_stalled",
            "1 when the model has waiting work and no live worker",
            labels=["model"],
        )
        for model in self.snapshot:
            applied.add_metric([model.name], model.applied)
            dead.add_metric([model.name], model.dead)
            lag.add_metric([model.name], model.lag)
            pending.add_metric([model.name], model.pending)
            stalled.add_metric([model.name], int(model.stalled))
        yield from (applied, dead, lag, pending, stalled)


# Request durations: from a fraction of a millisecond (lookups) to the body timeout.
REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (never the raw path)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpCollector(Collector):
    """``genderd_http_requests_total{route,method,status}`` and
    ``genderd_http_request_duration_seconds{route}``, counted in dicts (see the module)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        # per route: [count per bucket (le), ..., +Inf], sum of seconds
        self.durations: dict[str, tuple[list[int], list[float]]] = {}

    def count(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        buckets = self.durations.get(route)
        if buckets is None:
            buckets = self.durations[route] = ([0] * (len(REQUEST_BUCKETS_S) + 1), [0.0])
        buckets[0][bisect.bisect_left(REQUEST_BUCKETS_S, seconds)] += 1
        buckets[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "genderd_http_requests",
            "HTTP requests answered, per route template, method and status",
            labels=["route", "method", "status"],
        )
        for labels, n in sorted(self.requests.items()):
            requests.add_metric(list(labels), n)
        durations = HistogramMetricFamily(
            "genderd_http_request_duration_seconds",
            "Time from a request's arrival to its answer, per route template",
            labels=["route"],
        )
        for route, (counts, total) in sorted(self.durations.items()):
            cumulative, running = [], 0
            for bound, n in zip((*REQUEST_BUCKETS_S, float("inf")), counts, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
            durations.add_metric([route], cumulative, total[0])
        yield from (requests, durations)


def route_label(scope: Scope, asked: Scope) -> str:
    """The route template of a request (``scope`` after the app ran, ``asked`` as it came):
    the route FastAPI recorded, else the app's route that matches ``asked`` (Starlette's own
    routes, ``/openapi.json``, and mounts such as ``/docs/assets/{path}``, record none), else
    :data:`UNMATCHED` (never the raw path)."""
    route = scope.get("route")
    label = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(label, str) and label:
        return label
    routes: Sequence[BaseRoute] = getattr(getattr(asked.get("app"), "router", None), "routes", ())
    partial = None
    for candidate in routes:
        match, _ = candidate.matches(asked)
        if match is Match.FULL:
            return str(getattr(candidate, "path_format", UNMATCHED))
        if match is Match.PARTIAL and partial is None:  # the path matched, not the method
            partial = str(getattr(candidate, "path_format", UNMATCHED))
    return partial or UNMATCHED


class HttpMetrics:
    """ASGI middleware counting every HTTP request into an :class:`HttpCollector`, labelled
    with the template of the route that served it (``/v1/clients/{cid}/gender``)."""

    def __init__(self, app: ASGIApp, collector: HttpCollector) -> None:
        self.app = app
        self.collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        asked = dict(scope)  # as it came: routing rewrites the scope (a mount's path)
        status = 500  # an exception that escapes the app is answered 500 by Starlette

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.collector.count(
                route_label(scope, asked), scope["method"], status, time.perf_counter() - started
            )


class Metrics:
    """The API's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        self.lookup_seconds = Histogram(
            "genderd_lookup_seconds",
            "Time of the Redis round trip of a lookup, per endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.ingested = Counter(
            "genderd_events_ingested",
            "Events written to the streams by POST /v1/events",
            registry=self.registry,
        )
        self.ingest_rejected = Counter(
            "genderd_events_rejected",
            "Events refused by POST /v1/events (422: the whole request is refused)",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "genderd_http_client_disconnects",
            "Requests whose client disconnected before its body arrived",
            registry=self.registry,
        )
        self.erasures = Counter(
            "genderd_erasures",
            "Clients erased by DELETE /v1/clients/{cid} (SPEC 9); the log names their digests",
            registry=self.registry,
        )
        self.erased_items = Counter(
            "genderd_erased",
            "What erasures removed: keys, stream entries and dead letters",
            ["kind"],
            registry=self.registry,
        )
        self.pipeline = PipelineCollector()
        self.registry.register(self.pipeline)
        self.http = HttpCollector()
        self.registry.register(self.http)
        self._lookup_children: dict[str, Histogram] = {}

    def erased(self, done: Erased) -> None:
        """Count one erasure (never its client id: see SPEC 9)."""
        self.erasures.inc()
        for kind, n in done.as_dict().items():
            self.erased_items.labels(kind).inc(n)

    def lookup_time(self, endpoint: str) -> Histogram:
        """The lookup histogram of one endpoint (children cached: ``labels()`` takes a lock)."""
        child = self._lookup_children.get(endpoint)
        if child is None:
            child = self._lookup_children[endpoint] = self.lookup_seconds.labels(endpoint)
        return child

    def render(self, snapshot: Sequence[ModelStatus]) -> bytes:
        self.pipeline.snapshot = snapshot
        return generate_latest(self.registry)
