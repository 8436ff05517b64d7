"""Prometheus metrics of the API process: one registry per app, no module globals.

Lookup latency is measured in the process; the pipeline's counters (events applied and
dead-lettered per model, lag, pending) live in Redis and are read when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class Metrics:
    """The API's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.lookup_seconds = Histogram(
            "genderd_lookup_seconds",
            "Time of the Redis round trip of a lookup, per endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.disconnects = Counter(
            "genderd_http_client_disconnects",
            "Requests whose client disconnected before its body arrived",
            registry=self.registry,
        )
        self.pipeline = PipelineCollector()
        self.registry.register(self.pipeline)
        self._lookup_children: dict[str, Histogram] = {}

    def lookup_time(self, endpoint: str) -> Histogram:
        """The lookup histogram of one endpoint (children cached: ``labels()`` takes a lock)."""
        child = self._lookup_children.get(endpoint)
        if child is None:
            child = self._lookup_children[endpoint] = self.lookup_seconds.labels(endpoint)
        return child

    def render(self, snapshot: Sequence[ModelStatus]) -> bytes:
        self.pipeline.snapshot = snapshot
        return generate_latest(self.registry)
