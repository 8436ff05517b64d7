"""Pure-Python reference of each model (SPEC §3): the oracle of the property tests.

Deliberately naive: whole event lists in, answer out, no incremental state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from genderd.clock import MS_PER_DAY


@dataclass(frozen=True)
class Ev:
    id: str
    cid: str
    gender: str
    ts: int

    @property
    def id_key(self) -> tuple[int, int]:
        ms, seq = self.id.split("-")
        return int(ms), int(seq)


@dataclass(frozen=True)
class Expected:
    gender: str
    scores: dict[str, int] | None
    last_event_ts: int


def last(events: Iterable[Ev]) -> Expected | None:
    events = list(events)
    if not events:
        return None
    best = max(events, key=lambda e: (e.ts, e.id_key))
    return Expected(best.gender, None, best.ts)


def _top(events: list[Ev]) -> Expected | None:
    if not events:
        return None
    counts: dict[str, int] = {}
    newest: dict[str, int] = {}
    for e in events:
        counts[e.gender] = counts.get(e.gender, 0) + 1
        newest[e.gender] = max(newest.get(e.gender, e.ts), e.ts)
    # most events, then newest event, then alphabetically smallest name
    gender = min(counts, key=lambda g: (-counts[g], -newest[g], g))
    return Expected(gender, counts, max(newest.values()))


def top(events: Iterable[Ev]) -> Expected | None:
    return _top(list(events))


def top_window(
    events: Iterable[Ev], processed_at: int, read_at: int, window: int
) -> Expected | None:
    """Events counted when processed at ``processed_at`` and inside the window at ``read_at``."""
    first_counted = processed_at // MS_PER_DAY - window + 1
    read_day = read_at // MS_PER_DAY
    inside = [
        e
        for e in events
        if e.ts // MS_PER_DAY >= first_counted
        and read_day - window + 1 <= e.ts // MS_PER_DAY <= read_day
    ]
    return _top(inside)


def top_window_per_event(
    processed: Iterable[tuple[Ev, int]], read_at: int, window: int
) -> Expected | None:
    """:func:`top_window` with a processing time per event: an event counts when its day was
    inside the window when it was processed, and is inside the window at ``read_at``."""
    read_day = read_at // MS_PER_DAY
    inside = [
        e
        for e, processed_at in processed
        if e.ts // MS_PER_DAY >= processed_at // MS_PER_DAY - window + 1
        and read_day - window + 1 <= e.ts // MS_PER_DAY <= read_day
    ]
    return _top(inside)
