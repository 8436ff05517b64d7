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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from genderd.evaluation.predictors import MajorityPredictor, NotEvaluable, Prediction, Predictor
from genderd.evaluation.report import MAJORITY, Report
from genderd.evaluation.scoring import Step, Tally, label_scores, model_scores
from genderd.evaluation.stats import FRAGILE_BELOW
from genderd.events import Event
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.models.base import Model

Progress = Callable[[int, int], None]

#: how often :func:`steps` reports progress (events)
PROGRESS_EVERY = 10_000


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
    tally = Tally(len(names), genders)
    tally.add(run.steps(events, progress))
    scores, best = model_scores(tally, names)
    read_at = run.last_ts or 0
    labelled, unknown = (
        (None, 0)
        if labels is None
        else label_scores(lambda cid: run.answers_at(cid, read_at), names, labels)
    )
    return Report(
        events=run.events,
        clients=run.clients,
        fragile=run.clients < FRAGILE_BELOW,
        first_ts=run.first_ts,
        last_ts=run.last_ts,
        session_gap_ms=session_gap_ms,
        models=scores,
        best=best,
        refused=refused,
        labels=labelled,
        labels_unknown=unknown,
    )


__all__ = [
    "PROGRESS_EVERY",
    "Prequential",
    "evaluate",
    "event_order",
    "predictions",
    "predictors_of",
]
