"""`python -m tests.support.paced_redrive ARGS`: the `genderd` command line with each atomic
step of a per-model re-drive (one ``redrive_model.lua`` call, a page of dead letters) followed
by a pause of :data:`PAGE_PAUSE_S`, so that a test can kill the process -9 while the re-drive is
part-way through; the steps themselves are the product's."""

from __future__ import annotations

import time
from typing import Any

from genderd import deadletters
from genderd.cli import main

#: how long the process waits after each page it moved
PAGE_PAUSE_S = 0.05


def _paced(move: Any) -> Any:
    async def paced(*args: Any, **kwargs: Any) -> None:
        await move(*args, **kwargs)
        time.sleep(PAGE_PAUSE_S)  # blocking on purpose: nothing else runs meanwhile

    return paced


if __name__ == "__main__":
    deadletters._move = _paced(deadletters._move)
    main()
