"""Stripe's error shapes: ``{"error": {"type", "code", "message", "param", ...}}``.

The official SDK maps the HTTP status and ``type`` to its exception classes
(402 → ``CardError``, 400 + ``idempotency_error`` → ``IdempotencyError``...),
so getting these shapes right is what makes the SDK behave as with Stripe.
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """An error response; subclasses fix the status and type."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe would send."""
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


class InvalidRequest(SandboxError):
    """400: a parameter is missing or malformed."""


class NotFound(SandboxError):
    """404: no such object for this account."""

    status = 404

    def __init__(self, kind: str, object_id: str, param: str = "id") -> None:
        super().__init__(f"No such {kind}: '{object_id}'", param, code="resource_missing")


class Unauthorized(SandboxError):
    """401: no or malformed API key."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)


class IdempotencyMismatch(SandboxError):
    """400 ``idempotency_error``: the key was used with other parameters."""

    type = "idempotency_error"

    def __init__(self, key: str) -> None:
        super().__init__(
            "Keys for idempotent requests can only be used with the same parameters they "
            f"were first used with. Try using a key other than '{key}' if you meant to "
            "execute a different request."
        )


class IdempotencyConflict(SandboxError):
    """409: the same key is in flight in another request; safe to retry later."""

    status = 409
    type = "idempotency_error"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"There is currently another in-progress request using this Idempotency-Key "
            f"('{key}'); retry after it has completed.",
            headers={"Stripe-Should-Retry": "true"},
        )


class CardDeclined(SandboxError):
    """402 ``card_error``, with ``decline_code`` and the PaymentIntent attached."""

    status = 402
    type = "card_error"


class InjectedFault(SandboxError):
    """A fault from ``/_sandbox/faults``: a 5xx or a 429, looking like the real thing."""

    type = "api_error"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        if status == 429:
            self.type = "invalid_request_error"
            self.code = "rate_limit"
