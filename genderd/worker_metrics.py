"""Prometheus metrics of one worker process, served by ``genderd worker --metrics-port P``.

Counted per batch as the worker applies it (not per event): entries applied and
dead-lettered (by reason), entries reclaimed from dead consumers, errors, batch durations, and
event-to-answer latency (from the time in an entry's id, when it was written, until the call
that applied it returned). The model's lag and pending are read from Redis every
``REFRESH_S`` by the worker itself and served from that cache, so a scrape costs Redis nothing.
Process metrics (CPU, memory, open files) come from prometheus_client's process collector.

Names shared with the API's ``/metrics`` (``genderd_events_applied_total``) count this
process's work; the API's count the whole deployment's, from Redis. Tell them apart by the
scrape job (see ``deploy/prometheus.yml``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genderd.events import entry_ms
from genderd.processor import Outcome

log = logging.getLogger(__name__)

REFRESH_S = 5.0  # how often the worker reads its model's lag and pending for the gauges
# From a millisecond (a worker keeping up) to an hour (catching up after an outage).
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)
BATCH_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class _Backlog(Collector):
    """The model's lag and pending, as last read (None before the first read)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.lag: int | None = None
        self.pending: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.lag is None or self.pending is None:
            return
        lag = GaugeMetricFamily(
            "genderd_lag", "Entries not yet delivered to the model's group", labels=["model"]
        )
        lag.add_metric([self.model], self.lag)
        pending = GaugeMetricFamily(
            "genderd_pending", "Entries delivered and not yet acknowledged", labels=["model"]
        )
        pending.add_metric([self.model], self.pending)
        yield from (lag, pending)


class WorkerMetrics:
    """The metrics of one worker of ``model``, in a registry of their own."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.applied = Counter(
            "genderd_events_applied",
            "Entries this worker applied",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self._dead = Counter(
            "genderd_events_dead",
            "Entries this worker dead-lettered",
            ["model", "reason"],
            registry=self.registry,
        )
        self.erased = Counter(
            "genderd_events_erased",
            "Entries acknowledged unapplied: their client was erased after they were written",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self.failed = Counter(
            "genderd_events_failed",
            "Entries left pending after a script error (retried, dead-lettered after "
            "max_deliveries)",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self.reclaimed = Counter(
            "genderd_reclaimed_entries",
            "Entries taken over from consumers that stopped answering",
            ["model"],
            registry=self.registry,
        ).labels(model)
        self._errors = Counter(
            "genderd_worker_errors",
            "Steps of a shard loop that failed and were retried, by kind",
            ["model", "kind"],
            registry=self.registry,
        )
        self.event_to_answer = Histogram(
            "genderd_event_to_answer_seconds",
            "From an entry's id time (when it was written) to the call that applied it",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        ).labels(model)
        self.batch_seconds = Histogram(
            "genderd_batch_duration_seconds",
            "Time to apply one batch (validation, scripts, dead letters)",
            ["model"],
            buckets=BATCH_BUCKETS_S,
            registry=self.registry,
        ).labels(model)
        self.backlog = _Backlog(model)
        self.registry.register(self.backlog)

    def batch(self, outcome: Outcome, seconds: float, now_ms: int) -> None:
        """Count one processed batch."""
        self.batch_seconds.observe(seconds)
        if outcome.applied:
            self.applied.inc(outcome.applied)
        if outcome.failed:
            self.failed.inc(outcome.failed)
        if outcome.erased:
            self.erased.inc(outcome.erased)
        for reason, n in outcome.reasons.items():
            self._dead.labels(self.model, reason).inc(n)
        for event in outcome.done:
            self.event_to_answer.observe(max(0, now_ms - entry_ms(event.id)) / 1000)

    def error(self, kind: str) -> None:
        """Count a failed step: ``unavailable`` (Redis cannot serve now), ``unexpected``."""
        self._errors.labels(self.model, kind).inc()

    def serve(self, port: int, host: str) -> None:
        """Serve ``/metrics`` on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("worker metrics on http://%s:%d/metrics", host, port)
