"""Python references of each model kind's semantics (SPEC §3), for evaluation.

The built-in models run as Lua on the hot path; a :class:`Predictor` says, in Python, what the
live service answers for one client at read time ``t`` from the client's events applied so far.
Each model kind returns one from :meth:`genderd.models.base.Model.predictor`.

The contract of a predictor, which :func:`genderd.evaluation.prequential.steps` keeps:

- ``new()`` makes the state of a client with no events;
- ``predict(state, t)`` is the answer at read time ``t``: ``(gender, scores)``, or
  ``(None, None)`` when the service would answer 404; ``scores`` is the predictor's own dict
  (read it before the next ``apply``, copy it to keep it);
- ``apply(state, event)`` adds an event;
- each client's events come in ascending ``(ts, entry id)`` order, and read times never go
  back (``t`` >= the ts of every event applied so far). So the greatest ``(ts, id)`` is the
  latest event applied, and a day that has left a window never comes back into it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from genderd.clock import MS_PER_DAY
from genderd.errors import InputError
from genderd.events import Event

if TYPE_CHECKING:
    from genderd.models.python import PythonRuntime

#: what a predictor answers: (gender or None, per-gender scores or None)
Prediction = tuple[str | None, dict[str, Any] | None]

NO_ANSWER: Prediction = (None, None)


class NotEvaluable(InputError):
    """A model that cannot be evaluated; ``str(error)`` is the one-line reason."""


class Predictor(Protocol):
    """A model kind's semantics in Python (see the module's docstring)."""

    def new(self) -> Any:
        """The state of a client with no events."""

    def predict(self, state: Any, t: int) -> Prediction:
        """The answer served at read time ``t``."""

    def apply(self, state: Any, event: Event) -> None:
        """Add ``event`` (the client's newest by ``(ts, id)``) to ``state``."""


class LastPredictor:
    """``last``: the gender of the event with the greatest ``(ts, entry id)``; no scores.

    Events come in ``(ts, id)`` order, so that event is the latest one applied."""

    __slots__ = ()

    def new(self) -> list[str | None]:
        return [None]

    def predict(self, state: list[str | None], t: int) -> Prediction:
        return state[0], None

    def apply(self, state: list[str | None], event: Event) -> None:
        state[0] = event.gender


class TopPredictor:
    """``top``: the gender with the most events; ties go to the gender whose newest event has
    the greatest ``ts``, then to the alphabetically smallest name. ``scores``: the counts.

    State: ``[answer, counts, newest ts per gender]``. Only the event's gender can overtake
    the answer: its count grew and its newest event is now the newest of all."""

    __slots__ = ()

    def new(self) -> list[Any]:
        return [None, {}, {}]

    def predict(self, state: list[Any], t: int) -> Prediction:
        best = state[0]
        return (best, state[1]) if best is not None else NO_ANSWER

    def apply(self, state: list[Any], event: Event) -> None:
        gender, ts = event.gender, event.ts
        counts, newest = state[1], state[2]
        count = counts.get(gender, 0) + 1
        counts[gender] = count
        newest[gender] = ts
        best = state[0]
        if best is None or best == gender:
            state[0] = gender
            return
        lead = counts[best]
        if count > lead or (
            count == lead and (ts > newest[best] or (ts == newest[best] and gender < best))
        ):
            state[0] = gender


class WindowPredictor:
    """Windowed ``top`` (``top7d``, every ``TopWindow``): at read time ``t``, with
    ``D = floor(t / 86_400_000)``, the events whose UTC day lies in ``D-W+1 .. D``; the answer
    as in ``top`` over them (ties: the newest event in the window, then the name).

    State: ``[days, genders, counts, newest ts per gender]``: the day and gender of each event
    still in the window, oldest first (two flat lists: far less memory than a dict per day),
    and their counts. A read drops the events that have left the window (they never come
    back: read times do not go back), an event already older than the window included. A
    gender still counted has its newest event in the window (its events are all at or before
    ``t``), so its newest ts is its latest."""

    __slots__ = ("window",)

    def __init__(self, window: int) -> None:
        #: the window's length in UTC days
        self.window = window

    def new(self) -> list[Any]:
        return [[], [], {}, {}]

    def predict(self, state: list[Any], t: int) -> Prediction:
        days, genders, counts, newest = state
        first = t // MS_PER_DAY - self.window + 1
        if days and days[0] < first:
            gone = 0
            for day in days:
                if day >= first:
                    break
                gone += 1
            for gender in genders[:gone]:
                left = counts[gender] - 1
                if left:
                    counts[gender] = left
                else:
                    del counts[gender]
            del days[:gone], genders[:gone]
        if not counts:
            return NO_ANSWER
        best, best_n, best_ts = "", 0, 0
        for gender, n in counts.items():
            ts = newest[gender]
            if n > best_n or (n == best_n and (ts > best_ts or (ts == best_ts and gender < best))):
                best, best_n, best_ts = gender, n, ts
        return best, counts

    def apply(self, state: list[Any], event: Event) -> None:
        days, genders, counts, newest = state
        gender, ts = event.gender, event.ts
        days.append(ts // MS_PER_DAY)
        genders.append(gender)
        counts[gender] = counts.get(gender, 0) + 1
        newest[gender] = ts


class PythonPredictor:
    """A :class:`~genderd.models.PythonModel` (``recency`` and the users' models): the answer
    and scores stored after the worker's own code (:meth:`PythonRuntime.run`) ran over the
    client's events in order, one event per run, so that the state is JSON-normalised between
    events. An event the model fails on leaves the state and the stored answer as they were;
    an answer of None removes the stored answer (and its scores).

    State: ``[state JSON, answer, scores]``."""

    __slots__ = ("runtime",)

    def __init__(self, runtime: PythonRuntime) -> None:
        self.runtime = runtime

    def new(self) -> list[Any]:
        return [None, None, None]

    def predict(self, state: list[Any], t: int) -> Prediction:
        return state[1], state[2]

    def apply(self, state: list[Any], event: Event) -> None:
        runtime = self.runtime
        done = runtime.run(state[0], (event,))
        if not done.applied:
            return
        state[0] = done.state
        state[1] = answer = done.answer
        state[2] = None if answer is None else runtime.served_scores(done.value)


class MajorityPredictor:
    """The baseline: the most frequent gender of all earlier events of all clients (ties: the
    alphabetically smallest name); no answer before the first event. ``scores``: the global
    counts. Every client shares one state."""

    __slots__ = ("_shared",)

    def __init__(self) -> None:
        self._shared: list[Any] = [None, {}]

    def new(self) -> list[Any]:
        return self._shared

    def predict(self, state: list[Any], t: int) -> Prediction:
        best = state[0]
        return (best, state[1]) if best is not None else NO_ANSWER

    def apply(self, state: list[Any], event: Event) -> None:
        gender, counts = event.gender, state[1]
        count = counts.get(gender, 0) + 1
        counts[gender] = count
        best = state[0]
        if best is None or count > counts[best] or (count == counts[best] and gender < best):
            state[0] = gender


__all__ = [
    "NO_ANSWER",
    "LastPredictor",
    "MajorityPredictor",
    "NotEvaluable",
    "Prediction",
    "Predictor",
    "PythonPredictor",
    "TopPredictor",
    "WindowPredictor",
]
