"""Evaluating models prequentially: predict, score, then apply, in event-time order.

"Prequential" (predictive sequential, Dawid 1984) means here: the events of the whole input
are taken in event-time order ``(ts, parsed entry id)``; for each event ``e`` of client ``c``
at time ``t``, each model's prediction is the answer the live service would have served for
``c`` at read time ``t`` from ``c``'s earlier events only (a window evaluated at ``t``; a Python
model's stored answer, computed by the worker's own code); it is scored against ``e.gender``,
and only then is ``e`` applied. No event is used to predict itself or anything before it, and
the model never sees the future. The figure is *next-visit accuracy*: how often the answer the
site would have personalised with matches the department the shopper visits next.

What it is not: page views are not decisions. The model's answer does not change what the
shopper looks at in this history (it was recorded whatever the site showed), so this measures
prediction, not the effect of personalising. And consecutive page views of one visit say little
that the previous one did not: with ``session_gap_ms`` every event is applied but only a
client's first event of each session (no earlier event, or the previous one more than the gap
before) is scored, which asks "what will this shopper look at when they come back?".

The baseline in the same table (:data:`~genderd.evaluation.report.MAJORITY`) predicts the most
frequent gender of all earlier events of all clients. Intervals and comparisons are clustered
by client (:mod:`genderd.evaluation.stats`).

:func:`steps` (through :class:`Prequential`) is the one loop; :func:`predictions` exposes each
event's predictions by model, and :func:`evaluate` scores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from genderd.evaluation.predictors import MajorityPredictor, NotEvaluable, Prediction, Predictor
from genderd.evaluation.report import (
    HISTORY_BUCKETS,
    MAJORITY,
    Bucket,
    Comparison,
    LabelScore,
    ModelScore,
    Report,
)
from genderd.evaluation.stats import (
    ALPHA,
    COMPARISON_METHOD,
    clustered_interval,
    paired_difference,
)
from genderd.events import Event
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.models.base import Model

Progress = Callable[[int, int], None]
#: one scored event: (event, the client's earlier events, each predictor's prediction)
Step = tuple[Event, int, tuple[Prediction, ...]]

#: how often :func:`steps` reports progress (events)
PROGRESS_EVERY = 10_000
#: the history bucket (index into HISTORY_BUCKETS) of 0..19 earlier events; 20+ is the last
_BUCKET_OF = (0, 1, 2, 2, 2, *(3,) * 15)
_LAST_BUCKET = len(HISTORY_BUCKETS) - 1
#: scores smoothing of the log-loss: p(true) = (score_true + S) / (sum of scores + S * genders)
LOG_LOSS_SMOOTHING = 0.5


def event_order(event: Event) -> tuple[int, tuple[int, int]]:
    """The event-time order: ``ts``, then the entry id as numbers (ms, seq)."""
    return event.ts, parse_id(event.id)


def _id_order(event: Event) -> tuple[int, int]:
    return parse_id(event.id)


def _ts(event: Event) -> int:
    return event.ts


class _Client:
    __slots__ = ("history", "last_ts", "states")

    def __init__(self, states: list[Any]) -> None:
        self.history = 0  # events applied
        self.last_ts = 0
        self.states = states


class Prequential:
    """The predict-then-apply loop over events in event-time order, for a list of predictors;
    the clients' states stay for :meth:`answers_at` once :meth:`steps` is done."""

    __slots__ = ("_clients", "events", "first_ts", "last_ts", "predictors", "session_gap_ms")

    def __init__(
        self, predictors: Sequence[Predictor], *, session_gap_ms: int | None = None
    ) -> None:
        self.predictors = tuple(predictors)
        self.session_gap_ms = session_gap_ms
        self._clients: dict[str, _Client] = {}
        self.events = 0  # events applied
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    @property
    def clients(self) -> int:
        """Clients seen so far."""
        return len(self._clients)

    def steps(self, events: Iterable[Event], progress: Progress | None = None) -> Iterator[Step]:
        """Sort ``events`` by :func:`event_order` and, for each, yield the step of a scored
        event (every event when there is no session gap): the event, the number of the
        client's earlier events, and each predictor's prediction at read time ``event.ts``
        from them; then apply the event to every predictor. ``progress(done, total)`` is
        called every :data:`PROGRESS_EVERY` events and at the end."""
        # two stable sorts, by id then by ts: (ts, id) order with a quarter of the memory of
        # one sort by (ts, id) keys (the second sort's keys are the events' own ints)
        ordered = sorted(events, key=_id_order)
        ordered.sort(key=_ts)
        total = self.events = len(ordered)
        if ordered:
            self.first_ts, self.last_ts = ordered[0].ts, ordered[-1].ts
        clients = self._clients
        news = [p.new for p in self.predictors]
        predicts = [p.predict for p in self.predictors]
        applies = [p.apply for p in self.predictors]
        gap = self.session_gap_ms
        for done, event in enumerate(ordered, 1):
            t = event.ts
            client = clients.get(event.cid)
            if client is None:
                client = clients[event.cid] = _Client([new() for new in news])
                scored = True
            else:
                scored = gap is None or t - client.last_ts > gap
            states = client.states
            if scored:
                yield (
                    event,
                    client.history,
                    tuple([predict(s, t) for predict, s in zip(predicts, states, strict=True)]),
                )
            for apply, s in zip(applies, states, strict=True):
                apply(s, event)
            client.history += 1
            client.last_ts = t
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
        if progress is not None:
            progress(total, total)

    def answers_at(self, cid: str, t: int) -> tuple[Prediction, ...] | None:
        """Each predictor's answer for ``cid`` at read time ``t`` (not before the last event
        applied), or None for a client with no event."""
        client = self._clients.get(cid)
        if client is None:
            return None
        return tuple(p.predict(s, t) for p, s in zip(self.predictors, client.states, strict=True))


