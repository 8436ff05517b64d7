"""`python -m tests.support.held_replay ARGS`: the `genderd` command line with a replay held
after its first re-applied batch: it writes :data:`HELD` to stdout and waits there (awaiting,
so that its pause keeps being refreshed, as in a replay that is merely slow) until it is
killed. A test can then kill it mid-rebuild without racing it; the steps are the product's."""

from __future__ import annotations

import asyncio
from typing import Any

from genderd.cli import main
from genderd.worker import Worker

#: the line written once the replay is held mid-rebuild
HELD = "held after the first re-applied batch"


def _held(poll: Any) -> Any:
    async def held(self: Worker, shard: int, block_ms: int | None = None) -> Any:
        outcome = await poll(self, shard, block_ms)
        if outcome.handled:
            print(HELD, flush=True)
            await asyncio.Event().wait()  # never set: held until killed
        return outcome

    return held


if __name__ == "__main__":
    Worker.poll = _held(Worker.poll)  # type: ignore[method-assign]
    main()
