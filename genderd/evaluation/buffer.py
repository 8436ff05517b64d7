"""Holding events to replay them in event-time order, in little memory.

An evaluation in time order over input that does not come in time order (the streams, whose
arrivals are not sorted by ``ts``; a file whose lines are not) must see every event before it
applies the first. :class:`EventBuffer` keeps each event as numbers in typed arrays (ts, the
entry id's two parts, the client's and the gender's number: 30 bytes an event, against some
250 for an :class:`~genderd.events.Event` and its strings), sorts their positions by
``(ts, entry id)`` and rebuilds each event as it is replayed.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from genderd.events import Event

#: array type codes: signed 64-bit (ts, entry id ms), unsigned 64-bit (entry id sequence),
#: unsigned 32-bit (client number), unsigned 16-bit (gender number)
_INT64, _UINT64, _UINT32, _UINT16 = "q", "Q", "I", "H"
#: shifts the entry id's ms part above its sequence number in one sort key
_SEQ_BITS = 64
#: Event's __new__, then the setters of its slots id, cid, gender and ts
_EVENT_MAKERS = (
    Event.__new__,
    *(getattr(Event, name).__set__ for name in ("id", "cid", "gender", "ts")),
)


class EventBuffer:
    """Events kept compactly until :meth:`replay` gives them back in ``(ts, id)`` order."""

    __slots__ = (
        "_cid_numbers",
        "_cids",
        "_client",
        "_gender",
        "_gender_numbers",
        "_genders",
        "_id_ms",
        "_id_seq",
        "_ids_ascending",
        "_last_id",
        "_ts",
    )

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._ts = array(_INT64)
        self._id_ms = array(_INT64)
        self._id_seq = array(_UINT64)
        self._client = array(_UINT32)
        self._gender = array(_UINT16)
        self._cids: list[str] = []
        self._cid_numbers: dict[str, int] = {}
        self._genders: list[str] = []
        self._gender_numbers: dict[str, int] = {}
        self._ids_ascending = True  # entry ids added in ascending order (files, merged streams)
        self._last_id = (-1, -1)

    def __len__(self) -> int:
        return len(self._ts)

    def add(self, event: Event) -> None:
        """Keep ``event``."""
        self.extend((event,))

    def extend(self, events: Iterable[Event]) -> None:
        """Keep every event of ``events`` (one loop, its lookups hoisted: it runs per event)."""
        cid_numbers, cids = self._cid_numbers, self._cids
        gender_numbers, genders = self._gender_numbers, self._genders
        add_ts, add_ms, add_seq = self._ts.append, self._id_ms.append, self._id_seq.append
        add_client, add_gender = self._client.append, self._gender.append
        (last_ms, last_seq), ascending = self._last_id, self._ids_ascending
        for event in events:
            head, _, tail = event.id.partition("-")  # parse_id, inline
            ms, seq = int(head), int(tail or 0)
            if ms < last_ms or (ms == last_ms and seq <= last_seq):
                ascending = False
            last_ms, last_seq = ms, seq
            client = cid_numbers.get(event.cid)
            if client is None:
                client = cid_numbers[event.cid] = len(cids)
                cids.append(event.cid)
            gender = gender_numbers.get(event.gender)
            if gender is None:
                gender = gender_numbers[event.gender] = len(genders)
                genders.append(event.gender)
            add_ts(event.ts)
            add_ms(ms)
            add_seq(seq)
            add_client(client)
            add_gender(gender)
        self._last_id, self._ids_ascending = (last_ms, last_seq), ascending

    def span(self, before: int | None = None) -> tuple[int, int, int, int]:
        """The events kept, their least and greatest ts (-1 when none), and how many lie
        before ``before``."""
        ts = self._ts
        if not ts:
            return 0, -1, -1, 0
        below = 0 if before is None else sum(map(before.__gt__, ts))
        return len(ts), min(ts), max(ts), below

    def _order(self) -> list[int]:
        """The positions in ``(ts, entry id)`` order: stable sorts by id (unless the ids came
        in order), then by ts, with plain ints as keys (a tuple key per event would take
        several times the memory)."""
        positions: list[int] = list(range(len(self._ts)))
        if not self._ids_ascending:
            ms, seq = self._id_ms, self._id_seq
            positions.sort(key=lambda at: (ms[at] << _SEQ_BITS) | seq[at])
        positions.sort(key=self._ts.__getitem__)
        return positions

    def replay(self) -> Iterator[Event]:
        """Every event kept, in ``(ts, entry id)`` order; the buffer is emptied as the replay
        starts (its arrays are released when it ends)."""
        order = self._order()
        ts, ms, seq = self._ts, self._id_ms, self._id_seq
        client, gender = self._client, self._gender
        cids, genders = self._cids, self._genders
        self._reset()  # the buffer is empty again; the replay keeps the data
        # an Event made by setting its slots: its frozen dataclass __init__ takes twice as
        # long, and this runs for every event (the values are those of valid events)
        new, set_id, set_cid, set_gender, set_ts = _EVENT_MAKERS
        for at in order:
            event = new(Event)
            set_id(event, f"{ms[at]}-{seq[at]}")
            set_cid(event, cids[client[at]])
            set_gender(event, genders[gender[at]])
            set_ts(event, ts[at])
            yield event


__all__ = ["EventBuffer"]
