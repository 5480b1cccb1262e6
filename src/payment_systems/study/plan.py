"""The seed's seven-day plan: which module to read on which day, and how much.

Kept as data so the home page's table, the ``study`` tracker and the tests
all read one source. Paths are relative to ``src/payment_systems/``, except
the portfolio pages, which live under ``docs/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StudyFile:
    """One file of the plan and the number of lines the seed budgets for it."""

    path: str
    lines: int


@dataclass(frozen=True, slots=True)
class StudyDay:
    """One day: a theme and the files that teach it."""

    day: int
    theme: str
    files: tuple[StudyFile, ...]

    @property
    def line_target(self) -> int:
        """The day's total, the sum of its files' budgets (750 for every day)."""
        return sum(f.lines for f in self.files)


WEEK_1: tuple[StudyDay, ...] = (
    StudyDay(
        1,
        "Idempotency & distributed locks",
        (
            StudyFile("core/idempotency.py", 350),
            StudyFile("database/models.py", 250),
            StudyFile("tests/test_idempotency.py", 150),
        ),
    ),
    StudyDay(
        2,
        "Webhooks & event sourcing",
        (
            StudyFile("integrations/webhook_handler.py", 350),
            StudyFile("patterns/outbox.py", 250),
            StudyFile("monitoring/metrics.py", 150),
        ),
    ),
    StudyDay(
        3,
        "Reconciliation & settlement",
        (
            StudyFile("core/reconciliation.py", 350),
            StudyFile("fraud/velocity.py", 250),
            StudyFile("integrations/stripe_client.py", 150),
        ),
    ),
    StudyDay(
        4,
        "Multi-currency & FX",
        (
            StudyFile("fx/converter.py", 350),
            StudyFile("fx/settlement.py", 250),
            StudyFile("tests/test_fx.py", 150),
        ),
    ),
    StudyDay(
        5,
        "Chargebacks & disputes",
        (
            StudyFile("chargebacks/lifecycle.py", 350),
            StudyFile("chargebacks/evidence.py", 250),
            StudyFile("chargebacks/prevention.py", 150),
        ),
    ),
    StudyDay(
        6,
        "Load testing & chaos",
        (
            StudyFile("load_tests/payment_load.py", 350),
            StudyFile("chaos/failure_simulator.py", 400),
        ),
    ),
    StudyDay(
        7,
        "Integration & portfolio",
        (
            StudyFile("integration/end_to_end.py", 350),
            StudyFile("the portfolio pages", 400),
        ),
    ),
)
