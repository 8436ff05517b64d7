"""Prometheus metrics of the API process: one registry per app, no module globals.

HTTP requests (per route template, method and status) and lookup latency are measured in the
process; the pipeline's counters (events applied and dead-lettered per model, lag, pending)
live in Redis and are read when /metrics is scraped.

The HTTP counters are plain dicts that the event loop's single thread increments, turned into
metric families only when scraped: prometheus_client's ``Counter.inc`` and
``Histogram.observe`` take a lock each, which every request would pay.

With more than one API process (``genderd serve --workers N``) a scrape reaches one of them, so
each process's counts must be visible to all: ``genderd serve`` then sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before uvicorn starts its workers, and every
process writes its counters and histograms to its own memory-mapped files there
(prometheus_client's multiprocess mode; the HTTP dicts are written through to a file of their
own, still without a lock). A scrape merges every file, those of exited processes included, so
counters never go down when a worker dies and is replaced.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match

from genderd.erasure import Erasure
from genderd.status import ModelStatus

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

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
    """Exports the last snapshot of the pipeline's per-model status, and the champion."""

    def __init__(self) -> None:
        self.snapshot: Sequence[ModelStatus] = ()
        self.champion: ChampionSnapshot | None = None

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
        yield from self._grading()

    def _grading(self) -> Iterator[Metric]:
        """Live grading (SPEC §14): all-time grades per model, and the champion."""
        graded = CounterMetricFamily(
            "genderd_graded_events",
            "Events graded live: applied within the delay limit, per model",
            labels=["model"],
        )
        predicted = CounterMetricFamily(
            "genderd_predicted_events",
            "Graded events the model had an answer for just before, per model",
            labels=["model"],
        )
        correct = CounterMetricFamily(
            "genderd_correct_predictions",
            "Graded events whose answer just before was the event's gender, per model",
            labels=["model"],
        )
        for model in self.snapshot:
            events, answered, right = model.graded
            graded.add_metric([model.name], events)
            predicted.add_metric([model.name], answered)
            correct.add_metric([model.name], right)
        yield from (graded, predicted, correct)
        champion = self.champion
        if champion is None:
            return
        leader = GaugeMetricFamily(
            "genderd_champion", "1 for the champion of live grading", labels=["model"]
        )
        behind = GaugeMetricFamily(
            "genderd_champion_behind",
            "1 for a model the champion was significantly behind at the last check",
            labels=["model"],
        )
        changes = CounterMetricFamily(
            "genderd_champion_changes", "Champion changes recorded (evidence, pins, unpins)"
        )
        for model in self.snapshot:
            leader.add_metric([model.name], int(model.name == champion.model))
            behind.add_metric([model.name], int(model.name == champion.behind))
        changes.add_metric([], champion.changes)
        yield from (leader, behind, changes)


@dataclass(frozen=True)
class ChampionSnapshot:
    """What /metrics says of the champion: who, which model it is behind, how many changes."""

    model: str
    behind: str | None
    changes: int


# Request durations: from a fraction of a millisecond (lookups) to the body timeout.
REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (never the raw path)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name, read at its import
METRICS_DIR_PREFIX = "genderd-metrics-"  # the shared directories `serve` makes in TMPDIR
OWNER_FILE = "serve.pid"  # in such a directory: the pid of the `serve` that holds its lock
REQUESTS = "genderd_http_requests"
REQUESTS_HELP = "HTTP requests answered, per route template, method and status"
DURATIONS = "genderd_http_request_duration_seconds"
DURATIONS_HELP = "Time from a request's arrival to its answer, per route template"
_BOUNDS = (*(str(b) for b in REQUEST_BUCKETS_S), "+Inf")


def multiprocess_dir() -> Path | None:
    """The shared metrics directory when this process runs in multiprocess mode, else None.

    Multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is first
    imported (``genderd serve --workers N`` does so); an app built without it, or in a process
    that imported prometheus_client first, counts for itself alone.
    """
    path = os.environ.get(MULTIPROCESS_ENV)
    if not path or values.ValueClass is values.MutexValue:
        return None
    return Path(path)


