"""What an evaluation reads: events from a file, stdin or the deployment's streams, and labels.

Every event is validated by the rules the workers apply (:mod:`genderd.events`), so that an
evaluation scores exactly what the models would have been given. Invalid lines and entries
are counted per reason in an :class:`InputSummary` and skipped: a history with some bad lines
can still be evaluated, and the report says how many there were.

Files are JSON Lines (``{"cid": .., "gender": .., "ts": ..}``) or CSV (``cid,gender[,ts]``,
header row optional), told apart by their first non-blank line, read by
:class:`genderd.lines.LineReader`: in bounded memory (a line longer than
:data:`~genderd.lines.MAX_LINE_BYTES` is malformed, reason ``line_too_long``), a UTF-8 byte
order mark skipped in a file and on stdin alike; a file's line order is its arrival order.
Reading the streams is read-only: ``XRANGE`` in pages, no consumer group, nothing written; the
shards are read side by side and merged by entry id (arrival order), a page of each at a time,
so that the events can be evaluated as they are read.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.events import (
    TS_MAX_DIGITS,
    Event,
    EventError,
    Invalid,
    Reason,
    check_event,
    cid_problem,
    parse_entry,
    text,
)
from genderd.lines import MAX_LINE_BYTES, TOO_LONG, LineReader
from genderd.settings import Settings
from genderd.streams import parse_id
from genderd.transport import AsyncClient

MALFORMED = "malformed"  # a line that is not a JSON object, or a CSV row of the wrong width
STREAM_PAGE = 10_000  # entries per XRANGE call
STDIN = "-"
CSV_COLUMNS = ("cid", "gender", "ts")  # a file's columns, the last optional
UNKNOWN_GENDERS_KEPT = 20  # distinct unknown genders counted (the rest: not named)
TS_LIMIT = 10**TS_MAX_DIGITS  # a ts has at most TS_MAX_DIGITS digits
_LABEL_COLUMNS = ("cid", "gender")


@dataclass
class StreamRead:
    """What was read of one shard's stream: entries, and the first and last entry ids."""

    stream: str
    entries: int = 0
    first_id: str | None = None
    last_id: str | None = None


@dataclass
class InputSummary:
    """What reading found: lines (or entries) read, the invalid ones per reason code, the
    unknown genders seen (normalised, the first :data:`UNKNOWN_GENDERS_KEPT` distinct ones)
    and, for the streams, what was read of each."""

    read: int = 0  # lines or entries read
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # Reason value or "malformed" -> count
    unknown_genders: dict[str, int] = field(default_factory=dict)
    streams: list[StreamRead] = field(default_factory=list)

    def count(self, reason: str, gender: object = None) -> None:
        """Count one invalid line or entry (``gender``: its gender field, for an unknown
        gender)."""
        self.invalid += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if reason == Reason.UNKNOWN_GENDER.value:
            name = _normalised(gender)
            if name in self.unknown_genders or len(self.unknown_genders) < UNKNOWN_GENDERS_KEPT:
                self.unknown_genders[name] = self.unknown_genders.get(name, 0) + 1


def _normalised(gender: object) -> str:
    """A gender field as events' genders are compared (trimmed, lowercase); not UTF-8: ``?``."""
    try:
        return text(gender).strip().lower()
    except ValueError:
        return "?"


# -- files ---------------------------------------------------------------------------------------
def _open(path: str) -> BinaryIO:
    """The file at ``path`` ("-": stdin), as bytes, or an InputError in one line."""
    if path == STDIN:
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


#: a row of a file: its fields, or the reason it has none (malformed, or a line too long)
Row = Mapping[str, object] | str


def _rows(stream: BinaryIO, columns: tuple[str, ...]) -> Iterator[tuple[int, Row]]:
    """(line number, fields or why not) of each non-blank line.

    JSON Lines when the first non-blank line starts with ``{``, else CSV whose columns are
    ``columns`` (the last one optional), with an optional header row naming them. A line that
    is not UTF-8 is read with its bad bytes escaped (surrogateescape), so that its cid or
    gender is refused by the usual rules instead of stopping the whole file.
    """
    json_lines: bool | None = None
    for line in LineReader(stream):
        if line.data is None:
            yield line.number, TOO_LONG
            continue
        stripped = line.data.decode("utf-8", errors="surrogateescape").strip()
        if not stripped:
            continue
        if json_lines is None:
            json_lines = stripped.startswith("{")
            if not json_lines and _is_header(stripped, columns):
                continue
        row = _json_row(stripped) if json_lines else _csv_row(stripped, columns)
        yield line.number, MALFORMED if row is None else row


def _is_header(line: str, columns: tuple[str, ...]) -> bool:
    cells = [cell.strip().lower() for cell in next(csv.reader([line]), [])]
    return bool(cells) and cells == list(columns[: len(cells)]) and len(cells) >= 2


