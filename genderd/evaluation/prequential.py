"""Evaluating models prequentially: predict, score, then apply, event by event.

"Prequential" (predictive sequential, Dawid 1984) means here: the events of the whole input
are taken in event-time order ``(ts, parsed entry id)`` (order ``"time"``, the default) or in
the order they arrived (``"arrival"``: stream ids, a file's lines, as the workers applied
them); for each event ``e`` of client ``c`` at time ``t``, each model's prediction is the
answer the live service would have served for ``c`` at read time ``t`` from ``c``'s events
applied before ``e`` (a window evaluated at ``t``; a Python model's stored answer, computed by
the worker's own code); it is scored against ``e.gender``, and only then is ``e`` applied. No
event is used to predict itself, and in time order the model never sees the future. The
figure is *next-visit accuracy*: how often the answer the site would have personalised with
matches the department the shopper visits next.

What it is not: page views are not decisions. The model's answer does not change what the
shopper looks at in this history (it was recorded whatever the site showed), so this measures
prediction, not the effect of personalising. And consecutive page views of one visit say little
that the previous one did not: with ``session_gap_ms`` every event is applied but only a
client's first event of each session (no earlier event, or the previous one more than the gap
before) is scored, which asks "what will this shopper look at when they come back?".
:class:`~genderd.evaluation.selection.Selection` decides which events are applied and scored
(the time range, the warm-up before it, the session gap, the maximum delay).

The baseline in the same table (:data:`~genderd.evaluation.report.MAJORITY`) predicts the most
frequent gender of all earlier events of all clients. Intervals and comparisons are clustered
by client (:mod:`genderd.evaluation.stats`).

:class:`Prequential` is the one loop; :class:`Evaluation` feeds it (all at once, or chunk by
chunk as the input is read: memory then grows with the clients, not the events), scores its
steps and writes them out; :func:`predictions` exposes each event's predictions by model, and
:func:`evaluate` scores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from genderd.errors import InputError
from genderd.evaluation.buffer import EventBuffer
from genderd.evaluation.predictors import (
    ARRIVAL,
    TIME,
    MajorityPredictor,
    NotEvaluable,
    Order,
    Prediction,
    Predictor,
    in_order,
)
from genderd.evaluation.report import MAJORITY, Report
from genderd.evaluation.scoring import Step, Tally, label_scores, model_scores
from genderd.evaluation.selection import Selection
from genderd.evaluation.stats import FRAGILE_BELOW
from genderd.events import Event, entry_ms
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.models.base import Model

Progress = Callable[[int, int], None]
#: what sees every scored step on its way to the tally (``--predictions``): the rows' names
#: and the steps, given back as they pass
Sink = Callable[[Sequence[str], Iterable[Step]], Iterator[Step]]

#: how often the loop reports progress (events)
PROGRESS_EVERY = 10_000
#: above every ts (at most 15 digits): the least ts of no event
NO_TS_YET = 10**15


def event_order(event: Event) -> tuple[int, tuple[int, int]]:
    """The event-time order: ``ts``, then the entry id as numbers (ms, seq)."""
    return event.ts, parse_id(event.id)


class _Client:
    __slots__ = ("history", "newest", "states")

    def __init__(self, states: list[Any]) -> None:
        self.history = 0  # events applied
        self.newest = 0  # the greatest ts of the events applied
        self.states = states


class Prequential:
    """The predict-then-apply loop, for a list of predictors made for ``order``; the clients'
    states stay for :meth:`answers_at` once the events are applied.

    :meth:`steps` takes all the events at once (sorted first in time order); :meth:`run`
    takes them in the order to apply them, and may be called again with the next ones."""

    __slots__ = (
        "_clients",
        "_last",
        "clock",
        "events",
        "first_ts",
        "last_ts",
        "order",
        "predictors",
        "selection",
        "warmup",
    )

    def __init__(
        self,
        predictors: Sequence[Predictor],
        *,
        order: Order = TIME,
        selection: Selection | None = None,
        session_gap_ms: int | None = None,
    ) -> None:
        self.predictors = tuple(predictors)
        self.order = order
        self.selection = selection or Selection(session_gap_ms=session_gap_ms)
        self._clients: dict[str, _Client] = {}
        self._last: tuple[int, tuple[int, int]] | None = None  # time order: the last event's
        self.events = 0  # events applied
        self.warmup = 0  # of which before the selection's since (warm-up: not scored)
        self.first_ts: int | None = None  # the least ts applied
        self.last_ts: int | None = None  # the greatest
        self.clock = 0  # the greatest processing time (``now``) so far

    @property
    def clients(self) -> int:
        """Clients seen so far."""
        return len(self._clients)

    def knows(self, cid: str) -> bool:
        """Whether ``cid`` has an event applied."""
        return cid in self._clients

    def steps(self, events: Iterable[Event], progress: Progress | None = None) -> Iterator[Step]:
        """All of ``events`` through :meth:`run`: in time order sorted by :func:`event_order`
        first (kept compactly meanwhile), in arrival order as given."""
        if self.order == ARRIVAL:
            total = len(events) if isinstance(events, Sequence) else 0
            return self.run(events, progress, total)
        buffer = EventBuffer()
        buffer.extend(events)
        return self.replay(buffer, progress)

    def replay(self, buffer: EventBuffer, progress: Progress | None = None) -> Iterator[Step]:
        """:meth:`run` over the events of ``buffer`` (in time order: sorted there, so not
        checked again; counted there too, unless ``progress`` is to be told as they pass)."""
        if progress is not None:
            return self._loop(self._counted(buffer.replay(), progress, len(buffer)))
        since = self.selection.since_ms if self.selection.warmup else None
        events, low, high, warm = buffer.span(since)
        if events:
            self.events += events
            self.warmup += warm
            self.clock = max(self.clock, high)  # time order: each event's own time
            self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
            self.last_ts = high if self.last_ts is None else max(self.last_ts, high)
        return self._loop(buffer.replay())

    def run(
        self, events: Iterable[Event], progress: Progress | None = None, total: int = 0
    ) -> Iterator[Step]:
        """For each of ``events``, in the order given, yield the step of a scored event (see
        :meth:`Selection.scored <genderd.evaluation.selection.Selection.scored>`): the event,
        the number of the client's earlier events, and each predictor's prediction at read
        time ``event.ts`` from them; then apply the event to every predictor. In time order
        the events must come in :func:`event_order` (an :class:`~genderd.errors.InputError`
        says when one does not), and the service's clock reads each event's ts; in arrival
        order it reads the event's entry id time. ``progress(done, total)`` is called every
        :data:`PROGRESS_EVERY` events and at the end (``total``: the events expected, 0 when
        unknown)."""
        if self.order == TIME:
            events = self._in_time_order(events)
        return self._loop(self._counted(events, progress, total))

    def _loop(self, events: Iterable[Event]) -> Iterator[Step]:
        """The loop of :meth:`run`: predict (when scored), then apply."""
        clients = self._clients
        news = [p.new for p in self.predictors]
        predicts = [p.predict for p in self.predictors]
        applies = [p.apply for p in self.predictors]
        every = self.selection.scores_every_event
        scored_at = self.selection.scored
        clocked = self.order == ARRIVAL
        clocks = self._clocks()
        for event in events:
            t = event.ts
            now = entry_ms(event.id) if clocked else t
            client = clients.get(event.cid)
            if client is None:
                client = clients[event.cid] = _Client([new() for new in news])
                newest = None
            else:
                newest = client.newest
            states = client.states
            if every or scored_at(t, now, newest):
                for at, clock in clocks:
                    clock(states[at], now)
                yield (
                    event,
                    client.history,
                    tuple([p(s, t) for p, s in zip(predicts, states, strict=True)]),
                )
            for apply, s in zip(applies, states, strict=True):
                apply(s, event)
            client.history += 1
            if newest is None or t > newest:
                client.newest = t

    def _clocks(self) -> list[tuple[int, Callable[[Any, int], None]]]:
        """In arrival order, the predictors told the service's clock before a read (by their
        position): those with a ``clock`` method."""
        if self.order != ARRIVAL:
            return []
        found = [(at, getattr(p, "clock", None)) for at, p in enumerate(self.predictors)]
        return [(at, clock) for at, clock in found if clock is not None]

    def _counted(
        self, events: Iterable[Event], progress: Progress | None, total: int
    ) -> Iterator[Event]:
        """``events``, counted on their way to the loop: how many, the least and greatest ts,
        the clock, the warm-up; ``progress`` told every :data:`PROGRESS_EVERY` events."""
        clocked = self.order == ARRIVAL
        since = self.selection.since_ms if self.selection.warmup else None
        warm_before = -1 if since is None else since  # a ts is never negative
        done, clock, warm = self.events, self.clock, self.warmup
        low = NO_TS_YET if self.first_ts is None else self.first_ts
        high = -1 if self.last_ts is None else self.last_ts
        try:
            for event in events:
                yield event
                t = event.ts
                now = entry_ms(event.id) if clocked else t
                if t < low:
                    low = t
                if t > high:
                    high = t
                if now > clock:
                    clock = now
                if t < warm_before:
                    warm += 1
                done += 1
                if done % PROGRESS_EVERY == 0 and progress is not None:
                    progress(done, max(total, done))
        finally:
            self.events, self.clock, self.warmup = done, clock, warm
            if high >= 0:
                self.first_ts, self.last_ts = low, high
        if progress is not None:
            progress(done, done)

    def _in_time_order(self, events: Iterable[Event]) -> Iterator[Event]:
        """``events``, checked to come in :func:`event_order` (input said to be in time order
        that is not, or a file that changed between two readings)."""
        last = self._last
        for event in events:
            key = (event.ts, parse_id(event.id))
            if last is not None and key < last:
                raise InputError(
                    f"event {event.id} (ts {event.ts}) comes after a later one: the input is "
                    "not in time order (did it change while it was read?)"
                )
            last = self._last = key
            yield event

    def answers_at(self, cid: str, t: int) -> tuple[Prediction, ...] | None:
        """Each predictor's answer for ``cid`` at read time ``t`` (not before the last event
        applied, in time order; in arrival order with the service's clock at the last event
        applied), or None for a client with no event."""
        client = self._clients.get(cid)
        if client is None:
            return None
        for at, clock in self._clocks():
            clock(client.states[at], self.clock)
        return tuple(p.predict(s, t) for p, s in zip(self.predictors, client.states, strict=True))


def predictors_of(
    models: Sequence[Model], order: Order = TIME
) -> tuple[list[tuple[str, Predictor]], dict[str, str]]:
    """The evaluable models' (name, predictor for ``order``), by name, and the others'
    one-line reasons."""
    evaluable: dict[str, Predictor] = {}
    refused: dict[str, str] = {}
    for model in models:
        if model.name == MAJORITY:
            refused[model.name] = f"model {MAJORITY!r}: the name is the baseline's in reports"
            continue
        try:
            evaluable[model.name] = in_order(model.predictor(), order)
        except NotEvaluable as error:
            refused[model.name] = str(error)
    return sorted(evaluable.items()), refused


class Evaluation:
    """One evaluation: fed events (:meth:`feed`, at once or chunk by chunk), then
    :meth:`report`. In time order the events are kept (compactly) and sorted when the report
    is asked for, unless ``presorted`` says they are fed in time order already (checked); in
    arrival order, and presorted, each chunk is scored as it is fed, so that memory grows with
    the clients, not the events. ``sink`` sees every scored step (``--predictions``);
    ``expected`` is the number of events the caller expects, for ``progress`` (0: unknown)."""

    def __init__(
        self,
        models: Sequence[Model],
        *,
        genders: Sequence[str],
        order: Order = TIME,
        selection: Selection | None = None,
        presorted: bool = False,
        sink: Sink | None = None,
        progress: Progress | None = None,
        expected: int = 0,
    ) -> None:
        evaluable, self.refused = predictors_of(models, order)
        #: the rows' names: the baseline first, then the evaluable models by name
        self.names = (MAJORITY, *(name for name, _ in evaluable))
        self.order = order
        self.selection = selection or Selection()
        self.run = Prequential(
            [MajorityPredictor(), *(p for _, p in evaluable)],
            order=order,
            selection=self.selection,
        )
        self.tally = Tally(len(self.names), genders)
        self._buffer = EventBuffer() if order == TIME and not presorted else None
        self._sink = sink
        self._progress = progress
        self._expected = expected

    def feed(self, events: Iterable[Event]) -> None:
        """Apply (or, in time order, keep) the events of ``events`` that the selection
        applies, in the order given."""
        applied = self.selection.within(events)
        if self._buffer is not None:
            self._buffer.extend(applied)
            return
        self._score(self.run.run(applied, self._progress, self._expected))

    def _score(self, steps: Iterator[Step]) -> None:
        self.tally.add(steps if self._sink is None else self._sink(self.names, steps))

    def report(self, labels: Mapping[str, str] | None = None) -> Report:
        """Score what was fed (see :func:`evaluate`); with ``labels``, each row's answer at
        the end of the history (the greatest ts) against them."""
        if self._buffer is not None:
            self._score(self.run.replay(self._buffer, self._progress))
        run = self.run
        scores, best = model_scores(self.tally, self.names)
        clients = len(self.tally.per_client)
        read_at = run.last_ts or 0
        labelled, unknown = (
            (None, 0)
            if labels is None
            else label_scores(lambda cid: run.answers_at(cid, read_at), self.names, labels)
        )
        return Report(
            events=run.events,
            clients=clients,
            fragile=clients < FRAGILE_BELOW,
            first_ts=run.first_ts,
            last_ts=run.last_ts,
            session_gap_ms=self.selection.session_gap_ms,
            models=scores,
            best=best,
            refused=self.refused,
            labels=labelled,
            labels_unknown=unknown,
            order=self.order,
            warmup_events=run.warmup,
        )


def predictions(
    events: Iterable[Event],
    models: Sequence[Model],
    *,
    order: Order = TIME,
    session_gap_ms: int | None = None,
    selection: Selection | None = None,
) -> Iterator[tuple[Event, dict[str, Prediction]]]:
    """Each scored event (see :meth:`Prequential.run`) with each model's prediction by name,
    the baseline's under :data:`MAJORITY`: the very predictions :func:`evaluate` scores (the
    scores are copies the caller may keep). ``selection`` (default: every event, with
    ``session_gap_ms``) says which events are applied and scored.

    Raises:
        NotEvaluable: a model cannot be evaluated.
    """
    evaluable, refused = predictors_of(models, order)
    if refused:
        raise NotEvaluable(next(iter(refused.values())))
    names = (MAJORITY, *(name for name, _ in evaluable))
    selection = selection or Selection(session_gap_ms=session_gap_ms)
    run = Prequential(
        [MajorityPredictor(), *(p for _, p in evaluable)], order=order, selection=selection
    )
    for event, _, answers in run.steps(selection.within(events)):
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
    order: Order = TIME,
    session_gap_ms: int | None = None,
    selection: Selection | None = None,
    labels: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    sink: Sink | None = None,
) -> Report:
    """Score ``models`` prequentially on ``events`` (see the module): next-visit accuracy,
    coverage, by history length, log-loss where a model gives scores, the majority baseline,
    95% intervals and the paired comparison with the best model, clustered by client.

    Args:
        events: valid events; in time order in any order, in arrival order each client's
            events in the order they arrived.
        models: framework models; those whose :meth:`~genderd.models.base.Model.predictor`
            raises :class:`NotEvaluable` are listed in ``Report.refused``.
        genders: the configured genders (the log-loss spreads its smoothing over them).
        order: ``"time"`` (by ``(ts, entry id)``) or ``"arrival"`` (as given).
        session_gap_ms: score only a client's first event of each session.
        selection: the events applied and scored (default: all, with ``session_gap_ms``).
        labels: cid -> gender, scored against each model's answer at the greatest ts.
        progress: called with (events done, events total) every ~10,000 events and at the end.
        sink: sees every scored step (e.g. a ``--predictions`` file's writer).
    """
    evaluation = Evaluation(
        models,
        genders=genders,
        order=order,
        selection=selection or Selection(session_gap_ms=session_gap_ms),
        sink=sink,
        progress=progress,
        expected=len(events) if isinstance(events, Sequence) else 0,
    )
    evaluation.feed(events)
    return evaluation.report(labels)


__all__ = [
    "PROGRESS_EVERY",
    "Evaluation",
    "Prequential",
    "Sink",
    "evaluate",
    "event_order",
    "predictions",
    "predictors_of",
]
