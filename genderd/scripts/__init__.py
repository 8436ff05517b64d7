"""Lua scripts: one ``.lua`` file per script, each with its KEYS/ARGV contract on top.

Redis scripts cannot import each other, so a script may name shared chunks (files starting
with ``_``) that are prepended to it here, at load time. Nothing is ever formatted into Lua
source: values travel in KEYS and ARGV only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

LIB = "_lib.lua"


@cache
def source(*names: str, package: str = __name__) -> str:
    """The Lua source made of the named files of ``package``, in order."""
    root = resources.files(package)
    return "\n".join(root.joinpath(name).read_text(encoding="utf-8") for name in names)
