"""Plug-in models for `genderd evaluate`'s tests (named in GENDERD_PLUGINS)."""

from __future__ import annotations

from collections.abc import Sequence

from genderd.events import Event
from genderd.models.base import Model


class LuaOnly(Model):
    """A Lua-backed model (a plain ``Model`` subclass with its own apply script): the
    evaluation has no Python twin of its Lua, so it cannot be evaluated."""

    name = "luaonly"
    description = "a Lua-backed plug-in the evaluation cannot replay"
    apply_files = ("last.lua",)

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid)]
