"""Chaos engineering: faults we inject on purpose, to prove what holds."""
