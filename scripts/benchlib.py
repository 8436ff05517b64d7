"""What the benchmark scripts share: the machine they ran on, as a line for their tables."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """CPU model, core count and Python version of this machine."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
