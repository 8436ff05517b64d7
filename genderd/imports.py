"""`genderd produce --file`: importing JSON Lines, each line written once however often the
import is run (SPEC §12).

Each non-blank line is one event; its *position* is its number among the input's non-blank
lines, and its *id* a digest of its position and its event as the workers read it (cid,
gender, ``ts`` as given: absent stays absent). The positions are cut into fixed blocks of
:data:`BLOCK_LINES`, and each shard keeps one *record* per block, the set of the ids of that
block's lines whose events it holds (``<prefix>:{sN}:lines:<digest>``, named by the id of the
block's first line, expiring ``GENDERD_IDEMPOTENCY_TTL_S`` after the block's latest write).
Each shard's part of a batch is one call of ``ingest_lines.lua``, which writes the events
whose ids its record lacks and adds them, in one atomic step. So, whatever batches a run
sends (a block at a time from a file, what a slow pipe gave within a second, the lines of
0.1 s with ``--rate``, what was read when a signal came):

- a re-run writes none of the lines an earlier run wrote, and all the others: the rest of an
  interrupted import, the new lines of a grown file, a line fixed after a bad one;
- an edit that leaves the events as they were (spaces in or around a line, blank lines, the
  order of a line's fields, the case of a gender, fields the workers ignore) writes nothing;
- a line whose event changed is written again (the old version stays written), and so is
  every line after a line inserted or deleted before them (their positions moved), as is
  every line of a block whose first line changed (its record is another one).

A line is read with :class:`genderd.lines.LineReader` (at most ``MAX_LINE_BYTES``). While
lines are held, none waits more than :data:`FLUSH_S` (with ``--rate``: ``PACED_FLUSH_S``)
before it is sent; a line that is not UTF-8, not a JSON object or not a valid event stops the
import after the lines before it are written, naming it.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

import orjson

from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.events import EventError
from genderd.ingest import Batch, Event, write_sync
from genderd.lines import MAX_LINE_BYTES, Line, LineReader
from genderd.lua import Script
from genderd.producer import PACED_FLUSH_S, RateLimiter, checked
from genderd.transport import SyncClient
from genderd.transport.interface import ScriptCall

INGEST_LINES = Script.from_files("ingest_lines.lua")

BLOCK_LINES = 500  # positions per block: each shard keeps one record per block it holds
FLUSH_S = 1.0  # the longest a line read waits before its event is sent (a slow pipe)
STOP_POLL_S = 0.1  # how often a wait for input looks whether a signal asked to stop
LINE_ID_HEX = 16  # 64 bits of SHA-256: ids are compared within one block's record only


class BadInputError(InputError, ValueError):
    """An input line that stops the import (the message says where)."""


def line_id(position: int, event: Event) -> str:
    """The id of the line at ``position`` (1-based, among non-blank lines) holding ``event``:
    its position and the event as given (see the module), digested."""
    cid, gender, ts, _ = event
    text = f"{position} {cid} {gender} {'' if ts is None else ts}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:LINE_ID_HEX]


def plan_lines(
    deployment: Deployment, block: str, lines: Sequence[tuple[str, Event]], ttl_s: int
) -> Batch:
    """The calls that write ``lines`` ((id, event) pairs of one block, whose first line has
    the id ``block``) once: one ``ingest_lines.lua`` call per shard, in one round trip."""
    parts: dict[int, list[str | int]] = {}
    for lid, (cid, gender, _, ts) in lines:
        parts.setdefault(deployment.shard_of(cid), []).extend((lid, cid, gender, ts))
    keys = deployment.keys
    calls = [
        ScriptCall(INGEST_LINES, [keys.stream(s), keys.lines_record(s, block)], [ttl_s * 1000, *a])
        for s, a in parts.items()
    ]
    return Batch(None, calls, len(lines), None)


class Stop:
    """SIGINT and SIGTERM, noted instead of ending the process, within a ``with`` block (in
    the main thread; elsewhere signals are left as they are). An import looks at
    :attr:`requested` between lines and while it waits, and ends after sending what it holds.
    A second signal raises ``KeyboardInterrupt`` (a stuck send can still be cut short)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # a second one: stop now, as without the handler
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Import:
    """One run of an import over a blocking client: :meth:`run` reads every line of a
    :class:`LineReader` (until the end or a :class:`Stop`) and writes their events once.

    ``line`` is the number of the last line read, ``sent`` the events sent and ``written``
    those written now (an earlier run had written the others).
    """

    def __init__(
        self,
        client: SyncClient,
        deployment: Deployment,
        *,
        rate: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.ttl_s = deployment.settings.idempotency_ttl_s
        self.rate = rate
        self.flush_s = PACED_FLUSH_S if rate else FLUSH_S
        self.progress = progress
        self.line = 0
        self.position = 0  # of the last non-blank line
        self.sent = 0
        self.written = 0
        self._held: list[tuple[str, Event]] = []  # read, not sent: all of one block
        self._block = ""  # the id of the first line of the held lines' block
        self._held_since = 0.0  # monotonic time the first held line was read

    def __repr__(self) -> str:
        return (
            f"<Import line={self.line} sent={self.sent} written={self.written} "
            f"held={len(self._held)}>"
        )

    def run(self, reader: LineReader, stop: Stop) -> None:
        """Import every line of ``reader`` until its end or ``stop`` (then the lines it had
        read already, reading no more: a pipe gave them up); then send what is held. A bad
        line raises :class:`BadInputError` after the lines before it are written."""
        limiter = RateLimiter(self.rate)
        try:
            while True:
                line = reader.held()  # what was read already, before reading more
                if line is None and not stop.requested:
                    line = reader.poll(self._wait())
                if line is not None:
                    self._take(line, limiter, stop)
                elif stop.requested or reader.ended:
                    break
                if self._held and time.monotonic() - self._held_since >= self.flush_s:
                    self.flush()
        except BadInputError:
            self.flush()
            raise
        self.flush()

    def _take(self, line: Line, limiter: RateLimiter, stop: Stop) -> None:
        self.line = line.number
        fields = _parsed(line)
        if fields is not None:
            limiter.wait(lambda: stop.requested)
            self._hold(fields)

    def _wait(self) -> float:
        """How long to wait for the next line: until the held lines are due, in slices that
        let a signal be noticed."""
        if not self._held:
            return STOP_POLL_S
        due = self._held_since + self.flush_s - time.monotonic()
        return min(STOP_POLL_S, max(0.0, due))

    def _hold(self, fields: dict[str, Any]) -> None:
        self.position += 1
        try:
            event = checked(self.deployment, fields)
        except EventError as error:
            raise BadInputError(f"line {self.line}: {error}") from None
        lid = line_id(self.position, event)
        if (self.position - 1) % BLOCK_LINES == 0:  # a new block: what is held goes first
            self.flush()
            self._block = lid
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append((lid, event))

    def flush(self) -> int:
        """Send the held lines' events (none written twice); return how many were written."""
        if not self._held:
            return 0
        batch = plan_lines(self.deployment, self._block, self._held, self.ttl_s)
        written = write_sync(self.client, batch)
        self.sent += batch.count
        self.written += written
        if self.progress is not None:
            self.progress(batch.count)
        self._held = []
        return written


def _parsed(line: Line) -> dict[str, Any] | None:
    """The JSON object of a line (None: a blank line), or :class:`BadInputError`."""
    if line.data is None:
        raise BadInputError(f"line {line.number}: longer than {MAX_LINE_BYTES:,} bytes")
    try:
        text = line.data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(
            f"line {line.number}: not UTF-8 (byte {line.data[error.start]:#04x} at "
            f"position {error.start + 1})"
        ) from None
    if not text.strip():
        return None
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise BadInputError(f"line {line.number}: not JSON: {error}") from None
    if not isinstance(event, dict):
        raise BadInputError(f"line {line.number}: expected a JSON object")
    return event
