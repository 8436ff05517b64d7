"""Model ``top``: the client's most visited gender of all time."""

from __future__ import annotations

from genderd.events import Event
from genderd.models.base import LIB, Model


class TopModel(Model):
    """The gender with the most events; ties go to the newest event, then the smallest name."""

    name = "top"
    aliases = ("model2",)
    description = "gender with the most events of all time (ties: newest event, then name)"
    apply_files = (LIB, "top.lua")

    def event_keys(self, shard: int, event: Event, now_ms: int) -> list[str]:
        return [
            self.keys.result(shard, event.cid),
            self.keys.state(shard, self.name, event.cid),
        ]
