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

Each worker's limit is the setting plus a random 0-50%. Workers started
together leak together; without the jitter they would all be recycled at
the same moment, and for the second it takes a fresh worker to start,
nobody would be serving (gunicorn's ``max_requests_jitter`` exists for the
same reason). The chaos memory-leak run showed exactly that: 503s from a
replacement worker flooded with the queue that built up while both were
away. Jitter makes that rare; a `RecycleLease` makes it impossible: a
worker recycles only if no sibling has in the last few seconds (the time a
replacement takes to start), the one-at-a-time rule of a rolling restart
(Kubernetes' ``maxUnavailable: 1``). A worker that must wait keeps leaking
for a few seconds more, which is the cheaper failure.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class RecycleLease:
    """One recycle at a time among sibling workers: a timestamp in a file, under ``flock``."""

    def __init__(
        self,
        path: Path | None = None,
        spacing_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # siblings share a parent (uvicorn's supervisor), so they share this file
        self.path = path or Path(tempfile.gettempdir()) / f"payment-systems-recycle-{os.getppid()}"
        self.spacing_s = spacing_s
        self.clock = clock

    def claim(self) -> bool:
        """True if no sibling recycled within ``spacing_s``; records this claim."""
        with open(self.path, "a+") as lease:
            fcntl.flock(lease, fcntl.LOCK_EX)
            lease.seek(0)
            text = lease.read().strip()
            now = self.clock()
            if text and now - float(text) < self.spacing_s:
                return False
            lease.seek(0)
            lease.truncate()
            lease.write(repr(now))
            return True


class RssWatchdog:
    """Calls ``recycle`` (default: SIGTERM to this process) once RSS grows past the limit."""

    def __init__(
        self,
        max_growth_mb: float,
        *,
        interval_s: float = 1.0,
        read_rss: Callable[[], int] = resident_bytes,
        recycle: Callable[[], None] | None = None,
        jitter: float | None = None,
        lease: RecycleLease | None = None,
    ) -> None:
        spread = random.uniform(0, 0.5) if jitter is None else jitter
        self.limit = int(max_growth_mb * (1 + spread) * 1024 * 1024)
        self.interval_s = interval_s
        self.read_rss = read_rss
        self.recycle = recycle or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.lease = lease or RecycleLease()
        self.baseline = read_rss()
        self.fired = False
        self._stop = threading.Event()

    def check(self) -> bool:
        """One look; True (once) when it decided to recycle."""
        grown = self.read_rss() - self.baseline
        if self.fired or grown <= self.limit or not self.lease.claim():
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
