"""Reading lines of input (a file, a pipe, stdin) in bounded memory, for `produce` and `evaluate`.

A line is at most :data:`MAX_LINE_BYTES` long: a longer one is reported as too long as soon as
that many bytes of it are read, and the rest of it is skipped without being kept, so that an
input without line breaks (``/dev/zero``) costs a bounded amount of memory. Lines end with
``\\n`` (a ``\\r`` before it stays part of the line; both readers strip it); a UTF-8 byte
order mark at the start of the input is not part of the first line, whether the input is a
file or a pipe.

:meth:`LineReader.poll` waits for the next line at most ``timeout`` seconds where the input
can be waited on (a pipe, a terminal, a socket; a file is always ready): so that a reader of a
slow pipe can do something else (flush what it holds, notice a signal) meanwhile.
"""

from __future__ import annotations

import collections
import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: the longest line either reader accepts; `produce` stops at a longer one, `evaluate` counts
#: it as malformed (``line_too_long``). An event is well under 1 KiB.
MAX_LINE_BYTES = 64 * 1024
READ_BYTES = 64 * 1024  # read at a time: at most this much beyond a line's limit is held
BOM = b"\xef\xbb\xbf"
TOO_LONG = "line_too_long"  # the reason code `evaluate` counts such a line under


@dataclass(frozen=True, slots=True)
class Line:
    """One line: its number (1-based, blank lines counted) and its bytes without the line
    break; ``data`` None when the line is longer than :data:`MAX_LINE_BYTES`."""

    number: int
    data: bytes | None


class LineReader:
    """The lines of a binary input, read in chunks of :data:`READ_BYTES` (see the module).

    ``source`` must not have been read from: where it has a file descriptor, the reader reads
    the descriptor directly (so that waiting with a timeout is possible).
    """

    def __init__(self, source: BinaryIO, limit: int = MAX_LINE_BYTES) -> None:
        self.source = source
        self.limit = limit
        self.number = 0  # of the last line returned
        self._fd = _descriptor(source)
        self._lines: collections.deque[bytes | None] = collections.deque()
        self._partial = bytearray()  # the start of the next line (at most ``limit`` bytes)
        self._skipping = False  # within a line already reported too long
        self._started = False  # the BOM check is done
        self._ended = False

    @property
    def ended(self) -> bool:
        """Every line has been returned."""
        return self._ended and not self._lines

    def __iter__(self) -> Iterator[Line]:
        while True:
            line = self.poll(None)
            if line is None:
                return
            yield line

    def poll(self, timeout: float | None) -> Line | None:
        """The next line; None at the end of the input or, with a ``timeout`` (seconds), when
        none was complete within it (tell them apart with :attr:`ended`)."""
        while not self._lines and not self._ended:
            if not self._ready(timeout):
                return None
            self._take(self._read())
        return self.held()

    def held(self) -> Line | None:
        """The next line among those already read (None when there is none), reading nothing
        more: what a reader that stops early still owes a pipe's writer, whose lines it took."""
        if not self._lines:
            return None
        self.number += 1
        return Line(self.number, self._lines.popleft())

    def _ready(self, timeout: float | None) -> bool:
        if self._fd is None or timeout is None:
            return True
        readable, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        return bool(readable)

    def _read(self) -> bytes:
        if self._fd is not None:
            return os.read(self._fd, READ_BYTES)
        read1 = getattr(self.source, "read1", None)
        return bytes(read1(READ_BYTES) if read1 is not None else self.source.read(READ_BYTES))

    def _take(self, chunk: bytes) -> None:
        """Split ``chunk`` (empty: the end of the input) into the lines it completes."""
        if not chunk:
            self._ended = True
            if self._partial and not self._skipping:
                self._lines.append(bytes(self._partial))
            self._partial.clear()
            return
        if not self._started:
            self._partial += chunk
            if len(self._partial) < len(BOM) and BOM.startswith(bytes(self._partial)):
                return  # too short to tell yet
            self._started = True
            chunk = bytes(self._partial).removeprefix(BOM)
            self._partial.clear()
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            if self._skipping:
                self._skipping = False  # the end of the over-long line
            else:
                self._partial += piece
                fits = len(self._partial) <= self.limit
                self._lines.append(bytes(self._partial) if fits else None)
            self._partial.clear()
        if not self._skipping:
            self._partial += rest
            if len(self._partial) > self.limit:  # reported now; its rest is skipped as read
                self._lines.append(None)
                self._partial.clear()
                self._skipping = True


def _descriptor(source: BinaryIO) -> int | None:
    """The file descriptor to read ``source`` from directly, or None (an in-memory stream, or
    Windows, where ``select`` takes sockets only)."""
    if sys.platform == "win32":
        return None
    try:
        return source.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
