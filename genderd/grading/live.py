"""The live grades of a window (SPEC §14): what the workers graded, per model and client group,
read in one call per shard, and scored with the statistics of :mod:`genderd.evaluation`.

A window of ``window_s`` seconds is the hours ``H - n + 1 .. H`` (``H`` the hour of "now", ``n``
the window in whole hours, rounded up): grades are kept per hour of the events' ``ts``. Its
events are those whose ``ts`` lies in ``[since_ms, until_ms)``: what ``genderd evaluate --order
arrival --since S --until U`` scores, with the same delay rule, to give the same counts.

The clusters of the intervals are the client groups (:mod:`genderd.grading.plan`): each holds
whole clients, so intervals clustered by group are valid over clients. Comparisons are paired
by group: the difference of ``accuracy_all`` from the reference model (the champion), each
challenger's interval simultaneous over the challengers (Bonferroni: the reference is not
picked from these data, so no pair beyond those is tested), the p-values adjusted by Holm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from genderd.deployment import Deployment
from genderd.evaluation.report import Interval
from genderd.evaluation.stats import (
    ALPHA,
    FRAGILE_BELOW,
    clustered_interval,
    holm,
    paired_difference,
)
from genderd.events import text
from genderd.grading.plan import MS_PER_HOUR, hour_of
from genderd.lua import Script
from genderd.transport import Transport

GRADES_READ = Script.from_files("grades_read.lua")
#: the windows that can be asked for (seconds)
MIN_WINDOW_S = 3_600
MAX_WINDOW_S = 30 * 86_400
#: a champion change needs graded events from at least this many clients (SPEC §14); they are
#: counted as client groups with events, each holding one client at least: a lower bound
MIN_CLIENTS = 50

#: one cluster's counts: events graded, predicted, correct
Counts = tuple[int, int, int]


@dataclass(frozen=True)
class Window:
    """The grades of one window: per model, per cluster (shard, group), the counts."""

    window_s: int
    since_ms: int  # the first hour's start (inclusive)
    until_ms: int  # the hour after the last one (exclusive)
    grades: dict[str, dict[tuple[int, str], Counts]]

    def clusters(self) -> list[tuple[int, str]]:
        """Every cluster with graded events of any model, in a fixed order."""
        return sorted({cluster for model in self.grades.values() for cluster in model})

    def column(self, model: str, index: int, clusters: Sequence[tuple[int, str]]) -> list[int]:
        """One count per cluster (0 events, 1 predicted, 2 correct) of ``model``."""
        own = self.grades.get(model, {})
        return [own.get(cluster, (0, 0, 0))[index] for cluster in clusters]


def window_bounds(window_s: int, now_ms: int) -> tuple[int, int]:
    """``(since_ms, until_ms)`` of the window of ``window_s`` seconds at ``now_ms``: whole
    hours, the current one included."""
    hours = math.ceil(window_s / 3600)
    last = hour_of(now_ms)
    return (last - hours + 1) * MS_PER_HOUR, (last + 1) * MS_PER_HOUR


async def read_window(
    transport: Transport, deployment: Deployment, models: Sequence[str], window_s: int, now_ms: int
) -> Window:
    """The grades of ``models`` over the window of ``window_s`` seconds at ``now_ms``: one
    ``grades_read.lua`` call per shard."""
    since, until = window_bounds(window_s, now_ms)
    hours = range(since // MS_PER_HOUR, until // MS_PER_HOUR)
    keys = deployment.keys
    grades: dict[str, dict[tuple[int, str], Counts]] = {model: {} for model in models}
    if not models:
        return Window(window_s, since, until, grades)
    for shard in deployment.shards:
        names = [keys.grades(shard, model, hour) for model in models for hour in hours]
        reply = await transport.call(GRADES_READ, names, [str(len(hours))])
        for model, flat in zip(models, reply, strict=True):
            own = grades[model]
            for i in range(0, len(flat), 4):
                own[(shard, text(flat[i]))] = (int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
    return Window(window_s, since, until, grades)


@dataclass(frozen=True)
class Versus:
    """A model against the reference (the champion), paired by client group."""

    reference: str
    difference: float  # accuracy_all(model) - accuracy_all(reference)
    interval: Interval  # simultaneous over the challengers (Bonferroni)
    p_value: float  # two-sided, not adjusted
    p_adjusted: float  # Holm over the challengers
    significant: bool  # the interval excludes 0 (and the adjusted p is below ALPHA)
    challengers: int  # the comparisons the adjustment is over


@dataclass(frozen=True)
class Grade:
    """One model's live grades over a window."""

    model: str
    events: int
    predicted: int
    correct: int
    clusters: int  # client groups with graded events
    accuracy: float | None  # correct / predicted
    accuracy_interval: Interval | None
    accuracy_all: float | None  # correct / events (no answer: a miss)
    accuracy_all_interval: Interval | None
    versus: Versus | None = None  # None for the reference itself, or without one

    @property
    def coverage(self) -> float:
        return self.predicted / self.events if self.events else 0.0


