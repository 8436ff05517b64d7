"""A file's digest (``--json``'s provenance), and standard input copied to a file to get one.

An evaluation's report says which bytes it read: the SHA-256 of its input file, computed in a
pass of its own (about a gigabyte a second), or of standard input, copied to a temporary file
as it is hashed (a pipe cannot be read twice; a file can be checked for time order, then read).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from genderd.errors import InputError

HASH_CHUNK = 1 << 20  # bytes read at a time to hash a file or spool stdin


@dataclass(frozen=True)
class Digest:
    """A file's SHA-256 (hex), size in bytes and newline count (about its lines)."""

    sha256: str
    size: int
    lines: int


def _copy(source: IO[bytes], target: IO[bytes] | None) -> Digest:
    hasher = hashlib.sha256()
    size = lines = 0
    while chunk := source.read(HASH_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
        lines += chunk.count(b"\n")
        if target is not None:
            target.write(chunk)
    return Digest(hasher.hexdigest(), size, lines)


def file_digest(path: str) -> Digest:
    """The :class:`Digest` of the file at ``path``, or an InputError in one line."""
    try:
        with open(path, "rb") as source:
            return _copy(source, None)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


@contextlib.contextmanager
def spooled_stdin() -> Iterator[tuple[str, Digest]]:
    """Standard input copied to a temporary file (removed on exit) and its :class:`Digest`:
    a file can be hashed and read twice, a pipe cannot."""
    with tempfile.NamedTemporaryFile(prefix="genderd-stdin-", suffix=".events") as spool:
        digest = _copy(sys.stdin.buffer, spool)
        spool.flush()
        yield spool.name, digest


__all__ = ["HASH_CHUNK", "Digest", "file_digest", "spooled_stdin"]
