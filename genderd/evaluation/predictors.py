"""Python references of each model kind's semantics (SPEC §3), for evaluation.

The built-in models run as Lua on the hot path; a :class:`Predictor` says, in Python, what the
live service answers for one client at read time ``t`` from the client's events applied so far.
Each model kind returns one from :meth:`genderd.models.base.Model.predictor`.

The contract of a predictor, which :class:`genderd.evaluation.prequential.Prequential` keeps:

- ``new()`` makes the state of a client with no events;
- ``predict(state, t)`` is the answer at read time ``t``: ``(gender, scores)``, or
  ``(None, None)`` when the service would answer 404; ``scores`` is the predictor's own dict
  (read it before the next ``apply``, copy it to keep it);
- ``apply(state, event)`` adds an event.

In :data:`TIME` order each client's events come in ascending ``(ts, entry id)`` order, and
read times never go back (``t`` >= the ts of every event applied so far): so the greatest
``(ts, id)`` is the latest event applied, and a day that has left a window never comes back
into it. In :data:`ARRIVAL` order each client's events come in the order the workers applied
them (stream ids; a file's lines): an event may come after one with a greater ``ts`` (a late
event), and ``t``, the time of the event about to be applied, may go back. A predictor serves
both orders unless it has two optional methods:

- ``arrival()`` gives another predictor, for arrival order (``last``, ``top`` and the
  windows have one: the time order's relies on the order to do less per event);
- ``clock(state, now)``, on a predictor whose answer depends on when the service reads (a
  window, whose day buckets expire), is called before a read in arrival order with the time
  the worker processes the event about to be applied: its entry id's time, which never goes
  back for a client (``apply`` reads it from the event's id itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from genderd.clock import MS_PER_DAY
from genderd.errors import InputError
from genderd.events import Event, entry_ms
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.models.python import PythonRuntime

#: what a predictor answers: (gender or None, per-gender scores or None)
Prediction = tuple[str | None, dict[str, Any] | None]

NO_ANSWER: Prediction = (None, None)

#: the order in which an evaluation applies each client's events
Order = Literal["time", "arrival"]
#: event time, ``(ts, entry id)``: what the model would answer had every event arrived on time
TIME: Final[Order] = "time"
#: arrival, stream id order (a file's line order): what the workers applied, and served
ARRIVAL: Final[Order] = "arrival"
ORDERS: Final[tuple[Order, ...]] = (TIME, ARRIVAL)


class NotEvaluable(InputError):
    """A model that cannot be evaluated; ``str(error)`` is the one-line reason."""


class Predictor(Protocol):
    """A model kind's semantics in Python (see the module's docstring)."""

    def new(self) -> Any:
        """The state of a client with no events."""

    def predict(self, state: Any, t: int) -> Prediction:
        """The answer served at read time ``t``."""

    def apply(self, state: Any, event: Event) -> None:
        """Add ``event`` to ``state``."""


def in_order(predictor: Predictor, order: Order) -> Predictor:
    """The predictor to use in ``order``: its ``arrival()`` in arrival order, if it has one."""
    arrival = getattr(predictor, "arrival", None) if order == ARRIVAL else None
    return predictor if arrival is None else arrival()


class LastPredictor:
    """``last`` in time order: the gender of the event with the greatest ``(ts, entry id)``,
    which is the latest event applied; no scores."""

    __slots__ = ()

    def new(self) -> list[str | None]:
        return [None]

    def arrival(self) -> ArrivalLastPredictor:
        """The predictor for arrival order."""
        return ArrivalLastPredictor()

    def predict(self, state: list[str | None], t: int) -> Prediction:
        return state[0], None

    def apply(self, state: list[str | None], event: Event) -> None:
        state[0] = event.gender


class ArrivalLastPredictor:
    """``last`` in arrival order: the gender of the event with the greatest ``(ts, entry id)``
    applied so far, as ``last.lua`` keeps it; a late event leaves it as it is.

    State: ``[gender, ts, entry id]`` of that event."""

    __slots__ = ()

    def new(self) -> list[Any]:
        return [None, 0, ""]

    def predict(self, state: list[Any], t: int) -> Prediction:
        return state[0], None

    def apply(self, state: list[Any], event: Event) -> None:
        ts = event.ts
        if (
            state[0] is None
            or ts > state[1]
            or (ts == state[1] and parse_id(event.id) > parse_id(state[2]))
        ):
            state[0], state[1], state[2] = event.gender, ts, event.id


class TopPredictor:
    """``top`` in time order: the gender with the most events; ties go to the gender whose
    newest event has the greatest ``ts``, then to the alphabetically smallest name.
    ``scores``: the counts.

    State: ``[answer, counts, newest ts per gender]``. Only the event's gender can overtake
    the answer: its count grew and its newest event is now the newest of all (events come in
    ts order)."""

    __slots__ = ()

    def new(self) -> list[Any]:
        return [None, {}, {}]

    def arrival(self) -> TopPredictor:
        """The predictor for arrival order."""
        return ArrivalTopPredictor()

    def predict(self, state: list[Any], t: int) -> Prediction:
        best = state[0]
        return (best, state[1]) if best is not None else NO_ANSWER

    def apply(self, state: list[Any], event: Event) -> None:
        gender, ts = event.gender, event.ts
        counts = state[1]
        count = counts.get(gender, 0) + 1
        counts[gender] = count
        state[2][gender] = ts
        best = state[0]
        if best is None or best == gender:
            state[0] = gender
        else:
            self._overtake(state, gender, count, ts)

    @staticmethod
    def _overtake(state: list[Any], gender: str, count: int, ts: int) -> None:
        """Make ``gender`` (now ``count`` events, the newest at ``ts``) the answer if it
        overtakes the answer, another gender."""
        best = state[0]
        lead, newest = state[1][best], state[2][best]
        if count > lead or (count == lead and (ts > newest or (ts == newest and gender < best))):
            state[0] = gender


class ArrivalTopPredictor(TopPredictor):
    """``top`` in arrival order: as in time order, but a gender's newest ts is the greatest of
    its events (a late event does not lower it), as ``top.lua`` keeps it."""

    __slots__ = ()

    def apply(self, state: list[Any], event: Event) -> None:
        gender, ts = event.gender, event.ts
        counts, newest = state[1], state[2]
        count = counts.get(gender, 0) + 1
        counts[gender] = count
        if newest.get(gender, -1) < ts:
            newest[gender] = ts
        best = state[0]
        if best is None or best == gender:
            state[0] = gender
        else:
            self._overtake(state, gender, count, newest[gender])


def _top_of(counts: dict[str, int], newest: dict[str, int]) -> str:
    """The gender with the most events (ties: the newest event, then the smallest name)."""
    best, best_n, best_ts = "", 0, 0
    for gender, n in counts.items():
        ts = newest[gender]
        if n > best_n or (n == best_n and (ts > best_ts or (ts == best_ts and gender < best))):
            best, best_n, best_ts = gender, n, ts
    return best


class WindowPredictor:
    """Windowed ``top`` (``top7d``, every ``TopWindow``) in time order: at read time ``t``,
    with ``D = floor(t / 86_400_000)``, the events whose UTC day lies in ``D-W+1 .. D``; the
    answer as in ``top`` over them (ties: the newest event in the window, then the name).

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

    def arrival(self) -> ArrivalWindowPredictor:
        """The predictor for arrival order."""
        return ArrivalWindowPredictor(self.window)

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
        best, best_n, best_ts = "", 0, 0  # _top_of, inline: this runs for every event
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


