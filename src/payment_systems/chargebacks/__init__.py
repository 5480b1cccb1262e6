"""Chargebacks: the dispute lifecycle, evidence from our own records, and 3DS prevention."""
