"""The Payments API: FastAPI routes, merchant auth, idempotency, problem+json errors."""