def predictors_of(models: Sequence[Model]) -> tuple[list[tuple[str, Predictor]], dict[str, str]]:
    """The evaluable models' (name, predictor), by name, and the others' one-line reasons."""
    evaluable: dict[str, Predictor] = {}
    refused: dict[str, str] = {}
    for model in models:
        if model.name == MAJORITY:
            refused[model.name] = f"model {MAJORITY!r}: the name is the baseline's in reports"
            continue
        try:
            evaluable[model.name] = model.predictor()
        except NotEvaluable as error:
            refused[model.name] = str(error)
    return sorted(evaluable.items()), refused


def predictions(
    events: Iterable[Event], models: Sequence[Model], *, session_gap_ms: int | None = None
) -> Iterator[tuple[Event, dict[str, Prediction]]]:
    """Each scored event (see :meth:`Prequential.steps`) with each model's prediction by name,
    the baseline's under :data:`MAJORITY`: the very predictions :func:`evaluate` scores (the
    scores are copies the caller may keep).

    Raises:
        NotEvaluable: a model cannot be evaluated.
    """
    evaluable, refused = predictors_of(models)
    if refused:
        raise NotEvaluable(next(iter(refused.values())))
    names = (MAJORITY, *(name for name, _ in evaluable))
    run = Prequential(
        [MajorityPredictor(), *(p for _, p in evaluable)], session_gap_ms=session_gap_ms
    )
    for event, _, answers in run.steps(events):
        # the predictors' scores dicts change with the next event: copies are the caller's
        yield (
            event,
            {
                name: (gender, None if scores is None else dict(scores))
                for name, (gender, scores) in zip(names, answers, strict=True)
            },
        )


class _Tally:
    """Per model: counts per history bucket, log-loss sums; per client: events scored, and
    per model events predicted and correct (the clusters of :mod:`genderd.evaluation.stats`)."""

    def __init__(self, models: int, genders: Sequence[str]) -> None:
        self.models = models
        self.genders = tuple(genders)
        self.per_client: dict[str, list[int]] = {}  # [scored, predicted..., correct...]
        self.bucket_events = [0] * len(HISTORY_BUCKETS)
        self.bucket_predicted = [[0] * len(HISTORY_BUCKETS) for _ in range(models)]
        self.bucket_correct = [[0] * len(HISTORY_BUCKETS) for _ in range(models)]
        self.log_loss = [0.0] * models
        self.log_loss_events = [0] * models

    def add(self, steps: Iterable[Step]) -> None:
        """Score every step."""
        m = self.models
        per_client, bucket_events = self.per_client, self.bucket_events
        predicted_in, correct_in = self.bucket_predicted, self.bucket_correct
        surprise = self._surprise
        for event, history, answers in steps:
            truth = event.gender
            bucket = _BUCKET_OF[history] if history < 20 else _LAST_BUCKET
            counts = per_client.get(event.cid)
            if counts is None:
                counts = per_client[event.cid] = [0] * (1 + 2 * m)
            counts[0] += 1
            bucket_events[bucket] += 1
            for i, (gender, scores) in enumerate(answers):
                if gender is None:
                    continue
                counts[1 + i] += 1
                predicted_in[i][bucket] += 1
                if gender == truth:
                    counts[1 + m + i] += 1
                    correct_in[i][bucket] += 1
                if scores is not None:
                    surprise(i, scores, truth)

    def _surprise(self, model: int, scores: Mapping[str, Any], truth: str) -> None:
        """Add ``-log p(truth)`` from smoothed scores of the configured genders (scores that
        name none of them are no probabilities: not counted)."""
        total = own = 0.0
        named = False
        for gender in self.genders:
            value = scores.get(gender)
            if value is not None:
                named = True
                if value > 0:
                    total += value
                    if gender == truth:
                        own = value
        if named:
            p = (own + LOG_LOSS_SMOOTHING) / (total + LOG_LOSS_SMOOTHING * len(self.genders))
            self.log_loss[model] -= math.log(p)
            self.log_loss_events[model] += 1

    def column(self, index: int) -> list[int]:
        """One per-client column: 0 = events scored, 1.. = predicted, 1+m.. = correct."""
        return [counts[index] for counts in self.per_client.values()]


