"""Multi-currency: FX conversion and settlement risk."""
