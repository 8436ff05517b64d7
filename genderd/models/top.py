"""Model ``top``: the client's most visited gender of all time."""

from __future__ import annotations

from collections.abc import Sequence

from genderd.keys import result_field
from genderd.models.base import LIB, Model


class TopModel(Model):
    """The gender with the most events; ties go to the newest event, then the smallest name.

    The counters are the served scores (``top:s``) plus the newest event per gender
    (``top:t``), in the client's result hash. Data layout 1 kept them in a hash of their own
    (:meth:`Keys.state`), which the apply script moves into the result hash when it first
    touches such a client.
    """

    name = "top"
    aliases = ("model2",)
    description = "gender with the most events of all time (ties: newest event, then name)"
    apply_files = (LIB, "top.lua")

    def client_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        # the second key: layout 1's counters, moved into the result hash when touched
        return [self.keys.result(shard, cid), self.keys.state(shard, self.name, cid)]

    def result_fields(self) -> Sequence[str]:
        return [*super().result_fields(), result_field(self.name, "t")]
