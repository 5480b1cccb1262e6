"""Monitoring: the business metrics, in Prometheus format."""
