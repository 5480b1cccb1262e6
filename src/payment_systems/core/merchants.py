"""Merchants and their API keys: shown once, stored only as a SHA-256 hash.

A database leak must not leak working keys, so only ``sha256(key)`` is
stored, plus a short visible prefix so a merchant can tell keys apart.
Keys are 32 random bytes, so a fast hash is enough (no need for bcrypt's
slowness, which exists to protect low-entropy passwords).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from payment_systems.database.models import Merchant

KEY_PREFIX = "sk_test_"


def hash_key(api_key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_merchant(session: Session, name: str) -> tuple[Merchant, str]:
    """Create a merchant; returns it and its API key, which is never retrievable again."""
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    merchant = Merchant(
        id="mer_" + secrets.token_hex(10),
        name=name,
        api_key_hash=hash_key(api_key),
        api_key_prefix=api_key[:12],
    )
    session.add(merchant)
    session.flush()
    return merchant, api_key


def authenticate(session: Session, api_key: str) -> Merchant | None:
    """The merchant owning ``api_key``, or None (one indexed lookup by hash)."""
    return session.scalar(select(Merchant).where(Merchant.api_key_hash == hash_key(api_key)))
