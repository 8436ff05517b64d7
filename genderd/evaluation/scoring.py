"""Scoring predictions: the tallies an evaluation keeps while it runs, and the scores it reports.

:class:`Tally` counts, per client and history bucket, the events scored and each model's
predicted and correct events: the clusters of :mod:`genderd.evaluation.stats`, so that every
figure read (overall, per bucket) gets an interval valid over clients. :func:`model_scores`
turns a tally into :class:`~genderd.evaluation.report.ModelScore` rows with the adjusted
comparison with the best model; :func:`label_scores` scores the answers at the end of the
history against known labels.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from genderd.evaluation.predictors import Prediction
from genderd.evaluation.report import (
    HISTORY_BUCKETS,
    Bucket,
    Comparison,
    LabelScore,
    ModelScore,
)
from genderd.evaluation.stats import (
    COMPARISON_METHOD,
    clustered_interval,
    compare_all_pairs,
    wilson_interval,
)
from genderd.events import Event

#: one scored event: (event, the client's earlier events, each predictor's prediction)
Step = tuple[Event, int, tuple[Prediction, ...]]

#: the history bucket (index into HISTORY_BUCKETS) of 0..19 earlier events; 20+ is the last
_BUCKET_OF = (0, 1, 2, 2, 2, *(3,) * 15)
_LAST_BUCKET = len(HISTORY_BUCKETS) - 1
_BUCKETS = len(HISTORY_BUCKETS)
#: scores smoothing of the log-loss: p(true) = (score_true + S) / (sum of scores + S * genders)
LOG_LOSS_SMOOTHING = 0.5
#: a client's counts: unsigned 32-bit (a client scored 4 billion times is not a shopper)
_COUNT_TYPE = "I"


def history_bucket(history: int) -> int:
    """The index into HISTORY_BUCKETS of a client with ``history`` earlier events."""
    return _BUCKET_OF[history] if history < len(_BUCKET_OF) else _LAST_BUCKET


def _named_scores(
    scores: Mapping[str, Any], genders: Sequence[str], truth: str
) -> tuple[float, float] | None:
    """The sum of the positive scores of the configured ``genders`` in ``scores``, and the
    truth's (0 unless positive); None when ``scores`` names none of them."""
    total = own = 0.0
    named = False
    for gender in genders:
        value = scores.get(gender)
        if value is not None:
            named = True
            if value > 0:
                total += value
                if gender == truth:
                    own = value
    return (total, own) if named else None


class Tally:
    """Per client, per history bucket: events scored, then per model events predicted and
    correct (one flat array per client, ``width`` counts per bucket); per model, log-loss."""

    def __init__(self, models: int, genders: Sequence[str]) -> None:
        self.models = models
        self.width = 1 + 2 * models  # [scored, predicted..., correct...] per bucket
        self.genders = tuple(genders)
        self.per_client: dict[str, array[int]] = {}
        self.log_loss = [0.0] * models
        self.log_loss_events = [0] * models

    def add(self, steps: Iterable[Step]) -> None:
        """Score every step: count it, and add each prediction's log-loss (``-log p(truth)``
        from the smoothed scores of the configured genders; scores that name none of them are
        no probabilities: not counted). The loop runs once per scored event: the log-loss is
        computed in it, with a fast path for scores naming only configured genders."""
        m, width = self.models, self.width
        per_client, log_loss, log_loss_events = self.per_client, self.log_loss, self.log_loss_events
        genders = self.genders
        configured = frozenset(genders)
        smoothed = LOG_LOSS_SMOOTHING * len(genders)
        log = math.log
        empty = array(_COUNT_TYPE, bytes(4 * width * _BUCKETS))
        bucket_of, short = _BUCKET_OF, len(_BUCKET_OF)
        for event, history, answers in steps:
            truth = event.gender
            counts = per_client.get(event.cid)
            if counts is None:
                counts = per_client[event.cid] = array(_COUNT_TYPE, empty)
            base = (bucket_of[history] if history < short else _LAST_BUCKET) * width
            counts[base] += 1
            predicted, correct = base + 1, base + 1 + m
            i = -1
            for gender, scores in answers:
                i += 1
                if gender is None:
                    continue
                counts[predicted + i] += 1
                if gender == truth:
                    counts[correct + i] += 1
                if not scores:
                    continue
                if scores.keys() <= configured:  # nearly always: no filtering needed
                    values = scores.values()
                    total: float = sum(values)
                    if min(values) < 0:
                        total = sum([value for value in values if value > 0])
                    own: float = scores.get(truth, 0)
                    if own < 0:
                        own = 0
                else:
                    named = _named_scores(scores, genders, truth)
                    if named is None:  # no probabilities: not counted
                        continue
                    total, own = named
                log_loss[i] -= log((own + LOG_LOSS_SMOOTHING) / (total + smoothed))
                log_loss_events[i] += 1

    def column(self, index: int, bucket: int | None = None) -> list[int]:
        """One count per client: 0 = events scored, 1.. = predicted, 1+m.. = correct; in one
        history bucket, or summed over all of them (``bucket`` None)."""
        width = self.width
        if bucket is not None:
            at = bucket * width + index
            return [counts[at] for counts in self.per_client.values()]
        offsets = range(index, width * _BUCKETS, width)
        return [sum(counts[at] for at in offsets) for counts in self.per_client.values()]

    def scored(self, bucket: int | None = None) -> list[int]:
        """Events scored per client."""
        return self.column(0, bucket)

    def predicted(self, model: int, bucket: int | None = None) -> list[int]:
        """Events ``model`` predicted, per client."""
        return self.column(1 + model, bucket)

    def correct(self, model: int, bucket: int | None = None) -> list[int]:
        """Events ``model`` predicted right, per client."""
        return self.column(1 + self.models + model, bucket)


