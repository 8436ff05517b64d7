"""Which events an evaluation applies, and which of the applied ones it scores.

Applied: the events whose time lies in ``[since, until)``, and with ``warmup`` every event
before ``since`` too. Scored: an applied event at or after ``since`` that is the client's first
event, or with a session gap the first after a pause longer than the gap, and, with a maximum
delay, processed no more than that after its time. :meth:`Selection.scored` is the one place
that decides whether an event is scored: the prequential loop calls it for every event unless
:attr:`Selection.scores_every_event` says no rule is set (a new rule goes in both).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from genderd.events import Event


@dataclass(frozen=True)
class Selection:
    """The events applied and scored (see the module). Times in ms since the epoch."""

    since_ms: int | None = None  # inclusive
    until_ms: int | None = None  # exclusive
    warmup: bool = False  # apply the events before since_ms, without scoring them
    session_gap_ms: int | None = None  # score only a client's first event of each session
    max_delay_ms: int | None = None  # score only events processed at most this after their ts

    def within(self, events: Iterable[Event]) -> Iterator[Event]:
        """The events of ``events`` that are applied, in the order given."""
        low = None if self.warmup else self.since_ms
        high = self.until_ms
        if low is None and high is None:
            yield from events
            return
        for event in events:
            if (low is None or event.ts >= low) and (high is None or event.ts < high):
                yield event

    def scored(self, ts: int, now: int, newest: int | None) -> bool:
        """Whether an applied event at ``ts``, which the service processes at ``now``, is
        scored, the client's earlier events having their greatest ts at ``newest`` (None:
        the client has no earlier event)."""
        if self.since_ms is not None and ts < self.since_ms:
            return False  # warm-up: applied, not scored
        if self.max_delay_ms is not None and now - ts > self.max_delay_ms:
            return False
        if newest is None:
            return True
        return self.session_gap_ms is None or ts - newest > self.session_gap_ms

    @property
    def scores_every_event(self) -> bool:
        """True when every applied event is scored (the loop then asks nothing per event)."""
        return self.since_ms is None and self.session_gap_ms is None and self.max_delay_ms is None


__all__ = ["Selection"]
