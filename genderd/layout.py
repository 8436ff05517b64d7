"""The data layout version: which release's key and field layout a deployment's data has.

A release that changes how models keep their state records the layout it writes in the meta
hash (``layout``) before its first worker consumes, and reads every earlier layout it knows
itself (the new scripts upgrade a client's state when they first touch it), so an upgrade
keeps every answer and count without a migration pass or a replay.

Layouts:

- 1 (no ``layout`` field): ``top`` counters in a hash of their own per client
  (``<prefix>:{sN}:m:top:<cid>``); ``top7d``'s result hash without its window counters.
- 2: ``top`` counters in the result hash (``top:n:<g>``, ``top:t:<g>``); ``top7d``'s result hash
  keeps the window's counters of its day (``top7d:n:<g>``, ``top7d:t:<g>``, ``top7d:w``).
- 3: the counting models (``top``, ``top7d``, every ``TopWindow``) no longer store their scores
  JSON and newest event ts (``<model>:s``, ``<model>:ts``): readers derive them from the
  counters, which layout 2 already kept beside every answer. Their apply scripts delete the
  two fields where they find them; a layout-1 answer without counters is read from them.

Mixing releases is what can lose data: a worker of layout 1 increments counters that layout 2
has moved. So a worker refuses to start on a layout newer than its own, and the first worker of
a release with a newer layout refuses while workers that have not recorded it (an earlier
release's) are consuming. See docs/operations.md ("Upgrading").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from genderd.errors import ConfigurationError
from genderd.streams import live_consumers

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.transport import AsyncClient

log = logging.getLogger(__name__)

LAYOUT = 3
LAYOUT_FIELD = "layout"
#: the layout a deployment was created with (recorded since this release; absent: unknown)
CREATED_LAYOUT_FIELD = "created_layout"


class LayoutError(ConfigurationError, RuntimeError):
    """The deployment's data cannot be written by this release now (one line, for users)."""


async def stored_layout(client: AsyncClient, deployment: Deployment) -> int:
    """The layout recorded in the deployment's meta hash (1 when none is)."""
    stored = await client.hget(deployment.keys.meta, LAYOUT_FIELD)
    return 1 if stored is None else int(stored)


async def oldest_layout(client: AsyncClient, deployment: Deployment) -> int:
    """The oldest layout the deployment's data may be in: the one it was created with
    (recorded at creation since layout 2's last release), or 1 where that is unknown (an
    upgrade may have left keys and fields of any earlier layout)."""
    return oldest_of(await client.hget(deployment.keys.meta, CREATED_LAYOUT_FIELD))


def oldest_of(created: bytes | str | int | None) -> int:
    """The oldest layout, from the meta hash's ``created_layout`` field (None: absent)."""
    return 1 if created is None else int(created)


async def claim_layout(client: AsyncClient, deployment: Deployment, *, force: bool = False) -> int:
    """Make sure this release may write the deployment's data, recording its layout on the
    first start after an upgrade. Returns the layout found before. Raises
    :class:`LayoutError`, having written nothing, when a newer release wrote the data or
    (unless ``force``) workers of an earlier release are consuming."""
    found = await stored_layout(client, deployment)
    if found > LAYOUT:
        raise LayoutError(
            f"the deployment's data has layout {found}, written by a newer genderd; this "
            f"release writes layout {LAYOUT}: upgrade genderd (downgrades are not supported)"
        )
    if found == LAYOUT:
        return found
    idle_ms = int(deployment.settings.stall_after_s * 1000)
    names = [] if force else deployment.registry.names()
    live = await live_consumers(client, deployment.keys, deployment.shards, names, idle_ms)
    # A worker of this release may have recorded the layout meanwhile and started consuming.
    if live and await stored_layout(client, deployment) < LAYOUT:
        raise LayoutError(
            f"workers of an earlier genderd release are consuming ({', '.join(live)}): "
            f"stop them all, then start this release, which upgrades the data to layout "
            f"{LAYOUT} (see docs/operations.md, Upgrading)"
        )
    await client.hset(deployment.keys.meta, LAYOUT_FIELD, LAYOUT)
    if found < LAYOUT:
        log.info(
            "deployment %r: data layout %d -> %d (clients' state is upgraded as they are touched)",
            deployment.settings.prefix,
            found,
            LAYOUT,
        )
    return found
