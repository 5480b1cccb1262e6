"""Webhook signatures: how a webhook proves it came from the PSP, and is not a replay.

Two schemes: Stripe's ``Stripe-Signature`` and the vendor-neutral Standard
Webhooks (``webhook-id``/``webhook-timestamp``/``webhook-signature``).

Stripe-Signature:

The header is ``t=<unix time>,v1=<hex HMAC-SHA256>``; the HMAC is over
``"{t}.{raw body}"`` and keyed by the *whole* ``whsec_…`` string as UTF-8.
Only ``v1`` counts (``v0`` is ignored so an attacker cannot downgrade), the
comparison is constant-time, and the timestamp must be within a tolerance
(300 s) in *both* directions, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

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


# -- Standard Webhooks (standardwebhooks.com) -------------------------------------------


def _standard_key(secret: str) -> bytes:
    """``whsec_<base64>`` → key bytes; misconfiguration fails here, not at the first request."""
    body = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a Standard Webhooks secret is 'whsec_' followed by base64 key bytes"
        ) from None


def sign_standard(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.payload``.

    Examples:
        >>> sign_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
        ...               1614265330, b'{"test": 2432232314}')
        'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_standard(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    payload: bytes,
    tolerance: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check Standard Webhooks headers; return the ``webhook-id`` (the dedupe key) or raise.

    ``webhook-signature`` may hold several space-separated signatures (key
    rotation); any ``v1`` one matching any of ``secret`` passes.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not stamp.isdigit() or not signatures:
        raise SignatureVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureVerificationError(
            f"webhook-timestamp {timestamp} is outside the {tolerance}s tolerance",
            timestamp=timestamp,
        )
    candidates = [s.split(",", 1)[1] for s in signatures.split() if s.startswith("v1,")]
    for key in [secret] if isinstance(secret, str) else list(secret):
        expected = sign_standard(key, msg_id, timestamp, payload).split(",", 1)[1]
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return msg_id
    raise SignatureVerificationError("no v1 signature matches any active webhook secret")
