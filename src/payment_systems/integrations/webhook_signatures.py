"""Stripe-Signature: how a webhook proves it came from the PSP.

The header is ``t=<unix time>,v1=<hex HMAC-SHA256>``; the HMAC is over
``"{t}.{raw body}"`` and keyed by the *whole* ``whsec_…`` string as UTF-8.
Only ``v1`` counts (``v0`` is ignored so an attacker cannot downgrade), the
comparison is constant-time, and the timestamp must be within a tolerance
(300 s) in *both* directions, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from payment_systems.errors import PaymentSystemsError

DEFAULT_TOLERANCE_S = 300


class SignatureVerificationError(PaymentSystemsError):
    """The signature is missing, malformed, wrong, or outside the time tolerance."""

    code = "invalid_signature"
    http_status = 400


def sign_stripe(secret: str, payload: bytes, timestamp: int) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` signed at ``timestamp``.

    Examples:
        >>> sign_stripe("whsec_test", b'{"id": "evt_1"}', 1700000000)[:13]
        't=1700000000,'
    """
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_stripe(
    secret: str | Sequence[str],
    payload: bytes,
    header: str,
    tolerance: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a ``Stripe-Signature`` header; return its timestamp or raise.

    ``secret`` may be a list: during key rotation every active secret is
    tried, and any ``v1`` signature in the header may match.
    """
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureVerificationError("Stripe-Signature header has no timestamp or v1 signature")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureVerificationError(
            f"signature timestamp {timestamp} is outside the {tolerance}s tolerance; "
            "a replayed or delayed webhook is refused",
            timestamp=timestamp,
        )
    for key in secrets_:
        expected = sign_stripe(key, payload, timestamp).split("v1=", 1)[1]
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return timestamp
    raise SignatureVerificationError("no v1 signature matches any active webhook secret")
