"""The API's side of the champion (SPEC §14): a background task that, every
``GENDERD_CHAMPION_CHECK_S``, takes part in the check (one API process at a time does it:
:func:`genderd.grading.champion.check`) and reads the champion, so that with
``GENDERD_DEFAULT_MODEL=best`` every process answers lookups that name no model from the same
champion within one interval. A lookup pays nothing for it: the default model is one attribute
the task replaces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from genderd.api.state import Api
from genderd.grading import champion
from genderd.transport import RedisUnavailableError, translate

log = logging.getLogger(__name__)

#: after a failed step (Redis down, the deployment not opened yet), try again this soon
RETRY_S = 5.0


class ChampionKeeper:
    """Checks and follows the champion for one API process."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.checks = 0  # checks this process made (it held the lock)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="genderd-champion")

    async def stop(self) -> None:
        """Stop the task: at once when it waits; a step in hand (Redis calls, each with its
        timeout) ends first, since the clients it uses may take a cancellation as a lost
        connection to retry."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        interval = self.api.settings.champion_check_s
        while not self._stopping.is_set():
            try:
                await self.step()
                delay = interval
            except Exception as raised:  # a failed step never ends the task
                error = translate(raised)
                if isinstance(error, RedisUnavailableError):
                    log.info("champion: cannot check now (%s)", error)
                else:
                    log.exception("champion: the check failed")
                delay = min(interval, RETRY_S)
            with contextlib.suppress(asyncio.TimeoutError):  # Python 3.10's is not builtin
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def step(self) -> champion.Champion:
        """Check (when this process gets the lock and grading is on), then follow the stored
        champion."""
        api = self.api
        deployment = await api.deployment()
        links = api.connected()
        if api.settings.grading:
            statuses = await api.model_status()
            unfit = {s.name for s in statuses if s.failing or s.stalled or s.off}
            started = time.perf_counter()
            if await champion.check(links, deployment, unfit, api.clock()) is not None:
                self.checks += 1
                log.debug("champion: checked in %.3f s", time.perf_counter() - started)
        if api.settings.serves_best:
            await champion.served(links, deployment, api.clock())
        current = await champion.read_champion(links, deployment)
        api.follow(current)
        return current


__all__ = ["RETRY_S", "ChampionKeeper"]
