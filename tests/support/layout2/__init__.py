"""Data layout 2, as the release before layout 3 wrote it: its apply scripts (copied verbatim
beside this module from revision 11bbc4a) called with that release's batch frame contract, to
build state that an upgrade must keep (see :mod:`genderd.layout`). The deployment is taken
to be created with layout 2 (no layout-1 key for ``top``) and nobody to be erased."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genderd.clock import client_expiry_ms, day_of
from genderd.keys import Keys
from genderd.lua import Script
from genderd.settings import Settings

from .. import layout1

HERE = Path(__file__).parent  # layout 2 scripts, beside this module
MODELS = ("last", "top", "top7d")


def script(name: str) -> Script:
    lib = (HERE / "_lib.lua").read_text(encoding="utf-8")
    return Script(name, lib + "\n" + (HERE / f"{name}.lua").read_text(encoding="utf-8"))


def _params(model: str, settings: Settings) -> list[Any]:
    genders = sorted(settings.genders)
    if model == "top":
        return ["0", len(genders), *genders]  # "0": no layout-1 counters
    if model == "top7d":
        return [settings.window_days, len(genders), *genders]
    return []


async def apply_all(client: Any, settings: Settings, now: int, consumer: str = "old") -> int:
    """Apply every new entry of every shard with layout 2's scripts (events must carry a
    lowercase configured gender and ``ts``); returns the entries applied, summed over the
    models."""
    keys = Keys(settings.prefix)
    applied = 0
    for model in MODELS:
        apply = script(model)
        for shard in range(settings.shards):
            entries = await layout1.new_entries(client, keys, shard, model, consumer)
            if not entries:
                continue
            per_client: dict[str, list[tuple[str, str, int]]] = {}
            for entry_id, got in entries:
                per_client.setdefault(got["cid"], []).append(
                    (entry_id, got["gender"], int(got["ts"]))
                )
            all_keys = [keys.stream(shard), keys.stats(shard), keys.erasures(shard)]
            expires = client_expiry_ms(now, settings.client_ttl_days)
            args: list[Any] = [model, now, expires, "", *_params(model, settings)]
            for cid, own in per_client.items():
                all_keys.append(keys.result(shard, cid))
                if model == "top7d":
                    all_keys += [keys.day_bucket(shard, model, day_of(ts), cid) for _, _, ts in own]
                args.append(len(own))
                for entry in own:
                    args += entry
            reply = await client.eval(apply.source, len(all_keys), *all_keys, *args)
            applied += int(reply[0])
    return applied
