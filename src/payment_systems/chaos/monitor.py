"""Watching the system from outside, as an on-call engineer's dashboards would.

A `Monitor` polls ``/readyz`` and ``/metrics`` a few times a second for
the whole chaos run and keeps a timeline. Detection is then a question
asked of that timeline ("when did anything first look wrong?"), not a
guess made by the code that injected the fault: the injector knows, the
monitor has to notice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

WATCHED = ("api_errors_total", "payments_total", "requests_shed_total")


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the system, at wall-clock time ``at`` (shared with the load samples)."""

    at: float
    ready: bool
    checks: dict[str, str]
    rss_bytes: int | None
    counters: dict[str, float]
    workers: tuple[int, ...]

    def errors(self) -> float:
        """Error answers so far (by problem code), summed."""
        return sum(v for k, v in self.counters.items() if k.startswith("api_errors_total"))

    def errors_since(self, base: Sample) -> dict[str, int]:
        """Error answers per problem code that rose since ``base`` (``{"database_busy": 3}``)."""
        return {
            key.split('"')[1]: int(value - base.counters.get(key, 0))
            for key, value in self.counters.items()
            if key.startswith("api_errors_total") and value > base.counters.get(key, 0)
        }

    def unknown_outcomes(self) -> float:
        return self.counters.get('payments_total{outcome="unknown"}', 0.0)


def worker_pids(supervisor: int) -> tuple[int, ...]:
    """The uvicorn worker processes under ``supervisor`` (Linux ``/proc``)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    try:
        return tuple(sorted(int(p) for p in children.read_text().split()))
    except OSError:
        return ()


def _counters(text: str) -> tuple[dict[str, float], int | None]:
    counters: dict[str, float] = {}
    rss = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "process_resident_memory_bytes":
                rss = int(s.value)
            elif s.name in WATCHED:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                counters[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return counters, rss


@dataclass
class Monitor:
    """Polls ``url`` every ``interval_s`` on a thread until `stop`."""

    url: str
    supervisor_pid: int
    interval_s: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _poll(self, client: httpx.Client) -> Sample:
        at = time.time()
        try:
            ready = client.get("/readyz")
            checks = {k: str(v) for k, v in ready.json().items()}
            is_ready = ready.status_code == 200
        except (httpx.HTTPError, ValueError) as exc:
            checks, is_ready = {"api": f"no answer: {type(exc).__name__}"}, False
        try:
            counters, rss = _counters(client.get("/metrics").text)
        except httpx.HTTPError:
            counters, rss = {}, None
        return Sample(at, is_ready, checks, rss, counters, worker_pids(self.supervisor_pid))

    def start(self) -> Monitor:
        self.started = time.time()

        def loop() -> None:
            with httpx.Client(base_url=self.url, timeout=3) as client:
                while not self._stop.is_set():
                    self.samples.append(self._poll(client))
                    self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="chaos-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end]
