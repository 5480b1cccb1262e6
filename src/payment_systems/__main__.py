"""``python -m payment_systems`` is the same as ``payment-systems``."""

from payment_systems.cli import main

if __name__ == "__main__":
    main()
