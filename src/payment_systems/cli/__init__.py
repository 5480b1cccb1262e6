"""The ``payment-systems`` command.

Each feature adds a command group in its own module here (``services``,
``events``, ``reconcile``, ``experiments``, ``load``...). Commands import
their feature modules lazily so that ``payment-systems --help`` stays fast
and starts no server.
"""

from __future__ import annotations

# Registration order is the order of --help's panels: running the system first.
from payment_systems.cli import services  # noqa: F401  # isort: skip
from payment_systems.cli import reconcile  # noqa: F401  # isort: skip
from payment_systems.cli import chaos, demo, events, experiments, ledger, load, study  # noqa: F401
from payment_systems.cli.root import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
