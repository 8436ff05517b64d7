"""`python -m tests.support.paced_redrive [--hold-after=N] ARGS`: the `genderd` command line
with each atomic step of a per-model re-drive (one ``redrive_model.lua`` call, a page of dead
letters) followed by a pause of :data:`PAGE_PAUSE_S`; with ``--hold-after=N``, after its N-th
page it writes :data:`HELD` to stdout and waits there until killed, so that a test kills it
-9 part-way through without racing it. The steps themselves are the product's."""

from __future__ import annotations

import sys
import time
from typing import Any

from genderd import deadletters
from genderd.cli import main

#: how long the process waits after each page it moved
PAGE_PAUSE_S = 0.05
#: the line written once the re-drive is held (``--hold-after``)
HELD = "held after its pages"
HOLD_FLAG = "--hold-after="
HOLD_S = 3600.0  # held this long at most: the test kills it first


def _paced(move: Any, hold_after: int | None) -> Any:
    pages = 0

    async def paced(*args: Any, **kwargs: Any) -> None:
        nonlocal pages
        await move(*args, **kwargs)
        pages += 1
        if pages == hold_after:
            print(HELD, flush=True)
            time.sleep(HOLD_S)
        time.sleep(PAGE_PAUSE_S)  # blocking on purpose: nothing else runs meanwhile

    return paced


if __name__ == "__main__":
    hold_after = None
    if len(sys.argv) > 1 and sys.argv[1].startswith(HOLD_FLAG):
        hold_after = int(sys.argv.pop(1).removeprefix(HOLD_FLAG))
    deadletters._move = _paced(deadletters._move, hold_after)
    main()
