"""Time: the clock every process reads (processing, reads, producers) and the day arithmetic.

Both sides need it (workers stamp and window events; lookups, producers and the API read the
same clock), so it lives below both. Times are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def day_of(ts_ms: int) -> int:
    """The UTC day number of a millisecond timestamp."""
    return ts_ms // MS_PER_DAY


def client_expiry_ms(now_ms: int, ttl_days: int) -> int:
    """When a client whose latest event was applied at ``now_ms`` expires (SPEC §10): the end
    of the UTC day ``ttl_days`` after it, so that its keys' expiry changes once a day; 0 when
    ``ttl_days`` is 0 (kept forever)."""
    return (day_of(now_ms) + ttl_days + 1) * MS_PER_DAY if ttl_days else 0
