"""Business metrics: the four numbers that are money, in Prometheus format.

| metric | why it matters (the study plan's words) |
|---|---|
| payment success rate | direct revenue impact: every failed payment is a lost sale |
| payment latency p95 | customer experience: slow checkouts are abandoned checkouts |
| duplicate rate | financial loss: replays caught are duplicates that would have charged |
| webhook lag | reconciliation delay: state we learn late is money we cannot match |

Plus the health of the machinery behind them: outbox backlog and age, and
the PSP circuit breaker's state. Each API process has its own registry; with
several uvicorn workers, scrape each, or use prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) in production.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class _Callbacks(Collector):
    """Gauges computed at scrape time (outbox backlog, breaker state)."""

    def __init__(
        self,
        backlog: Callable[[], tuple[int, float]] | None,
        breaker: Callable[[], str] | None,
    ) -> None:
        self.backlog = backlog
        self.breaker = breaker

    def collect(self) -> Iterator[Metric]:
        if self.backlog is not None:
            rows, age = self.backlog()
            yield GaugeMetricFamily("outbox_backlog", "Unpublished outbox rows", value=rows)
            yield GaugeMetricFamily(
                "outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", value=age
            )
        if self.breaker is not None:
            yield GaugeMetricFamily(
                "circuit_breaker_state",
                "PSP circuit breaker: 0 closed, 1 half-open, 2 open",
                value=BREAKER_VALUES.get(self.breaker(), -1),
            )


class PaymentMetrics:
    """The metrics of one API process, in their own registry."""

    def __init__(
        self,
        backlog: Callable[[], tuple[int, float]] | None = None,
        breaker: Callable[[], str] | None = None,
    ) -> None:
        self.breaker = breaker  # read by /readyz as well as by the scrape
        self.registry = CollectorRegistry()
        self.payments = Counter(
            "payments", "Payment creations by outcome", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "payment_latency_seconds",
            "Time to answer POST /v1/payments",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.replays = Counter(
            "idempotent_replays",
            "Requests answered from the idempotency store",
            registry=self.registry,
        )
        self.stale_completions = Counter(
            "idempotency_stale_completions",
            "Responses the idempotency store refused because the request's lock had expired "
            "and another request had taken the key over (the lock TTL is too short)",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "webhooks", "Webhook deliveries by outcome", ["outcome"], registry=self.registry
        )
        self.shed = Counter(
            "requests_shed",
            "Requests refused by admission control (503 before any work)",
            registry=self.registry,
        )
        self.errors = Counter(
            "api_errors",
            "Error answers by problem code (5xx and 4xx), e.g. database_busy",
            ["code"],
            registry=self.registry,
        )
        self.webhook_lag = Histogram(
            "webhook_lag_seconds",
            "From the PSP creating an event to us applying it",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Callbacks(backlog, breaker))
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds: how a
        # leak is seen from outside (the chaos memory-leak scenario watches it)
        ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        """The Prometheus text format for ``GET /metrics``."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class Summary:
    """The four business metrics, computed from a scrape."""

    payments: int
    success_rate: float | None
    latency_p95_s: float | None
    duplicate_rate: float | None
    webhook_lag_p95_s: float | None


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative histogram buckets, interpolated as Prometheus does."""
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if math.isinf(bound):
                return previous_bound
            share = (
                (target - previous_count) / (count - previous_count)
                if count > previous_count
                else 0
            )
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return None


def summarize(exposition: str) -> Summary:
    """Compute the four business metrics from Prometheus text.

    Examples:
        >>> text = '''
        ... payments_total{outcome="succeeded"} 98
        ... payments_total{outcome="failed"} 2
        ... idempotent_replays_total 1
        ... '''
        >>> s = summarize(text)
        >>> s.payments, s.success_rate, s.duplicate_rate
        (100, 0.98, 0.009900990099009901)
    """
    outcomes: dict[str, float] = {}
    webhooks: dict[str, float] = {}
    replays = 0.0
    buckets: dict[str, list[tuple[float, float]]] = {"latency": [], "lag": []}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "payments_total":
                outcomes[sample.labels["outcome"]] = sample.value
            elif sample.name == "webhooks_total":
                webhooks[sample.labels["outcome"]] = sample.value
            elif sample.name == "idempotent_replays_total":
                replays = sample.value
            elif sample.name in ("payment_latency_seconds_bucket", "webhook_lag_seconds_bucket"):
                key = "latency" if sample.name.startswith("payment") else "lag"
                buckets[key].append((float(sample.labels["le"]), sample.value))
    total = int(sum(outcomes.values()))
    settled = outcomes.get("succeeded", 0) + outcomes.get("failed", 0) + outcomes.get("unknown", 0)
    deliveries = sum(webhooks.values())
    duplicates = replays + webhooks.get("duplicate", 0)
    return Summary(
        payments=total,
        success_rate=outcomes.get("succeeded", 0) / settled if settled else None,
        latency_p95_s=_quantile(sorted(buckets["latency"]), 0.95),
        duplicate_rate=duplicates / (total + replays + deliveries) if total + deliveries else None,
        webhook_lag_p95_s=_quantile(sorted(buckets["lag"]), 0.95),
    )


def rows(summary: Summary) -> Iterable[tuple[str, str, str]]:
    """(metric, value, why it matters) for printing."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2%}"

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x * 1000:.0f} ms"

    yield ("payment success rate", pct(summary.success_rate), "direct revenue impact")
    yield ("payment latency p95", ms(summary.latency_p95_s), "customer experience")
    yield ("duplicate rate", pct(summary.duplicate_rate), "financial loss (caught)")
    yield ("webhook lag p95", ms(summary.webhook_lag_p95_s), "reconciliation delay")
