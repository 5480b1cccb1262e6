"""Watching the system from outside, as an on-call engineer's dashboards would.

A `Monitor` polls ``/readyz`` and ``/metrics`` a few times a second for
the whole chaos run and keeps a timeline. Detection is then a question
asked of that timeline ("when did anything first look wrong?"), not a
guess made by the code that injected the fault: the injector knows, the
monitor has to notice.

A look that finds ``/metrics`` unanswered, or answered with anything but
Prometheus text (a ``503`` problem document when the database is busy:
the scrape reads the outbox backlog from it), is itself a sample, with no
counters and the reason in `Sample.metrics`, as Prometheus records ``up 0``
for a failed scrape. It is never parsed as metrics: the parser would fail
on the JSON, and with it the monitor, mid-run (issue 13).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
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
    metrics: str = "ok"  # or why this look has no counters ("503 database_busy", "no answer: ...")

    @property
    def scraped(self) -> bool:
        """True if ``/metrics`` answered with metrics (``counters`` are real, not missing)."""
        return self.metrics == "ok"

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


PROMETHEUS_TYPES = ("text/plain", "application/openmetrics-text")


def _counters(text: str, openmetrics: bool = False) -> tuple[dict[str, float], int | None]:
    counters: dict[str, float] = {}
    rss = None
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    for family in parse(text):
        for s in family.samples:
            if s.name == "process_resident_memory_bytes":
                rss = int(s.value)
            elif s.name in WATCHED:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                counters[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return counters, rss


def _unavailable(response: httpx.Response) -> str:
    """Why an answer from ``/metrics`` is not metrics (``"503 database_busy"``)."""
    code = ""
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
            code = str(body.get("code") or "") if isinstance(body, dict) else ""
        except ValueError:
            pass
    kind = response.headers.get("content-type", "no content-type").split(";")[0]
    return f"{response.status_code} {code or kind}"


def scrape(client: httpx.Client) -> tuple[dict[str, float], int | None, str]:
    """One ``GET /metrics``: (counters, resident bytes, ``"ok"`` or why there are none)."""
    try:
        response = client.get("/metrics")
    except httpx.HTTPError as exc:
        return {}, None, f"no answer: {type(exc).__name__}"
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if response.status_code != 200 or kind not in PROMETHEUS_TYPES:
        return {}, None, _unavailable(response)
    try:
        counters, rss = _counters(response.text, openmetrics=kind != "text/plain")
    except ValueError as exc:  # a truncated or garbled exposition: a failed scrape
        return {}, None, f"unparseable: {exc}"[:200]
    return counters, rss, "ok"


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
            body = ready.json()
            checks = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
            is_ready = ready.status_code == 200
        except (httpx.HTTPError, ValueError) as exc:
            checks, is_ready = {"api": f"no answer: {type(exc).__name__}"}, False
        counters, rss, metrics = scrape(client)
        workers = worker_pids(self.supervisor_pid)
        return Sample(at, is_ready, checks, rss, counters, workers, metrics)

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
