"""Logging a repeated message once per interval, with a count (a failing model's events)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: how often a repeated message is logged again, with the count of those left out
INTERVAL_S = 10.0


class RateLimitedLog:
    """Logs the first message of a key at once, then at most one line per ``interval_s``:
    the latest message and how many like it were left out since."""

    def __init__(
        self,
        log: logging.Logger,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}  # key -> (logged at, left out)

    def warning(self, key: tuple[str, ...], message: str) -> None:
        """Log ``message`` (a warning) unless ``key`` was logged less than an interval ago."""
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return
        more = ""
        if seen is not None and seen[1]:
            more = f" ({seen[1]} more like this in the last {now - seen[0]:.0f} s)"
        self.log.warning("%s%s", message, more)
        self._last[key] = (now, 0)


__all__ = ["INTERVAL_S", "RateLimitedLog"]
