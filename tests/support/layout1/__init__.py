"""Data layout 1, as the release before layout 2 wrote it: its apply scripts (copied verbatim
into ``tests/support/layout1/``) and their per-entry KEYS/ARGV contracts, to build state that an
upgrade must keep (see :mod:`genderd.layout`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genderd import events, streams
from genderd.clock import MS_PER_DAY
from genderd.keys import Keys
from genderd.lua import Script
from genderd.settings import Settings

HERE = Path(__file__).parent  # layout 1 scripts, beside this module
MODELS = ("last", "top", "top7d")


def script(name: str) -> Script:
    lib = (HERE / "_lib.lua").read_text(encoding="utf-8")
    return Script(name, lib + "\n" + (HERE / f"{name}.lua").read_text(encoding="utf-8"))


def _entry_keys(keys: Keys, model: str, shard: int, cid: str, ts: int, now: int, window: int):  # type: ignore[no-untyped-def]
    if model == "last":
        return [keys.result(shard, cid)]
    if model == "top":
        return [keys.result(shard, cid), keys.state(shard, "top", cid)]
    today = now // MS_PER_DAY
    return [
        keys.result(shard, cid),
        keys.day_bucket(shard, model, ts // MS_PER_DAY, cid),
        *keys.day_buckets(shard, model, range(today - window + 1, today + 2), cid),
    ]


async def new_entries(
    client: Any, keys: Keys, shard: int, model: str, consumer: str
) -> list[tuple[str, dict[str, str]]]:
    """The shard's entries the model's group has not delivered yet, read for ``consumer`` (the
    group is created first when missing): (id, fields) each."""
    stream = keys.stream(shard)
    await streams.ensure_group(client, stream, model)
    entries: Sequence[Any] = await streams.read_new(client, stream, model, consumer, 10_000, None)
    read = []
    for entry_id, fields in entries:
        pairs = fields.items() if isinstance(fields, dict) else fields
        read.append((events.text(entry_id), {events.text(k): events.text(v) for k, v in pairs}))
    return read


async def apply_all(client: Any, settings: Settings, now: int, consumer: str = "old") -> int:
    """Apply every new entry of every shard with layout 1's scripts (events must carry a
    lowercase configured gender and ``ts``); returns the entries applied per model, summed."""
    keys = Keys(settings.prefix)
    applied = 0
    for model in MODELS:
        apply = script(model)
        for shard in range(settings.shards):
            entries = await new_entries(client, keys, shard, model, consumer)
            if not entries:
                continue
            all_keys = [keys.stream(shard), keys.stats(shard)]
            args: list[Any] = [model, now] + ([settings.window_days] if model == "top7d" else [])
            for entry_id, got in entries:
                ts = int(got["ts"])
                all_keys += _entry_keys(
                    keys, model, shard, got["cid"], ts, now, settings.window_days
                )
                args += [entry_id, got["gender"], ts]
            reply = await client.eval(apply.source, len(all_keys), *all_keys, *args)
            applied += int(reply[0])
    return applied