@dataclass(frozen=True)
class Grades:
    """Every model's live grades over one window, compared with the reference."""

    window: Window
    reference: str | None
    models: tuple[Grade, ...] = field(default=())

    @property
    def fragile(self) -> bool:
        """Too few client groups for the intervals to be trusted."""
        return len(self.window.clusters()) < FRAGILE_BELOW

    def grade(self, model: str) -> Grade:
        for grade in self.models:
            if grade.model == model:
                return grade
        raise KeyError(model)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _grade(window: Window, model: str, clusters: Sequence[tuple[int, str]]) -> Grade:
    events = window.column(model, 0, clusters)
    predicted = window.column(model, 1, clusters)
    correct = window.column(model, 2, clusters)
    e, p, c = sum(events), sum(predicted), sum(correct)
    return Grade(
        model=model,
        events=e,
        predicted=p,
        correct=c,
        clusters=sum(1 for n in events if n),
        accuracy=_ratio(c, p),
        accuracy_interval=clustered_interval(correct, predicted),
        accuracy_all=_ratio(c, e),
        accuracy_all_interval=clustered_interval(correct, events),
    )


def compare(window: Window, model: str, reference: str, challengers: int) -> Versus:
    """``model`` against ``reference`` over the window: paired by client group over the events
    either graded (a cluster's events are the larger count of the two: a model that graded
    fewer, being off or failing, counts the missing ones as misses), the interval simultaneous
    over ``challengers`` comparisons; ``p_adjusted`` is the raw p-value (the caller adjusts
    over the challengers, :func:`score`)."""
    clusters = window.clusters()
    mine, theirs = window.column(model, 2, clusters), window.column(reference, 2, clusters)
    events = [
        max(a, b)
        for a, b in zip(
            window.column(model, 0, clusters), window.column(reference, 0, clusters), strict=True
        )
    ]
    paired = paired_difference(mine, theirs, events, alpha=ALPHA / max(1, challengers))
    low, high = paired.interval.low, paired.interval.high
    return Versus(
        reference=reference,
        difference=paired.difference,
        interval=paired.interval,
        p_value=paired.p_value,
        p_adjusted=paired.p_value,
        significant=low > 0 or high < 0,
        challengers=challengers,
    )


def score(window: Window, models: Sequence[str], reference: str | None) -> Grades:
    """Every model's grades over ``window``, each compared with ``reference`` (when it is one
    of ``models``), adjusted over the challengers (the other models)."""
    clusters = window.clusters()
    grades = [_grade(window, model, clusters) for model in models]
    if reference is None or reference not in models or not clusters:  # nothing to compare
        return Grades(window, reference, tuple(grades))
    others = [m for m in models if m != reference]
    versus = {m: compare(window, m, reference, len(others)) for m in others}
    adjusted = dict(zip(others, holm([versus[m].p_value for m in others]), strict=True))
    rows = []
    for grade in grades:
        found = versus.get(grade.model)
        if found is not None:
            found = dataclasses.replace(found, p_adjusted=adjusted[grade.model])
        rows.append(dataclasses.replace(grade, versus=found))
    return Grades(window, reference, tuple(rows))


#: the default window of the live grades shown (GET /v1/models, genderd grades, status)
DEFAULT_WINDOW_S = 86_400
_UNITS_S = {"h": 3_600, "d": 86_400}


def parse_window(given: str) -> int:
    """A window such as ``24h``, ``7d`` or ``3600`` (seconds), between 1 hour and 30 days,
    as seconds.

    Raises:
        ValueError: anything else, with a message naming the accepted forms.
    """
    text_ = given.strip().lower()
    unit = _UNITS_S.get(text_[-1:], 1)
    number = text_[:-1] if unit != 1 else text_
    if not number.isdigit():
        raise ValueError(f"window {given!r} must be hours or days, such as 24h or 7d")
    seconds = int(number) * unit
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"window {given!r} must be between 1h and 30d")
    return seconds


__all__ = [
    "DEFAULT_WINDOW_S",
    "GRADES_READ",
    "MAX_WINDOW_S",
    "MIN_CLIENTS",
    "MIN_WINDOW_S",
    "Counts",
    "Grade",
    "Grades",
    "Versus",
    "Window",
    "compare",
    "parse_window",
    "read_window",
    "score",
    "window_bounds",
]
