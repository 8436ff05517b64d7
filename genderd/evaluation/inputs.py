"""What an evaluation reads: events from a file, stdin or the deployment's streams, and labels.

Every event is validated by the rules the workers apply (:mod:`genderd.events`), so that an
evaluation scores exactly what the models would have been given. Invalid lines and entries
are counted per reason in an :class:`InputSummary` and skipped: a history with some bad lines
can still be evaluated, and the report says how many there were.

Files are JSON Lines (``{"cid": .., "gender": .., "ts": ..}``) or CSV (``cid,gender[,ts]``,
header row optional), told apart by their first non-blank line, read by
:class:`genderd.lines.LineReader`: in bounded memory (a line longer than
:data:`~genderd.lines.MAX_LINE_BYTES` is malformed, reason ``line_too_long``), a UTF-8 byte
order mark skipped in a file and on stdin alike. Reading the streams is read-only: ``XRANGE``
in pages, no consumer group, nothing written.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.events import (
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
from genderd.transport import AsyncClient

MALFORMED = "malformed"  # a line that is not a JSON object, or a CSV row of the wrong width
STREAM_PAGE = 10_000  # entries per XRANGE call
STDIN = "-"
CSV_COLUMNS = ("cid", "gender", "ts")  # a file's columns, the last optional
_LABEL_COLUMNS = ("cid", "gender")


@dataclass
class InputSummary:
    """What reading found: lines (or entries) read, and the invalid ones per reason code."""

    read: int = 0  # lines or entries read
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # Reason value or "malformed" -> count

    def count(self, reason: str) -> None:
        """Count one invalid line or entry."""
        self.invalid += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


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
    Event ids are ``f"{ts}-{line}"``, so that line order breaks ties of ``ts``. Invalid lines
    are counted in ``summary`` and skipped. A file that cannot be opened raises
    :class:`~genderd.errors.InputError` now, not on the first iteration.
    """
    stream = _open(path)
    return _file_events(stream, path != STDIN, settings, now_ms, summary)


def _file_events(
    stream: BinaryIO, owned: bool, settings: Settings, now_ms: int, summary: InputSummary
) -> Iterator[Event]:
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
                summary.count(error.reason.value)
                continue
            ts = now_ms if ts is None else ts
            yield Event(f"{ts}-{number}", cid, gender, ts)


# -- streams -------------------------------------------------------------------------------------
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
    """The valid events retained in every shard's stream, read-only (no group, no write), one
    shard after the other, each in arrival (entry id) order, read a page at a time.

    Each entry is validated as a worker does (:func:`genderd.events.parse_entry` at the
    deployment's clock, and ``wrong_shard`` for a client of another shard); invalid ones are
    counted in ``summary``. ``since_ms`` (inclusive) and ``until_ms`` (exclusive) keep the
    events whose time lies between them.
    """
    settings = deployment.settings
    now = deployment.clock()
    for shard in deployment.shards:
        async for entry_id, fields in _entries(client, deployment.keys.stream(shard)):
            summary.read += 1
            parsed = parse_entry(entry_id, fields, settings.genders, now, settings.max_future_ms)
            if isinstance(parsed, Event) and deployment.shard_of(parsed.cid) != shard:
                parsed = Invalid(entry_id, Reason.WRONG_SHARD, "applied by no worker")
            if isinstance(parsed, Invalid):
                summary.count(parsed.reason.value)
            elif (since_ms is None or parsed.ts >= since_ms) and (
                until_ms is None or parsed.ts < until_ms
            ):
                yield parsed


async def _entries(client: AsyncClient, stream: str) -> AsyncIterator[tuple[str, Any]]:
    """Every entry of ``stream``, oldest first, read in pages of :data:`STREAM_PAGE`."""
    start = "-"
    while True:
        page: Any = await client.xrange(stream, min=start, max="+", count=STREAM_PAGE)
        for entry_id, fields in page:
            yield text(entry_id), fields
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
