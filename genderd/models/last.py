"""Model ``last``: the gender of the client's most recent event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from genderd.events import Event
from genderd.keys import result_field
from genderd.models.base import Model

if TYPE_CHECKING:
    from genderd.evaluation.predictors import LastPredictor


class LastModel(Model):
    """The gender of the event with the greatest (``ts``, entry id)."""

    grades = True
    name = "last"
    aliases = ("model1",)
    description = "gender of the client's latest event (greatest ts, then entry id)"
    apply_files = ("last.lua",)

    def client_keys(self, shard: int, cid: str, events: Sequence[Event], now_ms: int) -> list[str]:
        return [self.keys.result(shard, cid)]

    def result_fields(self) -> Sequence[str]:
        return [*super().result_fields(), result_field(self.name, "id")]

    def predictor(self) -> LastPredictor:
        from genderd.evaluation.predictors import LastPredictor

        return LastPredictor()
