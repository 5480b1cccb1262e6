"""Reusable resilience patterns: circuit breaker, rate limiter, outbox."""
