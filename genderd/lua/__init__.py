"""Lua scripts: one ``.lua`` file per script, each with its KEYS/ARGV contract on top.

Redis scripts cannot import each other, so a script may name shared chunks (files starting
with ``_``) that are prepended to it here, at load time. Nothing is ever formatted into Lua
source: values travel in KEYS and ARGV only. A :class:`Script` is the loaded source with its
SHA1; the transports (:mod:`genderd.transport`) run it by SHA and load it when the server
does not have it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

LIB = "_lib.lua"


@cache
def source(*names: str, package: str = __name__) -> str:
    """The Lua source made of the named files of ``package``, in order."""
    root = resources.files(package)
    return "\n".join(root.joinpath(name).read_text(encoding="utf-8") for name in names)


@dataclass(frozen=True)
class Script:
    """A loaded Lua script: its name (the last file), source, SHA1 and reply parser.

    ``reply`` turns the raw reply into what callers get (e.g. a flat HGETALL list into a
    dict), so that every transport returns the same shape.
    """

    name: str
    source: str
    sha: str = field(init=False)
    reply: Callable[[Any], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    @classmethod
    def from_files(
        cls,
        *names: str,
        package: str = __name__,
        reply: Callable[[Any], Any] | None = None,
    ) -> Script:
        """The script made of the named files of ``package`` (shared chunks first)."""
        return cls(names[-1], source(*names, package=package), reply)

    def __hash__(self) -> int:
        return hash(self.sha)


def hash_reply(reply: Any) -> dict[bytes, bytes]:
    """A flat ``[field, value, ...]`` reply (what HGETALL gives inside a script) as a dict."""
    if isinstance(reply, dict):
        return reply
    items = reply or ()
    return dict(zip(items[::2], items[1::2]))  # noqa: B905 - Redis sends whole pairs