def _json_row(line: str) -> Mapping[str, object] | None:
    try:
        value = orjson.loads(line.encode("utf-8", errors="surrogateescape"))
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _csv_row(line: str, columns: tuple[str, ...]) -> Mapping[str, object] | None:
    try:
        cells = next(csv.reader([line]), [])
    except csv.Error:
        return None
    if not len(columns) - 1 <= len(cells) <= len(columns):
        return None
    row: dict[str, object] = dict(zip(columns, cells, strict=False))
    if row.get("ts") == "":  # an empty optional column: no ts
        del row["ts"]
    return row


def read_file(
    path: str, settings: Settings, *, now_ms: int, summary: InputSummary
) -> Iterator[Event]:
    """The valid events of a JSON Lines or CSV file (``"-"``: stdin), in file order.

    Each line is validated like an event a producer writes now (``now_ms``): a missing ``ts``
    becomes ``now_ms``, a ``ts`` more than ``max_future_ms`` ahead of it is ``future_ts``.
    Event ids are ``f"{arrival}-{line}"``: the line order is the arrival order, and a line
    arrives when the newest ``ts`` read so far (up to it) happened, as a worker that read the
    file as a stream would process it; so ``(ts, id)`` orders ties of ``ts`` by line, and a
    late line's id tells how late it is. Invalid lines are counted in ``summary`` and skipped.
    A file that cannot be opened raises :class:`~genderd.errors.InputError` now, not on the
    first iteration.
    """
    stream = _open(path)
    return _file_events(stream, path != STDIN, settings, now_ms, summary)


def _file_events(
    stream: BinaryIO, owned: bool, settings: Settings, now_ms: int, summary: InputSummary
) -> Iterator[Event]:
    arrived = 0  # the newest ts given so far: when the line arrived (a missing ts: now)
    with stream if owned else contextlib.nullcontext(stream):
        for number, fields in _rows(stream, CSV_COLUMNS):
            summary.read += 1
            if isinstance(fields, str):
                summary.count(fields)
                continue
            try:
                cid, gender, ts = check_event(
                    fields, settings.genders, now_ms, settings.max_future_ms
                )
            except EventError as error:
                summary.count(error.reason.value, fields.get("gender"))
                continue
            if ts is None:
                ts = now_ms
            elif ts > arrived:
                arrived = ts
            yield Event(f"{max(arrived, ts)}-{number}", cid, gender, ts)


def in_time_order(path: str, *, now_ms: int) -> bool:
    """Whether the lines of the file at ``path`` come in time order (each line's ``ts`` not
    before the previous one's; a missing ``ts`` is ``now_ms``): then an evaluation in time
    order can apply its events as they are read again, in little memory. A cheap pass: the
    lines are parsed but not validated, so a line that is invalid for another reason still
    counts (which can only make the answer False)."""
    last = -1
    with contextlib.closing(_open(path)) as stream:
        for _, fields in _rows(stream, CSV_COLUMNS):
            ts = None if isinstance(fields, str) else _given_ts(fields.get("ts"), now_ms)
            if ts is None:
                continue
            if ts < last:
                return False
            last = ts
    return True


def _given_ts(raw: object, now_ms: int) -> int | None:
    """A line's ts as :func:`~genderd.events.check_event` reads it; None when it is bad."""
    if raw is None:
        return now_ms
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 <= raw < TS_LIMIT else None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= TS_MAX_DIGITS:
        return int(raw)
    return None


# -- streams -------------------------------------------------------------------------------------
class _Cursor:
    """One shard's stream as it is read: its page of valid events not yet taken (with their
    ids as numbers), and what was read of it."""

    def __init__(
        self, deployment: Deployment, shard: int, client: AsyncClient, summary: InputSummary
    ) -> None:
        self.deployment, self.shard, self.summary = deployment, shard, summary
        self.read = StreamRead(deployment.keys.stream(shard))
        summary.streams.append(self.read)
        self.now = deployment.clock()
        self._pages = _pages(client, self.read.stream)
        self.events: list[tuple[tuple[int, int], Event]] = []
        self.at = 0

    async def fill(self) -> bool:
        """Read pages until one holds a valid event; False at the end of the stream."""
        while self.at >= len(self.events):
            page = await anext(self._pages, None)
            if page is None:
                return False
            self.events, self.at = self._valid(page), 0
        return True

    def _valid(self, page: list[tuple[str, Any]]) -> list[tuple[tuple[int, int], Event]]:
        """The valid events of ``page``, validated as a worker does (:func:`parse_entry` at
        the deployment's clock, and ``wrong_shard`` for a client of another shard)."""
        settings, read, summary = self.deployment.settings, self.read, self.summary
        read.entries += len(page)
        read.first_id = read.first_id or page[0][0]
        read.last_id = page[-1][0]
        summary.read += len(page)
        valid = []
        for entry_id, fields in page:
            parsed = parse_entry(
                entry_id, fields, settings.genders, self.now, settings.max_future_ms
            )
            if isinstance(parsed, Event) and self.deployment.shard_of(parsed.cid) != self.shard:
                parsed = Invalid(entry_id, Reason.WRONG_SHARD, "applied by no worker")
            if isinstance(parsed, Invalid):
                summary.count(parsed.reason.value, _field(fields, b"gender"))
            else:
                valid.append((parse_id(entry_id), parsed))
        return valid

    @property
    def key(self) -> tuple[tuple[int, int], int]:
        """The next event's id as numbers, and the shard (the heap's order)."""
        return self.events[self.at][0], self.shard

    def take(self) -> Event:
        event = self.events[self.at][1]
        self.at += 1
        return event