#: the fields of one (day, gender) counter in :class:`ArrivalWindowPredictor`'s flat state
_STRIDE = 4
#: the first day of no bucket: below every day
_NO_DAY = -(1 << 62)


class ArrivalWindowPredictor:
    """Windowed ``top`` in arrival order: what ``top7d.lua`` counts and a read at ``t`` sums.

    The worker counts an event in its day's bucket unless the day is already older than the
    window when it processes the event (its entry id's time), and a bucket expires at the end
    of the last day it can be inside a window. A read at ``t`` sums the buckets of days
    ``D-W+1 .. D`` (``D`` the day of ``t``) that have not expired by the service's clock
    (:meth:`clock`): a bucket after ``D`` (an event with a greater ts, applied earlier) is not
    in it, and ties go to the newest ts of each gender in those buckets, then to the name.

    State: the first day whose bucket has not expired, then ``[day, gender, count, newest
    ts]`` per bucket and gender, flat (a few per client: the buckets of ``W`` days at most,
    plus one ahead). The clock never goes back for a client (a shard's entry ids grow), so an
    expired bucket is dropped for good."""

    __slots__ = ("window",)

    def __init__(self, window: int) -> None:
        #: the window's length in UTC days
        self.window = window

    def new(self) -> list[Any]:
        return [_NO_DAY]

    def clock(self, state: list[Any], now: int) -> None:
        """The service's clock reads ``now``: the buckets expired by then are dropped."""
        first = now // MS_PER_DAY - self.window + 1
        if first <= state[0]:
            return
        state[0] = first
        if any(state[at] < first for at in range(1, len(state), _STRIDE)):
            kept = [state[at : at + _STRIDE] for at in range(1, len(state), _STRIDE)]
            state[1:] = [value for row in kept if row[0] >= first for value in row]

    def predict(self, state: list[Any], t: int) -> Prediction:
        day = t // MS_PER_DAY
        first = max(day - self.window + 1, state[0])
        counts: dict[str, int] = {}
        newest: dict[str, int] = {}
        for at in range(1, len(state), _STRIDE):
            if first <= state[at] <= day:
                gender = state[at + 1]
                counts[gender] = counts.get(gender, 0) + state[at + 2]
                if newest.get(gender, -1) < state[at + 3]:
                    newest[gender] = state[at + 3]
        if not counts:
            return NO_ANSWER
        return _top_of(counts, newest), counts

    def apply(self, state: list[Any], event: Event) -> None:
        self.clock(state, entry_ms(event.id))
        day, gender, ts = event.ts // MS_PER_DAY, event.gender, event.ts
        if day < state[0]:  # older than the window when processed: not counted
            return
        for at in range(1, len(state), _STRIDE):
            if state[at] == day and state[at + 1] == gender:
                state[at + 2] += 1
                if state[at + 3] < ts:
                    state[at + 3] = ts
                return
        state += (day, gender, 1, ts)


