"""Describe the machine a measurement ran on, so every number carries its context.

A latency or throughput figure without the cores and CPU it came from cannot
be compared with anything; every benchmark and load report embeds this.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, falling back to ``platform``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, str | int]:
    """Cores, CPU model, OS and Python version of this machine."""
    return {
        "cores": os.cpu_count() or 1,
        "cpu_model": cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
