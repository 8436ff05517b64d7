"""What one apply call grades: the grading block of ``_grades.lua`` (keys and ARGV) and the
client groups the grades are kept by.

An event is graded when it arrived (its entry id's time) at most ``GENDERD_GRADING_MAX_DELAY_S``
after its ``ts``: a late event's prediction would be made with the client's later events
already applied. Replays do not grade (they build no :class:`Grading`); entries re-driven to one
model (``genderd dead redrive --model``) are listed in the model's re-driven ids, which a batch
of reclaimed entries checks.

Grades are kept per client *group* and hour, so that intervals are valid over clients (a
client's events are not independent) without a key per client: the clients of a shard are
spread over ``groups_per_shard`` groups by their CRC-32 (the shard's own hash, divided by the
shard count), so that the deployment has about :data:`CLIENT_GROUPS` groups whatever its shards.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from genderd.clock import MS_PER_DAY
from genderd.events import Event, entry_ms
from genderd.keys import Keys

#: client groups of the whole deployment (the clusters of the live statistics): at most 128
#: per shard, so that a shard's grades hash stays a compact listpack
CLIENT_GROUPS = 128
MS_PER_HOUR = 3_600_000
#: a mark's byte is this plus the hour's slot: "1" for the first hour; at most 78 slots keep it
#: printable ASCII ("~"), and a call's graded events span at most 51 hours (the delay limit
#: and the future an event may be in, a day each, and the hours they straddle)
MARK_ZERO = 48
#: clients whose group a worker remembers (about 100 bytes each)
GROUPS_REMEMBERED = 100_000
#: the hour of an event that is not graded, among a client's hours
NOT_GRADED = -1
#: a client grading's flags (its first byte is 48 plus them)
OTHER_DAY, EXTRA, GRADED, UNIFORM, MARKED = 1, 2, 4, 8, 16
FLAG_CHARS = tuple(chr(MARK_ZERO + flags) for flags in range(32))


def _digits(value: int, width: int) -> str:
    """``value`` as a client grading writes its numbers (its group, count of entries and
    extra keys): ``width`` base-64 digits, each the character 48 plus the digit."""
    assert 0 <= value < 64**width, (value, width)
    return "".join(chr(MARK_ZERO + value // 64**p % 64) for p in range(width - 1, -1, -1))


#: a client's count of entries in its grading: three digits (a call holds at most a batch,
#: GENDERD_BATCH_SIZE <= 10,000); those of most clients of a batch, written once
COUNT_DIGITS = 3
_COUNT_CHARS = tuple(_digits(n, COUNT_DIGITS) for n in range(1024))
#: how long a grades hash outlives its hour: the longest window that can be asked for
GRADES_KEEP_S = 30 * 86_400


def groups_per_shard(shards: int) -> int:
    """Client groups per shard: :data:`CLIENT_GROUPS` spread over the shards (at least one)."""
    return max(1, math.ceil(CLIENT_GROUPS / shards))


def client_group(cid: str, shards: int) -> int:
    """The group of a client within its shard."""
    return zlib.crc32(cid.encode("utf-8")) // shards % groups_per_shard(shards)


def hour_of(ts: int) -> int:
    """Hours since the epoch of a time in ms: the hour a graded event is kept under."""
    return ts // MS_PER_HOUR


@dataclass(frozen=True)
class Grading:
    """How a worker grades the events it applies (None where nothing is graded)."""

    keys: Keys
    shards: int
    max_delay_ms: int
    #: the group of the clients seen lately (a worker sees the same ones again and again)
    _known: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def gradable(self, event: Event) -> bool:
        """Whether ``event`` arrived within the delay limit: the rule the marks of
        :meth:`call` carry to the scripts."""
        return entry_ms(event.id) - event.ts <= self.max_delay_ms

    def call(
        self,
        shard: int,
        model: str,
        per_client: Mapping[str, Sequence[Event]],
        now: int,
        reclaimed: bool,
    ) -> Block:
        """The grading block of one call applying ``per_client``'s events of ``shard`` to
        ``model`` at ``now`` (``reclaimed``: entries taken over from other consumers, possibly
        re-driven), with each client's marks. A worker pays this on every event it applies: a
        batch all graded in one hour (nearly every batch) costs a pass over its events' times
        and ids and nothing per client; any other, a pass per client."""
        limit = self.max_delay_ms
        today = now // MS_PER_DAY
        stamps = [event.ts for own in per_client.values() for event in own]
        low, high = min(stamps), max(stamps)
        newest = max(
            int(entry[: entry.index("-")])
            for entry in (event.id for own in per_client.values() for event in own)
        )
        if newest - low <= limit and low // MS_PER_HOUR == high // MS_PER_HOUR:
            # every event graded, all in one hour (nearly always): every client's marks alike
            hour = low // MS_PER_HOUR
            flags = (
                GRADED | UNIFORM | (OTHER_DAY if hour * MS_PER_HOUR // MS_PER_DAY != today else 0)
            )
            return self._block(shard, model, [hour], reclaimed, {}, (flags, chr(MARK_ZERO + 1)))
        hours_of: dict[str, list[int]] = {}
        seen: set[int] = set()
        for cid, own in per_client.items():
            hours: list[int] = []
            for event in own:
                # gradable(), inline: a worker pays this on the events of such a batch
                entry, ts = event.id, event.ts
                if int(entry[: entry.index("-")]) - ts <= limit:
                    hours.append(ts // MS_PER_HOUR)
                else:
                    hours.append(NOT_GRADED)
            hours_of[cid] = hours
            seen.update(hours)
        seen.discard(NOT_GRADED)
        if not seen:
            return NO_BLOCK
        ordered = sorted(seen)
        chars = {hour: chr(MARK_ZERO + n) for n, hour in enumerate(ordered, 1)}
        chars[NOT_GRADED] = "0"
        other_day = {hour for hour in ordered if hour * MS_PER_HOUR // MS_PER_DAY != today}
        marks = {}
        for cid, hours in hours_of.items():
            first = hours[0]
            if first != NOT_GRADED and hours.count(first) == len(hours):
                flags = GRADED | UNIFORM | (OTHER_DAY if first in other_day else 0)
                marks[cid] = (flags, chars[first])
                continue
            graded = [hour for hour in hours if hour != NOT_GRADED]
            flags = (GRADED if graded else 0) | (
                OTHER_DAY if other_day and other_day.intersection(graded) else 0
            )
            marks[cid] = (flags, "".join(map(chars.__getitem__, hours)))
        return self._block(shard, model, ordered, reclaimed, marks, None)

    def _block(
        self,
        shard: int,
        model: str,
        ordered: list[int],
        reclaimed: bool,
        marks: dict[str, tuple[int, str]],
        common: tuple[int, str] | None,
    ) -> Block:
        """The block of the hours ``ordered``, with the clients' ``marks`` (or ``common`` for
        every client)."""
        keys = [self.keys.grades(shard, model, hour) for hour in ordered]
        if reclaimed:
            keys.append(self.keys.redriven_ids(shard, model))
        args = [
            "1" if reclaimed else "0",
            str(GRADES_KEEP_S),
            *(str(hour) for hour in ordered),
            str(len(ordered)),
        ]
        slots = {hour: n for n, hour in enumerate(ordered, 1)}
        return Block(keys, args, slots, marks, self, common)

    @functools.cached_property
    def _group_chars(self) -> tuple[str, ...]:
        """Each group's two characters."""
        return tuple(_digits(g, 2) for g in range(groups_per_shard(self.shards)))

    def group_chars(self, cid: str) -> str:
        """The client's group as its grading names it: two characters, the grades hash's field
        (:func:`client_group` in base 64 from "0"); remembered for the clients seen lately."""
        known = self._known
        found = known.get(cid)
        if found is None:
            if len(known) >= GROUPS_REMEMBERED:
                known.clear()
            found = known[cid] = self._group_chars[client_group(cid, self.shards)]
        return found

    def marks(self, block: Block, events: Sequence[Event], now: int) -> tuple[int, str]:
        """The flags and marks of some of a client's events (the Python models' commit, when
        the model failed on some of them): per event "0" (not graded) or the byte 48 + its
        hour's slot in ``block``."""
        today = now // MS_PER_DAY
        flags, marks = 0, []
        for event in events:
            if not self.gradable(event):
                marks.append("0")
                continue
            flags |= GRADED | (OTHER_DAY if event.ts // MS_PER_DAY != today else 0)
            marks.append(chr(MARK_ZERO + block.slots[event.ts // MS_PER_HOUR]))
        return flags, "".join(marks)


@dataclass(frozen=True)
class Block:
    """A call's grading block: its keys (right after the frame's own), its ARGV (last), the
    slot of each hour (from 1) that the clients' marks name, and each client's flags and
    marks."""

    keys: Sequence[str]
    args: Sequence[str]
    slots: dict[int, int]
    marks: dict[str, tuple[int, str]]
    grading: Grading | None = None
    #: every client's flags and marks, when they are all alike (then ``marks`` is empty)
    common: tuple[int, str] | None = None

    @property
    def grades(self) -> bool:
        """Whether the call grades anything (the scripts then expect each client's grading)."""
        return bool(self.keys)

    def client(
        self,
        cid: str,
        count: int,
        extra: int = 0,
        marks: tuple[int, str] | None = None,
        marked: bool = False,
    ) -> str:
        """The client's grading (``_grades.lua``): its flags (``marked``: its erasure marker
        is passed), group, ``count`` (its entries in the call), ``extra`` keys when there are
        some, and its marks (the block's, or ``marks``)."""
        assert self.grading is not None
        if marks is None:
            marks = self.common if self.common is not None else self.marks[cid]
        flags, chars = marks
        if marked:
            flags |= MARKED
        counted = _COUNT_CHARS[count] if count < len(_COUNT_CHARS) else _digits(count, COUNT_DIGITS)
        head = self.grading.group_chars(cid) + counted
        if not extra:
            return FLAG_CHARS[flags] + head + chars
        return FLAG_CHARS[flags | EXTRA] + head + _digits(extra, 2) + chars


#: the block of a call that grades nothing
NO_BLOCK = Block((), ("0",), {}, {})


__all__ = [
    "CLIENT_GROUPS",
    "GRADES_KEEP_S",
    "MARK_ZERO",
    "MS_PER_HOUR",
    "NOT_GRADED",
    "NO_BLOCK",
    "Block",
    "Grading",
    "client_group",
    "groups_per_shard",
    "hour_of",
]
