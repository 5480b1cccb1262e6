"""payment-systems: the patterns behind a card-payments platform, each one working.

Nothing here runs at import time: no engine, no Redis connection, no server.
Those are created by the factories in `payment_systems.infra` when asked.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
