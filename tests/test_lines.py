"""Reading lines in bounded memory (genderd.lines): the cap, the byte order mark, waiting on a
pipe with a timeout."""

from __future__ import annotations

import io
import os
import tracemalloc

import pytest

from genderd.lines import BOM, MAX_LINE_BYTES, READ_BYTES, Line, LineReader


class Source(io.RawIOBase):
    """An input of ``parts``, given at most ``step`` bytes a read; ``given`` counts the bytes
    given so far."""

    def __init__(self, *parts: bytes, step: int = READ_BYTES) -> None:
        self.parts = [memoryview(part) for part in parts]  # sliced without copies
        self.step = step
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self.parts and not len(self.parts[0]):
            self.parts.pop(0)
        if not self.parts:
            return 0
        part = self.parts[0]
        n = min(len(buffer), self.step, len(part))
        buffer[:n] = part[:n]
        self.parts[0] = part[n:]
        self.given += n
        return n


def read_all(*parts: bytes, step: int = READ_BYTES) -> list[Line]:
    return list(LineReader(io.BufferedReader(Source(*parts, step=step))))


def test_lines_are_numbered_blank_ones_too_and_the_last_needs_no_line_break() -> None:
    assert read_all(b"a\n\nb\r\nc") == [
        Line(1, b"a"),
        Line(2, b""),
        Line(3, b"b\r"),  # the readers strip the \r with the line's spaces
        Line(4, b"c"),
    ]
    assert read_all(b"") == [] and read_all(b"\n") == [Line(1, b"")]


@pytest.mark.parametrize("step", [1, 2, 5, READ_BYTES])
def test_a_byte_order_mark_is_dropped_at_the_start_only(step: int) -> None:
    assert read_all(BOM + b"a\n" + BOM + b"b\n", step=step) == [
        Line(1, b"a"),
        Line(2, BOM + b"b"),
    ]
    assert read_all(BOM[:2], step=step) == [Line(1, BOM[:2])]  # not a BOM: kept


def test_a_line_over_the_cap_is_reported_and_skipped_and_the_next_one_read() -> None:
    exact = b"x" * MAX_LINE_BYTES
    over = b"y" * (MAX_LINE_BYTES + 1)
    assert read_all(exact + b"\n" + over + b"\nz\n" + over) == [
        Line(1, exact),
        Line(2, None),
        Line(3, b"z"),
        Line(4, None),
    ]


def test_an_endless_line_is_reported_after_a_bounded_read() -> None:
    """40 MiB of one line, then a good one: reported at once, skipped as it is read, never
    held (the peak of allocations is a few reads, not the line)."""
    endless = 40 << 20
    reader = LineReader(Source(b"0" * endless, b"\nnext\n"))  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        first = reader.poll(None)
        assert first == Line(1, None)
        assert reader.source.given <= MAX_LINE_BYTES + READ_BYTES  # type: ignore[attr-defined]
        assert reader.poll(None) == Line(2, b"next")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * READ_BYTES + MAX_LINE_BYTES, peak
    assert reader.poll(None) is None and reader.ended


def test_a_pipe_is_waited_on_with_a_timeout() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        reader = LineReader(pipe)
        try:
            assert reader.poll(0.01) is None and not reader.ended  # nothing yet
            os.write(write_end, b"a\nb")
            assert reader.poll(0.01) == Line(1, b"a")
            assert reader.poll(0.01) is None and not reader.ended  # b is not complete
            assert reader.held() is None  # nothing complete among the bytes read
            os.write(write_end, b"\nc\n")
            assert reader.poll(0.01) == Line(2, b"b")
            assert reader.held() == Line(3, b"c")  # read already: no read needed
        finally:
            os.close(write_end)
        assert reader.poll(1.0) is None and reader.ended
