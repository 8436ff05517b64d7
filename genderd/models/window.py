"""``TopWindow``: the windowed ``top``, the client's most visited gender over the last W UTC
days (``top7d`` is one, in :mod:`genderd.models.top7d`).

A new window length is a subclass with no Lua (SPEC §7)::

    class Top30(TopWindow):
        name = "top30d"
        window_days = 30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from genderd.clock import day_of
from genderd.events import Event
from genderd.keys import Keys, result_field
from genderd.models.base import CountingModel, counter_fields, gender_params
from genderd.settings import MAX_WINDOW_DAYS, Settings

if TYPE_CHECKING:
    from genderd.evaluation.predictors import WindowPredictor
    from genderd.grading.plan import Grading


class TopWindow:
    """The gender with the most events in UTC days D-W+1..D at read time (D = today).

    Counts live in one hash per client per day with a fixed expiry; the stored answer carries
    the time until which it is valid, and lookups after that recompute it from the buckets.
    A subclass sets ``name`` and ``window_days`` (None: ``GENDERD_WINDOW_DAYS``), and
    optionally ``aliases`` and ``description``; any other name in it is free (the framework
    wraps it in a :class:`WindowRuntime`). Its buckets are its own (they carry its name).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    window_days: ClassVar[int | None] = None
    description: ClassVar[str] = (
        "gender with the most events in the last GENDERD_WINDOW_DAYS UTC days"
    )

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        days = cls.__dict__.get("window_days")
        problem = window_days_problem(days)
        if problem:
            raise TypeError(f"{cls.__name__}.{problem}")
        if "description" not in cls.__dict__ and days is not None:
            cls.description = f"gender with the most events in the last {days} UTC days"


def window_days_problem(days: object) -> str | None:
    """Why ``days`` cannot be a :class:`TopWindow`'s ``window_days`` (one phrase), or None."""
    if days is None or (
        isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= MAX_WINDOW_DAYS
    ):
        return None
    return f"window_days must be a whole number of days, 1-{MAX_WINDOW_DAYS} (got {days!r})"


def window_problem(definition: type[TopWindow], settings: Settings) -> str | None:
    """Why the windowed model ``definition`` cannot run with ``settings`` (one line), or None."""
    window = definition.window_days or settings.window_days
    ttl = settings.client_ttl_days
    if ttl and ttl < window + 1:
        # the result hash must outlive the day buckets (see Settings._check_client_ttl)
        return f"its window of {window} days needs GENDERD_CLIENT_TTL_DAYS 0 or >= {window + 1}"
    return None


class WindowRuntime(CountingModel):
    """The framework's side of a :class:`TopWindow`: its keys, scripts and answer fields."""

    apply_files = ("top7d.lua",)
    # the valid-answer fast path runs before the chunks it uses (its "uses here" line)
    refresh_files = ("top7d_read.lua",)
    grades = True

    def __init__(
        self,
        definition: type[TopWindow],
        settings: Settings,
        keys: Keys,
        *,
        oldest_layout: int = 1,
    ) -> None:
        self._definition = definition
        self.name = definition.name
        self.aliases = tuple(definition.aliases)
        self.description = definition.description
        #: the window's length in UTC days
        self.window = definition.window_days or settings.window_days
        super().__init__(settings, keys, oldest_layout=oldest_layout)
        # (shard, day) -> the bucket keys of the lookup window without the client id
        self._bucket_heads: dict[tuple[int, int], list[str]] = {}
        # the refresh script reads the answer's validity and day in its one HMGET
        self.refresh_tail = (result_field(self.name, "u"), result_field(self.name, "w"))

    @property
    def defined_by(self) -> type:
        return self._definition

    def _buckets(self, shard: int, cid: str, now_ms: int) -> list[str]:
        """Buckets of days D-W+1 .. D+1 (today and tomorrow included)."""
        today = day_of(now_ms)
        heads = self._bucket_heads.get((shard, today))
        if heads is None:  # once per shard and day: lookups build these on every request
            if len(self._bucket_heads) > 4 * 1024:
                self._bucket_heads.clear()
            days = range(today - self.window + 1, today + 2)
            heads = self.keys.day_buckets(shard, self.name, days, "")
            self._bucket_heads[(shard, today)] = heads
        return [head + cid for head in heads]

    def params(self) -> list[str]:
        return [str(self.oldest_layout), str(self.window), *gender_params(self.settings)]

    @property
    def refresh_params(self) -> tuple[str, ...]:
        return tuple(gender_params(self.settings))

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        # the result hash, then each event's day bucket (the apply never reads the window)
        bucket = self.keys.day_bucket
        return [
            self.keys.result(shard, cid),
            *(bucket(shard, self.name, day_of(e.ts), cid) for e in events),
        ]

    def grading_keys(
        self, shard: int, cid: str, events: Sequence[Event], grading: Grading
    ) -> list[str]:
        # the buckets of every window an entry to grade is read in: days lo-W+1 .. hi, lo and
        # hi the earliest and latest day of those entries (top7d.lua's read_window)
        days = [day_of(e.ts) for e in events if grading.gradable(e)]
        if not days:
            return []
        span = range(min(days) - self.window + 1, max(days) + 1)
        return self.keys.day_buckets(shard, self.name, span, cid)

    def client_data_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        # a bucket of day d lives until the end of day d+W-1; one may be a day ahead
        today = day_of(now_ms)
        days = range(today - self.window, today + 2)
        return [self.keys.result(shard, cid), *self.keys.day_buckets(shard, self.name, days, cid)]

    def refresh_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid), *self._buckets(shard, cid, now_ms)]

    def result_fields(self) -> Sequence[str]:
        return [
            *super().result_fields(),
            *(result_field(self.name, part) for part in "uw"),
            *counter_fields(self.name, self.settings),
        ]

    def predictor(self) -> WindowPredictor:
        from genderd.evaluation.predictors import WindowPredictor

        return WindowPredictor(self.window)
