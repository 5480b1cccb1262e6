"""Persistence: SQLAlchemy models, sessions, migrations and SQL adapters."""
