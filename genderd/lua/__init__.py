"""Lua scripts: one ``.lua`` file per script, each with its KEYS/ARGV contract on top.

Redis scripts cannot import each other, so the loader glues a script together here, at load
time, from its file and the shared chunks it names. A chunk is a file whose name starts with
``_`` (``_frame.lua``: the batch frame; ``_counters.lua``, ``_window.lua``, ...). Each file says
what it uses in its header, the comment lines on top, in a line such as::

    -- uses: _basics.lua _expiry.lua _frame.lua

Each used file comes before the file that uses it, once per script, in the order they are
named, and its own ``uses`` first (a chunk names the chunks it uses the same way). A chunk
(``_`` name) always comes from genderd; any other name from the package of the file that names
it, so a plug-in model's files come from its own package. A file may put a line starting with
``-- uses here`` in its code: the files it uses go there instead of before it (a script's fast
path that returns before the chunks' definitions run; see ``top7d_read.lua``).

Nothing is ever formatted into Lua source: values travel in KEYS and ARGV only. A
:class:`Script` is the glued source with its SHA1, and knows which file each of its lines comes
from: the server names a failing line ``user_script:<line>`` of the glued source, which
:meth:`Script.locate` turns into ``<file>.lua:<line>``. The transports
(:mod:`genderd.transport`) run a script by SHA, load it when the server does not have it, and
raise its errors located.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, TypeVar

#: the package of the shared chunks
SHARED = __name__
#: every shared chunk, for models that name their files the older way, ``(LIB, "mine.lua")``
LIB = "_lib.lua"

USES = "-- uses:"
USES_HERE = "-- uses here"

#: how the loader reads a file: (package, file name) -> its text
Reader = Callable[[str, str], str]

_USER_SCRIPT = re.compile(r"user_script:(\d+)")
_E = TypeVar("_E", bound=BaseException)


def read_resource(package: str, name: str) -> str:
    """The text of the file ``name`` of the Python package ``package``."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Part:
    """``count`` lines of the file ``file``, from its line ``first``, are the script's lines
    from ``start`` (1-based)."""

    file: str
    start: int
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class _File:
    name: str
    lines: list[str]
    uses: list[str]
    here: int | None  # index of the "uses here" line, if any


def _parse(name: str, text: str) -> _File:
    lines = text.removesuffix("\n").split("\n")
    uses: list[str] = []
    here: int | None = None
    in_header = True
    for i, line in enumerate(lines):
        in_header = in_header and (line.startswith("--") or not line.strip())
        if line.startswith(USES):
            if not in_header:
                raise ValueError(f"{name}:{i + 1}: a '{USES}' line belongs in the header on top")
            uses += line[len(USES) :].split()
        elif line.startswith(USES_HERE):
            if here is not None:
                raise ValueError(f"{name}:{i + 1}: a second '{USES_HERE}' line")
            here = i
    return _File(name, lines, uses, here)


def _home(name: str, package: str) -> str:
    """The package a file named by a file of ``package`` comes from."""
    return SHARED if name.startswith("_") else package


def assemble(
    *names: str, package: str = SHARED, read: Reader = read_resource
) -> tuple[str, tuple[Part, ...]]:
    """The source of the script made of the files ``names`` (of ``package``; chunks of
    genderd's) and of every file they use, with where each line comes from.

    Raises:
        FileNotFoundError: a file, or a file that one uses, does not exist.
        ValueError: files use each other in a cycle, or a ``uses`` line is misplaced.
    """
    lines: list[str] = []
    parts: list[Part] = []
    done: set[tuple[str, str]] = set()
    adding: list[tuple[str, str]] = []  # the files being added, outermost first

    def emit(file: str, chunk: list[str], first: int) -> None:
        if chunk:
            parts.append(Part(file, len(lines) + 1, first, len(chunk)))
            lines.extend(chunk)

    def add(name: str, home: str, user: str) -> None:
        key = (home, name)
        if key in done:
            return
        if key in adding:
            cycle = " -> ".join(n for _, n in adding[adding.index(key) :])
            raise ValueError(f"Lua files use each other in a cycle: {cycle} -> {name}")
        try:
            text = read(home, name)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{user} uses {name}, which is not in {home}") from error
        file = _parse(name, text)
        adding.append(key)
        split = 0 if file.here is None else file.here + 1
        emit(name, file.lines[:split], 1)
        for used in file.uses:
            add(used, _home(used, home), name)
        emit(name, file.lines[split:], split + 1)
        adding.pop()
        done.add(key)

    for name in names:
        add(name, _home(name, package), "the script")
    return "\n".join(lines) + "\n", tuple(parts)


@cache
def _assembled(names: tuple[str, ...], package: str) -> tuple[str, tuple[Part, ...]]:
    return assemble(*names, package=package)


def source(*names: str, package: str = SHARED) -> str:
    """The Lua source of the script made of the files ``names`` (see :func:`assemble`)."""
    return _assembled(names, package)[0]


@dataclass(frozen=True)
class Script:
    """A loaded Lua script: its name (the last file), source, SHA1 and reply parser, and
    where its lines come from (``parts``; none: all from the file ``name``).

    ``reply`` turns the raw reply into what callers get (e.g. a flat HGETALL list into a
    dict), so that every transport returns the same shape.
    """

    name: str
    source: str
    sha: str = field(init=False)
    reply: Callable[[Any], Any] | None = field(default=None, compare=False)
    parts: tuple[Part, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    @classmethod
    def from_files(
        cls,
        *names: str,
        package: str = SHARED,
        reply: Callable[[Any], Any] | None = None,
        read: Reader | None = None,
    ) -> Script:
        """The script made of the files ``names`` of ``package`` and of the files they use
        (see the module docstring); usually one name, the script's file. ``read``: how to
        read a file (default: from the installed packages)."""
        if read is None:
            text, parts = _assembled(names, package)
        else:
            text, parts = assemble(*names, package=package, read=read)
        return cls(names[-1], text, reply, parts)

    def where(self, line: int) -> str:
        """``<file>:<line>`` of the script's line ``line``."""
        if not self.parts:
            return f"{self.name}:{line}"
        for part in self.parts:
            if part.start <= line < part.start + part.count:
                return f"{part.file}:{part.first + line - part.start}"
        return f"user_script:{line}"  # not a line of the script: as the server said

    def locate(self, error: _E) -> _E:
        """``error`` (raised by running this script) with each ``user_script:<line>`` of its
        message written as the file and line it comes from (:meth:`where`): a copy of the
        same class, or ``error`` itself when there is nothing to rewrite."""
        if len(error.args) != 1 or not isinstance(error.args[0], str):
            return error
        message = error.args[0]
        located = _USER_SCRIPT.sub(lambda m: self.where(int(m[1])), message)
        if located == message:
            return error
        twin = copy.copy(error)
        twin.args = (located,)
        return twin

    def __hash__(self) -> int:
        return hash(self.sha)


def hash_reply(reply: Any) -> dict[bytes, bytes]:
    """A flat ``[field, value, ...]`` reply (what HGETALL gives inside a script) as a dict."""
    if isinstance(reply, dict):
        return reply
    items = reply or ()
    return dict(zip(items[::2], items[1::2]))  # noqa: B905 - Redis sends whole pairs