def _divide(a: float, b: int) -> float | None:
    return a / b if b else None


def _bucket(tally: Tally, model: int, bucket: int) -> Bucket:
    scored = tally.scored(bucket)
    predicted = tally.predicted(model, bucket)
    correct = tally.correct(model, bucket)
    events, answered, hits = sum(scored), sum(predicted), sum(correct)
    return Bucket(
        history=HISTORY_BUCKETS[bucket],
        events=events,
        predicted=answered,
        accuracy=_divide(hits, answered),
        accuracy_all=_divide(hits, events),
        accuracy_interval=clustered_interval(correct, predicted),
        accuracy_all_interval=clustered_interval(correct, scored),
    )


def best_of(hits: Sequence[int], first: int = 1) -> int | None:
    """The index (from ``first``: not the baseline) with the most hits, the first among
    equals; None when there is no candidate."""
    candidates = range(first, len(hits))
    return max(candidates, key=hits.__getitem__) if candidates else None


def _comparisons(
    correct: Sequence[Sequence[int]], scored: Sequence[int], names: Sequence[str], best: int
) -> list[Comparison | None]:
    comparisons: list[Comparison | None] = []
    verdicts = compare_all_pairs(correct, scored, best)
    pairs = len(names) * (len(names) - 1) // 2
    for verdict in verdicts:
        if verdict is None:
            comparisons.append(None)
            continue
        paired = verdict.paired
        comparisons.append(
            Comparison(
                best=names[best],
                difference=paired.difference,
                interval=paired.interval,
                p_value=paired.p_value,
                p_adjusted=verdict.p_adjusted,
                significant=verdict.behind,
                pairs=pairs,
                method=COMPARISON_METHOD,
            )
        )
    return comparisons


def model_scores(tally: Tally, names: Sequence[str]) -> tuple[tuple[ModelScore, ...], str | None]:
    """Every row's scores (the baseline first), each compared with the best evaluated model
    (not the baseline), adjusted over every pair of rows; and the best one's name."""
    m = tally.models
    scored = tally.scored()
    events = sum(scored)
    correct = [tally.correct(i) for i in range(m)]
    predicted = [tally.predicted(i) for i in range(m)]
    hits = [sum(column) for column in correct]
    best = best_of(hits) if events else None
    versus = [None] * m if best is None else _comparisons(correct, scored, names, best)
    rows = []
    for i, name in enumerate(names):
        answered = sum(predicted[i])
        rows.append(
            ModelScore(
                model=name,
                events=events,
                predicted=answered,
                coverage=answered / events if events else 0.0,
                accuracy=_divide(hits[i], answered),
                accuracy_interval=clustered_interval(correct[i], predicted[i]),
                accuracy_all=_divide(hits[i], events),
                accuracy_all_interval=clustered_interval(correct[i], scored),
                log_loss=_divide(tally.log_loss[i], tally.log_loss_events[i]),
                by_history=tuple(_bucket(tally, i, b) for b in range(_BUCKETS)),
                versus_best=versus[i],
            )
        )
    return tuple(rows), None if best is None else names[best]


def label_scores(
    answers_at: Callable[[str], tuple[Prediction, ...] | None],
    names: Sequence[str],
    labels: Mapping[str, str],
) -> tuple[tuple[LabelScore, ...], int]:
    """Each row's answer at the end of the history (``answers_at(cid)``: each row's answer,
    None for a client with no event) against ``labels``; and the labelled clients with no
    event. One label per client: the accuracy's interval is Wilson's over clients."""
    unknown = 0
    clients = [0] * len(names)
    answered = [0] * len(names)
    right = [0] * len(names)
    confusion: list[dict[str, dict[str, int]]] = [{} for _ in names]
    for cid, truth in labels.items():
        answers = answers_at(cid)
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
            model=name,
            clients=clients[i],
            answered=answered[i],
            coverage=answered[i] / clients[i] if clients[i] else 0.0,
            accuracy=_divide(right[i], answered[i]),
            accuracy_interval=wilson_interval(right[i], answered[i]),
            confusion=confusion[i],
        )
        for i, name in enumerate(names)
    )
    return scores, unknown


__all__ = [
    "LOG_LOSS_SMOOTHING",
    "Step",
    "Tally",
    "best_of",
    "history_bucket",
    "label_scores",
    "model_scores",
]
