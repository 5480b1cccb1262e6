"""Recycle a worker whose memory keeps growing, without dropping a request.

A leak is found in days; a worker that runs out of memory is killed by the
kernel in the middle of requests today. The standard defence (gunicorn's
``max_requests``, Celery's ``max_memory_per_child``, uWSGI's
``reload-on-rss``) is to retire a worker *gracefully* before that happens.
Here a thread reads the worker's resident set size once a second and, when
it has grown more than ``WORKER_MAX_RSS_GROWTH_MB`` above what it was when
the worker started serving, sends the worker SIGTERM. Uvicorn then stops
accepting on that process, finishes the requests in flight, and exits; its
supervisor starts a fresh worker, and the other workers take the traffic
meanwhile. Growth, not an absolute size, so the setting means the same on
any machine: "this much memory nobody gave back".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class RssWatchdog:
    """Calls ``recycle`` (default: SIGTERM to this process) once RSS grows past the limit."""

    def __init__(
        self,
        max_growth_mb: float,
        *,
        interval_s: float = 1.0,
        read_rss: Callable[[], int] = resident_bytes,
        recycle: Callable[[], None] | None = None,
    ) -> None:
        self.limit = int(max_growth_mb * 1024 * 1024)
        self.interval_s = interval_s
        self.read_rss = read_rss
        self.recycle = recycle or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.baseline = read_rss()
        self.fired = False
        self._stop = threading.Event()

    def check(self) -> bool:
        """One look; True (once) when it decided to recycle."""
        grown = self.read_rss() - self.baseline
        if self.fired or grown <= self.limit:
            return False
        self.fired = True
        log.warning(
            "worker %d grew %.0f MB since start (limit %.0f MB): recycling it gracefully",
            os.getpid(), grown / 2**20, self.limit / 2**20,
        )  # fmt: skip
        self.recycle()
        return True

    def start(self) -> RssWatchdog:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                if self.check():
                    return

        threading.Thread(target=loop, name="rss-watchdog", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