@contextmanager
def shared_metrics(processes: int) -> Iterator[Path | None]:
    """With more than one API process: a fresh metrics directory, named in this process's
    environment (which uvicorn's worker processes inherit before they import
    prometheus_client) and removed with everything in it on the way out. Else None.

    The directory is locked for as long as this process lives, and the directories of
    `serve` processes that were killed before they could remove theirs are removed first
    (:func:`remove_stale_metrics`)."""
    if processes <= 1:
        yield None
        return
    temporary = Path(tempfile.gettempdir())
    remove_stale_metrics(temporary)
    directory = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=temporary))
    lock = _lock(directory)
    (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")  # after the lock: see below
    previous = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def remove_stale_metrics(temporary: Path) -> list[Path]:
    """Remove the metrics directories under ``temporary`` that no live `serve` holds: those of
    this user with an :data:`OWNER_FILE` (written once the directory was locked, so that one
    being set up is never taken for stale) whose lock nobody holds. The lock is gone with the
    process that took it, however it ended. Returns the directories removed."""
    removed: list[Path] = []
    if sys.platform == "win32":  # no advisory locks: a dead serve's directory cannot be told
        return removed
    for candidate in sorted(temporary.glob(f"{METRICS_DIR_PREFIX}*")):
        try:
            if candidate.stat().st_uid != os.getuid() or not (candidate / OWNER_FILE).is_file():
                continue
            held = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live serve holds it
        else:
            log.info("removing %s, the metrics directory of a serve that is gone", candidate)
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            os.close(held)
    return removed


def _lock(directory: Path) -> int | None:
    """An exclusive lock on ``directory``, held until the returned descriptor is closed (or
    this process ends); None where there are no advisory locks."""
    if sys.platform == "win32":
        return None
    held = os.open(directory, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return held


class HttpFiles:
    """This process's HTTP counts, written through to its own files in the multiprocess
    directory in prometheus_client's format. Each write stores this process's running total
    (kept in :class:`HttpCollector`'s dicts), so no lock is taken: only the event loop's thread
    writes these files, and :class:`MultiProcessCollector` sums the processes' totals."""

    def __init__(self, directory: Path, pid: int) -> None:
        # The name's first word is the type MultiProcessCollector reads; prometheus_client's own
        # files of this process are counter_<pid>.db and histogram_<pid>.db.
        open_file: Any = MmapedDict  # untyped in prometheus_client
        self.requests = open_file(str(directory / f"counter_http-{pid}.db"))
        self.durations = open_file(str(directory / f"histogram_http-{pid}.db"))
        self._request_keys: dict[tuple[str, str, str], str] = {}
        self._bucket_keys: dict[tuple[str, int], str] = {}
        self._sum_keys: dict[str, str] = {}

    def write(
        self, labels: tuple[str, str, str], n: int, bucket: int, in_bucket: int, total_s: float
    ) -> None:
        """Store the new totals of one request's series (``labels``: route, method, status)."""
        key = self._request_keys.get(labels)
        if key is None:
            key = self._request_keys[labels] = mmap_key(
                REQUESTS, f"{REQUESTS}_total", ["route", "method", "status"], list(labels),
                REQUESTS_HELP,
            )  # fmt: skip
        self.requests.write_value(key, n, 0.0)
        route = labels[0]
        key = self._bucket_keys.get((route, bucket))
        if key is None:
            key = self._bucket_keys[route, bucket] = mmap_key(
                DURATIONS, f"{DURATIONS}_bucket", ["route", "le"], [route, _BOUNDS[bucket]],
                DURATIONS_HELP,
            )  # fmt: skip
        self.durations.write_value(key, in_bucket, 0.0)
        key = self._sum_keys.get(route)
        if key is None:
            key = self._sum_keys[route] = mmap_key(
                DURATIONS, f"{DURATIONS}_sum", ["route"], [route], DURATIONS_HELP
            )
        self.durations.write_value(key, total_s, 0.0)

    def close(self) -> None:
        self.requests.close()
        self.durations.close()


class HttpCollector(Collector):
    """``genderd_http_requests_total{route,method,status}`` and
    ``genderd_http_request_duration_seconds{route}``, counted in dicts (see the module) and,
    with more than one process, written through to ``files``."""

    def __init__(self, files: HttpFiles | None = None) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        # per route: [count per bucket (le), ..., +Inf], sum of seconds
        self.durations: dict[str, tuple[list[int], list[float]]] = {}
        self.files = files

    def count(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        n = self.requests[key] = self.requests.get(key, 0) + 1
        buckets = self.durations.get(route)
        if buckets is None:
            buckets = self.durations[route] = ([0] * (len(REQUEST_BUCKETS_S) + 1), [0.0])
        bucket = bisect.bisect_left(REQUEST_BUCKETS_S, seconds)
        buckets[0][bucket] += 1
        buckets[1][0] += seconds
        if self.files is not None:
            self.files.write(key, n, bucket, buckets[0][bucket], buckets[1][0])

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            REQUESTS, REQUESTS_HELP, labels=["route", "method", "status"]
        )
        for labels, n in sorted(self.requests.items()):
            requests.add_metric(list(labels), n)
        durations = HistogramMetricFamily(DURATIONS, DURATIONS_HELP, labels=["route"])
        for route, (counts, total) in sorted(self.durations.items()):
            cumulative, running = [], 0
            for bound, n in zip(_BOUNDS, counts, strict=True):
                running += n
                cumulative.append((bound, running))
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
                route_label(scope, asked),
                method_label(scope["method"]),
                status,
                time.perf_counter() - started,
            )


#: the methods that get a label value of their own; any other is counted as "other", so that a
#: client inventing methods cannot make a series each (servers other than httptools pass any
#: token through as the method)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label of a request: its method when it is a standard one, else "other"."""
    return method if method in METHODS else "other"


class Metrics:
    """The API's metrics.

    Args:
        multiprocess: the shared directory of multiprocess mode (:func:`multiprocess_dir`), or
            None for a process that counts for itself alone (``create_app`` embedded, tests).
    """

    def __init__(self, multiprocess: Path | None = None) -> None:
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        if multiprocess is None:
            own: CollectorRegistry | None = self.registry
            ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
            self.http = HttpCollector()
            self.registry.register(self.http)
        else:
            # Every process's counters and histograms live in files that one collector merges;
            # the metrics themselves are registered nowhere (else this process counts twice).
            # The process collector is left out: a scrape would show whichever process answered.
            own = None
            path = str(multiprocess)
            MultiProcessCollector(self.registry, path=path)  # type: ignore[no-untyped-call]
            self.http = HttpCollector(HttpFiles(multiprocess, os.getpid()))
        self.lookup_seconds = Histogram(
            "genderd_lookup_seconds",
            "Time of the Redis round trip of a lookup, per endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=own,
        )
        self.ingested = Counter(
            "genderd_events_ingested",
            "Events written to the streams by POST /v1/events",
            registry=own,
        )
        self.ingest_repeated = Counter(
            "genderd_events_ingest_repeated",
            "Events of repeated POST /v1/events requests (same Idempotency-Key) not written "
            "again: an earlier attempt had written them",
            registry=own,
        )
        self.ingest_rejected = Counter(
            "genderd_events_rejected",
            "Events refused by POST /v1/events (422: the whole request is refused)",
            registry=own,
        )
        self.disconnects = Counter(
            "genderd_http_client_disconnects",
            "Requests whose client disconnected before its body arrived",
            registry=own,
        )
        self.erasures = Counter(
            "genderd_erasures",
            "Clients erased by DELETE /v1/clients/{cid} (SPEC 9); the log names their digests",
            registry=own,
        )
        self.erased_items = Counter(
            "genderd_erased",
            "What those erasures deleted before answering: the clients' keys (kind=keys); "
            "their stream entries and dead letters are scrubbed afterwards",
            ["kind"],
            registry=own,
        )
        # Read from Redis when scraped: the same in every process, so served directly.
        self.pipeline = PipelineCollector()
        self.registry.register(self.pipeline)
        self._lookup_children: dict[str, Histogram] = {}

    def close(self) -> None:
        """Close this process's files; its counts stay in the directory (and in every scrape)."""
        if self.http.files is not None:
            self.http.files.close()
            self.http.files = None
        if self.multiprocess is not None:
            # Removes only "live" gauges' files (genderd has none): counts stay.
            mark_process_dead(os.getpid(), str(self.multiprocess))  # type: ignore[no-untyped-call]

    def erased(self, done: Erasure) -> None:
        """Count an erasure's clients and keys (never a client id: see SPEC 9)."""
        self.erasures.inc(len(done.clients))
        self.erased_items.labels("keys").inc(done.keys)

    def lookup_time(self, endpoint: str) -> Histogram:
        """The lookup histogram of one endpoint (children cached: ``labels()`` takes a lock)."""
        child = self._lookup_children.get(endpoint)
        if child is None:
            child = self._lookup_children[endpoint] = self.lookup_seconds.labels(endpoint)
        return child

    def render(
        self, snapshot: Sequence[ModelStatus], champion: ChampionSnapshot | None = None
    ) -> bytes:
        self.pipeline.snapshot = snapshot
        self.pipeline.champion = champion
        return generate_latest(self.registry)