class PythonPredictor:
    """A :class:`~genderd.models.PythonModel` (``recency`` and the users' models): the answer
    and scores stored after the worker's own checks (:meth:`PythonRuntime.step`, the one-event
    form of :meth:`PythonRuntime.run`) ran over the client's events in the order given (stream
    order, as the worker does, in arrival order), one event at a time, so that the state is
    JSON-normalised between events. An event the model fails on leaves the state and the
    stored answer as they were; an answer of None removes the stored answer (and its scores).
    Both orders.

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
        done = runtime.step(state[0], event)
        if done is None:
            return
        new, answer, value = done
        # a copy: orjson's bytes keep the capacity they were written with (about 4 KiB)
        state[0] = memoryview(new).tobytes()
        state[1] = answer
        state[2] = None if answer is None else runtime.served_scores(value)


class MajorityPredictor:
    """The baseline: the most frequent gender of all earlier events of all clients (ties: the
    alphabetically smallest name); no answer before the first event. ``scores``: the global
    counts. Every client shares one state. Both orders."""

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
    "ARRIVAL",
    "NO_ANSWER",
    "ORDERS",
    "TIME",
    "ArrivalLastPredictor",
    "ArrivalTopPredictor",
    "ArrivalWindowPredictor",
    "LastPredictor",
    "MajorityPredictor",
    "NotEvaluable",
    "Order",
    "Prediction",
    "Predictor",
    "PythonPredictor",
    "TopPredictor",
    "WindowPredictor",
    "in_order",
]
