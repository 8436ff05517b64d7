"""Plug-ins of the catalog tests (``GENDERD_PLUGINS=tests.support.catalogplugins:...``)."""

from __future__ import annotations

from genderd.models import TopWindow
from genderd.models.last import LastModel


class Top30(TopWindow):
    """A 30-day window: five day buckets for five days of events."""

    name = "top30d"
    window_days = 30


class Stamped(LastModel):
    """A Lua-backed model (``last``'s script) that also keeps a key of its own per client
    (a made-up ``x`` key): only its code knows where its data lives."""

    name = "stamped"
    aliases = ()
    description = "last, with a key of its own"

    def client_data_keys(self, shard: int, cid: str, now_ms: int) -> list[str]:
        return [*super().client_data_keys(shard, cid, now_ms), f"{self.keys.tag(shard)}:x:{cid}"]