def _divide(a: float, b: int) -> float | None:
    return a / b if b else None


def _buckets(tally: _Tally, i: int) -> tuple[Bucket, ...]:
    return tuple(
        Bucket(
            history,
            events,
            tally.bucket_predicted[i][b],
            _divide(tally.bucket_correct[i][b], tally.bucket_predicted[i][b]),
            _divide(tally.bucket_correct[i][b], events),
        )
        for b, (history, events) in enumerate(
            zip(HISTORY_BUCKETS, tally.bucket_events, strict=True)
        )
    )


def _scores(tally: _Tally, names: Sequence[str]) -> tuple[tuple[ModelScore, ...], str | None]:
    """Every model's scores, compared with the best evaluated model (index >= 1: not the
    baseline; the first by name among equals), and the best one's name."""
    m = tally.models
    scored = tally.column(0)
    events = sum(scored)
    correct = [tally.column(1 + m + i) for i in range(m)]
    predicted = [sum(tally.column(1 + i)) for i in range(m)]
    hits = [sum(column) for column in correct]
    best = max(range(1, m), key=lambda i: hits[i], default=None) if events else None
    result = []
    for i, name in enumerate(names):
        versus = None
        if best is not None and i != best:
            difference, interval, p_value = paired_difference(correct[i], correct[best], scored)
            versus = Comparison(
                names[best], difference, interval, p_value, p_value < ALPHA, COMPARISON_METHOD
            )
        result.append(
            ModelScore(
                model=name,
                events=events,
                predicted=predicted[i],
                coverage=predicted[i] / events if events else 0.0,
                accuracy=_divide(hits[i], predicted[i]),
                accuracy_interval=clustered_interval(correct[i], tally.column(1 + i)),
                accuracy_all=_divide(hits[i], events),
                accuracy_all_interval=clustered_interval(correct[i], scored),
                log_loss=_divide(tally.log_loss[i], tally.log_loss_events[i]),
                by_history=_buckets(tally, i),
                versus_best=versus,
            )
        )
    return tuple(result), None if best is None else names[best]


def _label_scores(
    run: Prequential, names: Sequence[str], labels: Mapping[str, str]
) -> tuple[tuple[LabelScore, ...], int]:
    """Each model's answer at the end of the history against ``labels``; and the labelled
    clients with no event."""
    unknown = 0
    clients = [0] * len(names)
    answered = [0] * len(names)
    right = [0] * len(names)
    confusion: list[dict[str, dict[str, int]]] = [{} for _ in names]
    read_at = run.last_ts or 0
    for cid, truth in labels.items():
        answers = run.answers_at(cid, read_at)
        if answers is None:
            unknown += 1
            continue
        for i, (gender, _) in enumerate(answers):
            clients[i] += 1
            row = confusion[i].setdefault(truth, {})
            row[gender or "none"] = row.get(gender or "none", 0) + 1
            if gender is not None:
                answered[i] += 1
                right[i] += gender == truth
    scores = tuple(
        LabelScore(
            name,
            clients[i],
            answered[i],
            answered[i] / clients[i] if clients[i] else 0.0,
            _divide(right[i], answered[i]),
            confusion[i],
        )
        for i, name in enumerate(names)
    )
    return scores, unknown


def evaluate(
    events: Iterable[Event],
    models: Sequence[Model],
    *,
    genders: Sequence[str],
    session_gap_ms: int | None = None,
    labels: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Score ``models`` prequentially on ``events`` (see the module): next-visit accuracy,
    coverage, by history length, log-loss where a model gives scores, the majority baseline,
    95% intervals and the paired comparison with the best model, clustered by client.

    Args:
        events: valid events, in any order.
        models: framework models; those whose :meth:`~genderd.models.base.Model.predictor`
            raises :class:`NotEvaluable` are listed in ``Report.refused``.
        genders: the configured genders (the log-loss spreads its smoothing over them).
        session_gap_ms: score only a client's first event of each session.
        labels: cid -> gender, scored against each model's answer at the last event's ts.
        progress: called with (events done, events total) every ~10,000 events and at the end.
    """
    evaluable, refused = predictors_of(models)
    names = (MAJORITY, *(name for name, _ in evaluable))
    run = Prequential(
        [MajorityPredictor(), *(p for _, p in evaluable)], session_gap_ms=session_gap_ms
    )
    tally = _Tally(len(names), genders)
    tally.add(run.steps(events, progress))
    scores, best = _scores(tally, names)
    label_scores, unknown = (None, 0) if labels is None else _label_scores(run, names, labels)
    return Report(
        events=run.events,
        clients=run.clients,
        first_ts=run.first_ts,
        last_ts=run.last_ts,
        session_gap_ms=session_gap_ms,
        models=scores,
        best=best,
        refused=refused,
        labels=label_scores,
        labels_unknown=unknown,
    )


__all__ = [
    "LOG_LOSS_SMOOTHING",
    "PROGRESS_EVERY",
    "Prequential",
    "Step",
    "evaluate",
    "event_order",
    "predictions",
    "predictors_of",
]
