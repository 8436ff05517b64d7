"""`python -m tests.support.doomed_scrub POINT N ARGS`: the `genderd` command line whose
scrubber kills its own process (-9) the N-th time it reaches POINT: ``step`` (a step of a
shard's scrub done), ``tidy`` (a page of a pass's tidy done), ``finish`` (an erasure recorded
done in a shard, not yet forgotten there). Steps of 5 entries and tidy pages of 2 clients make
a pass span many calls; the steps themselves are the product's."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from genderd.cli import main
from genderd.erasure import records, scrub


def _doomed(done: Any, after: int) -> Any:
    calls = 0

    async def doomed(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = await done(*args, **kwargs)
        calls += 1
        if calls >= after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return doomed


if __name__ == "__main__":
    point, after = sys.argv[1], int(sys.argv[2])
    del sys.argv[1:3]
    scrub.STEP_COUNT, scrub.TIDY_COUNT = 5, 2
    owner: Any
    owner, name = {
        "step": (scrub.Scrubber, "step"),
        "tidy": (scrub.Scrubber, "_tidy"),
        "finish": (records, "shard_done"),
    }[point]
    setattr(owner, name, _doomed(getattr(owner, name), after))
    main()
