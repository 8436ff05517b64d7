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

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from genderd.events import Event, entry_ms
from genderd.keys import Keys

#: client groups of the whole deployment (the clusters of the live statistics): at most 128
#: per shard, so that a shard's grades hash stays a compact listpack
CLIENT_GROUPS = 128
MS_PER_HOUR = 3_600_000
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

    def gradable(self, event: Event) -> bool:
        """Whether ``event`` arrived within the delay limit (``_grades.lua``'s ``gradable``)."""
        return entry_ms(event.id) - event.ts <= self.max_delay_ms

    def group(self, cid: str) -> str:
        """The client's group, as the grades hash names it."""
        return str(client_group(cid, self.shards))

    def call(self, shard: int, model: str, events: Iterable[Event], reclaimed: bool) -> Block:
        """The grading block of one call applying ``events`` of ``shard`` to ``model``
        (``reclaimed``: entries taken over from other consumers, possibly re-driven)."""
        hours = sorted({hour_of(e.ts) for e in events if self.gradable(e)})
        if not hours:
            return NO_BLOCK
        keys = [self.keys.grades(shard, model, hour) for hour in hours]
        if reclaimed:
            keys.append(self.keys.redriven_ids(shard, model))
        args = [
            "1" if reclaimed else "0",
            str(GRADES_KEEP_S),
            str(self.max_delay_ms),
            *(str(hour) for hour in hours),
            str(len(hours)),
        ]
        return Block(keys, args)


@dataclass(frozen=True)
class Block:
    """A call's grading block: its keys (right after the frame's own) and its ARGV (last)."""

    keys: Sequence[str]
    args: Sequence[str]

    @property
    def grades(self) -> bool:
        """Whether the call grades anything (the scripts then expect each client's group)."""
        return bool(self.keys)


#: the block of a call that grades nothing
NO_BLOCK = Block((), ("0",))


__all__ = [
    "CLIENT_GROUPS",
    "GRADES_KEEP_S",
    "MS_PER_HOUR",
    "NO_BLOCK",
    "Block",
    "Grading",
    "client_group",
    "groups_per_shard",
    "hour_of",
]
