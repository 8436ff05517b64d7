"""Model ``recency``: the gender with the most *recent* interest, as exponentially decayed
counts (an event ``half_life_days`` older than another weighs half as much).

The worked example of a :class:`~genderd.models.PythonModel` (docs/write-a-model.md): plain
Python, no Redis. It is order-independent, because what it keeps does not depend on the order
the events come in: per gender, the sum of ``2 ** ((ts - ref) / half_life)`` over its events,
with ``ref`` the newest event's ``ts`` of that gender (rescaled when a newer one arrives). So
replays and competing workers give the same answer, up to floating-point rounding.

The answer compares the genders' sums at the client's newest event; ties go to the gender with
the newest event, then to the alphabetically smallest name (as ``top`` does). ``scores`` are
the decayed counts at that time, rounded to 4 decimals.

The half-life is the class attribute ``half_life_days`` (7), or the setting
``recency_half_life_days`` (``GENDERD_RECENCY_HALF_LIFE_DAYS``) for ``recency`` itself; a
subclass with another ``name`` and ``half_life_days`` is another model.
"""

from __future__ import annotations

from typing import Any, ClassVar

from genderd.clock import MS_PER_DAY
from genderd.events import Event
from genderd.models.python import PythonModel
from genderd.settings import Settings


class RecencyModel(PythonModel):
    """Exponentially decayed counts per gender; see the module's docstring."""

    name = "recency"
    description = "gender with the most recent interest: counts halved every 7 days of age"
    half_life_days: ClassVar[float] = 7.0

    def __init__(self, settings: Settings | None = None) -> None:
        configured = settings.recency_half_life_days if settings is not None else None
        if type(self) is not RecencyModel:  # a subclass is another model: its own half-life
            configured = None
        self.half_life_ms = (configured or self.half_life_days) * MS_PER_DAY

    def identify_gender(self, state: dict[str, Any], event: Event) -> str | None:
        # state[gender] = [decayed count at ref, ref (the gender's newest ts)]
        gender, ts = event.gender, event.ts
        entry = state.get(gender)
        if entry is None:
            state[gender] = [1.0, ts]
        elif ts > entry[1]:
            entry[0] = entry[0] * 2 ** ((entry[1] - ts) / self.half_life_ms) + 1.0
            entry[1] = ts
        else:
            entry[0] += 2 ** ((ts - entry[1]) / self.half_life_ms)
        return self._best(state)

    def _at_newest(self, state: dict[str, Any]) -> dict[str, float]:
        """Each gender's decayed count at the client's newest event."""
        newest = max([ref for _, ref in state.values()])
        half_life = self.half_life_ms
        return {
            gender: weight * 2 ** ((ref - newest) / half_life)
            for gender, (weight, ref) in state.items()
        }

    def _best(self, state: dict[str, Any]) -> str:
        """Most weight (compared to 9 decimals, so that rounding cannot split a tie), then the
        newest event, then the name."""
        if len(state) == 1:
            return next(iter(state))
        newest = max([ref for _, ref in state.values()])
        half_life = self.half_life_ms
        best, best_key = "", (0.0, 0, "")
        for gender, (weight, ref) in state.items():
            key = (-round(weight * 2 ** ((ref - newest) / half_life), 9), -ref, gender)
            if not best or key < best_key:
                best, best_key = gender, key
        return best

    def scores(self, state: dict[str, Any]) -> dict[str, float] | None:
        return {gender: round(value, 4) for gender, value in sorted(self._at_newest(state).items())}
