"""Recycle a worker whose memory keeps growing, without dropping a request.

A leak is found in days; a worker that runs out of memory is killed by the
kernel in the middle of requests today. The standard defence (gunicorn's
``max_requests``, Celery's ``max_memory_per_child``, uWSGI's
``reload-on-rss``) is to retire a worker *gracefully* before that happens.
Here a thread reads the worker's resident set size once a second and, when
it has grown more than ``WORKER_MAX_RSS_GROWTH_MB`` above what it was when
the worker started serving, sends the worker SIGTERM. Uvicorn then stops
accepting on that process and drains it (`payment_systems.api.graceful`:
responses say ``Connection: close``, idle keep-alive connections end on
their keep-alive timer, never under a request), and exits; its supervisor
starts a fresh worker, and the other workers take the traffic meanwhile.
Growth, not an absolute size, so the setting means the same on any machine:
"this much memory nobody gave back".

Each worker's limit is the setting plus a random 0-50%. Workers started
together leak together; without the jitter they would all be recycled at
the same moment, and for the second it takes a fresh worker to start,
nobody would be serving (gunicorn's ``max_requests_jitter`` exists for the
same reason). The chaos memory-leak run showed exactly that: 503s from a
replacement worker flooded with the queue that built up while both were
away. Jitter makes that rare; a `RecycleLease` makes it impossible: a
worker recycles only when no sibling is being recycled, that is, the last
one to go has exited *and* its replacement is serving, the one-at-a-time
rule of a rolling restart (Kubernetes' ``maxUnavailable: 1``). A fixed
spacing would not do: a drain lasts as long as a client keeps a connection
idle (up to `payment_systems.api.graceful.KEEP_ALIVE_S`), and two workers
draining at once accept no new connection at all. A worker that must wait
keeps leaking a few seconds more, which is the cheaper failure.
"""

from __future__ import annotations

import fcntl
import json
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


def running(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited (a zombie has: Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class RecycleLease:
    """One recycle at a time among sibling workers: a small JSON file, under ``flock``.

    The file says which worker was last recycled (``pid``, ``at``) and when
    a worker last started serving (``started``). A claim is granted when no
    recycle is in progress: the last recycled worker has exited and a worker
    started after it (its replacement). A claim older than ``max_hold_s``
    is void, so a replacement that never comes cannot stop every later
    recycle.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_hold_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = running,
    ) -> None:
        # siblings share a parent (uvicorn's supervisor), so they share this file
        self.path = path or Path(tempfile.gettempdir()) / f"payment-systems-recycle-{os.getppid()}"
        self.max_hold_s = max_hold_s
        self.clock = clock
        self.alive = alive

    def _update(self, change: Callable[[dict[str, float]], bool]) -> bool:
        with open(self.path, "a+") as lease:
            fcntl.flock(lease, fcntl.LOCK_EX)
            lease.seek(0)
            try:
                state = {k: float(v) for k, v in json.loads(lease.read() or "{}").items()}
            except (ValueError, TypeError, AttributeError):
                state = {}  # unreadable (an older format): as if nobody held it
            if not change(state):
                return False
            lease.seek(0)
            lease.truncate()
            lease.write(json.dumps(state))
            return True

    def claim(self, pid: int | None = None) -> bool:
        """True if no sibling is being recycled; records this worker (``pid``) as the one."""
        now = self.clock()

        def take(state: dict[str, float]) -> bool:
            if "pid" in state and now - state["at"] < self.max_hold_s:
                draining = self.alive(int(state["pid"]))
                replaced = state.get("started", 0.0) > state["at"]
                if draining or not replaced:
                    return False
            state.update(pid=float(os.getpid() if pid is None else pid), at=now)
            return True

        return self._update(take)

    def started(self) -> None:
        """Records that a worker started serving (after a recycle: the replacement)."""

        def mark(state: dict[str, float]) -> bool:
            state["started"] = self.clock()
            return True

        self._update(mark)


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
        """Watch from a thread; called as the worker starts serving, which the lease records."""
        self.lease.started()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                if self.check():
                    return

        threading.Thread(target=loop, name="rss-watchdog", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
