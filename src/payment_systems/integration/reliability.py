"""Total system reliability: what the dependencies allow, and what our design changes.

The study plan's Day 7 asks to "calculate total system reliability". The
arithmetic is the easy part: components in series multiply (the payment
needs all of them), redundant paths combine as ``1 - product(1 - a)``. The
useful part is being honest about the inputs and about what each
mechanism does and does not buy:

* **Retries** turn a per-request failure probability ``p`` into ``p**n``,
  *if* the failures are independent: a blip, a dropped connection, a 500
  from one bad host. Against an outage longer than the retry window they
  buy nothing, and SLAs count outage minutes, so retries do not move an
  SLA-based figure. Both numbers are computed, and kept apart.
* **The circuit breaker** does not make the PSP more available. It stops a
  PSP outage from *spreading*: without it, every worker waits out its
  timeout on the dead PSP, the pool fills, and reads and webhooks fail too
  (the network-partition chaos run shows the shape). So, with the breaker,
  a PSP outage costs payment creation only; without it, every endpoint.
* **The SQL idempotency fallback** takes Redis out of the series *for
  idempotency*: payment creation then needs the database (which it needs
  anyway) but not Redis. The fraud velocity rules still count in Redis and
  fail closed (a 503) while it is down, so this figure holds only where
  screening is off (``FRAUD_RULES=off``, as in the chaos runs) or moved off
  Redis. A merchant that screens every payment keeps Redis in the series.

Inputs are dependencies with a stated source. The defaults are published
SLAs where one exists, and labelled assumptions where none does. Change
them with ``payment-systems demo --json`` output or in code; the function
is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from payment_systems.integrations.stripe_client import RetryPolicy

MINUTES_PER_YEAR = 365 * 24 * 60


@dataclass(frozen=True, slots=True)
class Dependency:
    """One thing a payment needs, with how available it is and who says so."""

    name: str
    availability: float  # the fraction of minutes it is up, e.g. 0.9995
    source: str
    on_payment_path: bool = True  # needed to take a payment
    on_read_path: bool = False  # needed to read one (GET /v1/payments/{id})
    replaced_by_sql_fallback: bool = False  # IDEMPOTENCY_FALLBACK=sql does its job (Redis)
    behind_breaker: bool = False  # calls go through the circuit breaker (the PSP)


DEFAULT_DEPENDENCIES: tuple[Dependency, ...] = (
    Dependency(
        "API workers (stateless, several hosts behind a load balancer)",
        0.9999,
        "AWS EC2 region-level SLA, 99.99% (aws.amazon.com/compute/sla); an assumption "
        "that we deploy across two or more availability zones",
        on_read_path=True,
    ),
    Dependency(
        "PostgreSQL (managed, Multi-AZ)",
        0.9995,
        "Amazon RDS Multi-AZ SLA, 99.95% monthly uptime (aws.amazon.com/rds/sla)",
        on_read_path=True,
    ),
    Dependency(
        "Redis (managed, Multi-AZ)",
        0.9999,
        "Amazon ElastiCache Multi-AZ SLA, 99.99% (aws.amazon.com/elasticache/sla)",
        replaced_by_sql_fallback=True,
    ),
    Dependency(
        "PSP API",
        0.9999,
        "an assumption: Stripe publishes no SLA for standard accounts; its status page "
        "history is the place to check (status.stripe.com)",
        behind_breaker=True,
    ),
)


def series(availabilities: list[float]) -> float:
    """All of them are needed: the availabilities multiply.

    Examples:
        >>> round(series([0.999, 0.999]), 6)
        0.998001
    """
    return math.prod(availabilities)


def parallel(availabilities: list[float]) -> float:
    """Any one of them will do: it fails only when all fail.

    Examples:
        >>> round(parallel([0.99, 0.99]), 6)
        0.9999
    """
    return 1 - math.prod(1 - a for a in availabilities)


def request_success(failure_rate: float, attempts: int) -> float:
    """Chance a request succeeds within ``attempts`` tries, if failures are independent.

    Examples:
        >>> round(request_success(0.01, 3), 6)
        0.999999
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    return 1 - failure_rate**attempts


def downtime_minutes(availability: float) -> float:
    """Minutes a year that an availability allows to be down."""
    return (1 - availability) * MINUTES_PER_YEAR


@dataclass(frozen=True, slots=True)
class Reliability:
    """The computed figures; availabilities are fractions, downtime is minutes a year."""

    payment_creation: float
    payment_creation_with_sql_fallback: float
    reads_with_breaker: float
    reads_without_breaker: float
    psp_call_success_one_try: float
    psp_call_success_with_retries: float

    def downtime(self) -> dict[str, float]:
        return {
            "payment_creation": round(downtime_minutes(self.payment_creation), 1),
            "payment_creation_with_sql_fallback": round(
                downtime_minutes(self.payment_creation_with_sql_fallback), 1
            ),
            "reads_with_breaker": round(downtime_minutes(self.reads_with_breaker), 1),
            "reads_without_breaker": round(downtime_minutes(self.reads_without_breaker), 1),
        }


def reliability(
    dependencies: tuple[Dependency, ...] = DEFAULT_DEPENDENCIES,
    *,
    psp_transient_failure_rate: float = 0.001,
    attempts: int | None = None,
) -> Reliability:
    """End-to-end availability of taking and reading a payment, and what retries add.

    ``psp_transient_failure_rate`` is the share of PSP calls that fail on
    their own (an assumption: 0.1%); ``attempts`` defaults to our PSP
    client's ``RetryPolicy().max_attempts``.
    """
    tries = attempts if attempts is not None else RetryPolicy().max_attempts
    on_path = [d.availability for d in dependencies if d.on_payment_path]
    without_redis = [
        d.availability for d in dependencies if d.on_payment_path and not d.replaced_by_sql_fallback
    ]
    reads = [d.availability for d in dependencies if d.on_read_path]
    psp = [d.availability for d in dependencies if d.behind_breaker]
    return Reliability(
        payment_creation=series(on_path),
        payment_creation_with_sql_fallback=series(without_redis),
        reads_with_breaker=series(reads),
        # without a breaker, a PSP outage ties up every worker: reads need the PSP too
        reads_without_breaker=series(reads + psp),
        psp_call_success_one_try=request_success(psp_transient_failure_rate, 1),
        psp_call_success_with_retries=request_success(psp_transient_failure_rate, tries),
    )