async def stream_chunks(
    client: AsyncClient, deployment: Deployment, *, summary: InputSummary
) -> AsyncIterator[list[Event]]:
    """The valid events retained in every shard's stream, read-only (no group, no write), in
    chunks, in arrival order: each shard's in stream order, the shards merged by entry id
    (a page of each shard in memory at a time). Entries are validated as a worker does;
    invalid ones are counted in ``summary``, and what was read of each stream is recorded
    in ``summary.streams``."""
    cursors = {shard: _Cursor(deployment, shard, client, summary) for shard in deployment.shards}
    heap = [cursor.key for cursor in cursors.values() if await cursor.fill()]
    heapq.heapify(heap)
    chunk: list[Event] = []
    while heap:
        cursor = cursors[heap[0][1]]
        chunk.append(cursor.take())
        if cursor.at < len(cursor.events) or await cursor.fill():
            heapq.heapreplace(heap, cursor.key)
        else:
            heapq.heappop(heap)
        if len(chunk) >= STREAM_PAGE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def read_streams(
    client: AsyncClient,
    deployment: Deployment,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    summary: InputSummary,
) -> list[Event]:
    """The valid events retained in every shard's stream, read-only (no group, no write): the
    events of :func:`stream_events`, in a list."""
    return [
        event
        async for event in stream_events(
            client, deployment, since_ms=since_ms, until_ms=until_ms, summary=summary
        )
    ]


async def stream_events(
    client: AsyncClient,
    deployment: Deployment,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    summary: InputSummary,
) -> AsyncIterator[Event]:
    """The valid events of :func:`stream_chunks` one by one (in arrival order, the shards
    merged by entry id), those whose time lies between ``since_ms`` (inclusive) and
    ``until_ms`` (exclusive)."""
    async for chunk in stream_chunks(client, deployment, summary=summary):
        for event in chunk:
            if (since_ms is None or event.ts >= since_ms) and (
                until_ms is None or event.ts < until_ms
            ):
                yield event


def _field(fields: Any, name: bytes) -> object:
    """The value of field ``name`` of an entry as read (pairs, or a mapping), or None."""
    if isinstance(fields, Mapping):
        return fields.get(name, fields.get(name.decode()))
    return next((value for key, value in fields if key == name), None)


async def _pages(client: AsyncClient, stream: str) -> AsyncIterator[list[tuple[str, Any]]]:
    """The entries of ``stream``, oldest first, in pages of :data:`STREAM_PAGE`."""
    start = "-"
    while True:
        page: Any = await client.xrange(stream, min=start, max="+", count=STREAM_PAGE)
        if page:
            yield [(text(entry_id), fields) for entry_id, fields in page]
        if len(page) < STREAM_PAGE:
            return
        start = f"({text(page[-1][0])}"


# -- labels --------------------------------------------------------------------------------------
def read_labels(path: str, settings: Settings) -> dict[str, str]:
    """Known genders of clients (``cid -> gender``) from a CSV or JSON Lines file of
    ``cid,gender`` (header row optional); genders normalised like events'. A bad line raises
    :class:`~genderd.errors.InputError` naming it."""
    labels: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        stream = _open(path)
        if path != STDIN:
            stack.enter_context(stream)
        for number, fields in _rows(stream, _LABEL_COLUMNS):
            cid, gender = _label(fields, settings.genders, f"{path}: line {number}")
            if labels.setdefault(cid, gender) != gender:
                raise InputError(
                    f"{path}: line {number}: client {cid!r} is labelled both "
                    f"{labels[cid]!r} and {gender!r}"
                )
    return labels


def _label(fields: Row, genders: Iterable[str], where: str) -> tuple[str, str]:
    if fields == TOO_LONG:
        raise InputError(f"{where}: longer than {MAX_LINE_BYTES:,} bytes")
    if isinstance(fields, str) or "gender" not in fields or "cid" not in fields:
        raise InputError(f'{where}: expected cid,gender (CSV) or {{"cid", "gender"}} (JSON)')
    cid = fields["cid"] if isinstance(fields["cid"], str) else ""
    problem = cid_problem(cid) if cid else "cid is missing or not a string"
    if problem:
        raise InputError(f"{where}: {problem}")
    raw_gender = fields["gender"]
    gender = raw_gender.strip().lower() if isinstance(raw_gender, str) else ""
    if gender not in genders:
        raise InputError(
            f"{where}: gender {raw_gender!r} is not one of {', '.join(sorted(genders))}"
        )
    return cid, gender
