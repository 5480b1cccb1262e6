"""Fraud prevention: velocity rules and the economics of their thresholds."""
