"""One exception tree for the whole package, shaped like Stripe's.

Every error carries a stable, machine-readable ``code`` and the HTTP status an
API would answer with. Callers branch on the class or the code, never on the
message, so the message is free to say in plain words what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PaymentSystemsError(Exception):
    """Base class: every error raised on purpose by this package derives from it.

    ``code`` is stable across releases (clients switch on it); ``http_status``
    is what `payment_systems.api` sends, as an RFC 7807 problem document.
    """

    code: ClassVar[str] = "payment_systems_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_problem(self) -> dict[str, Any]:
        """Render as an ``application/problem+json`` body (RFC 7807)."""
        return {
            "type": f"https://payment-systems.dev/errors/{self.code}",
            "title": type(self).__name__,
            "status": self.http_status,
            "detail": self.message,
            "code": self.code,
            **{k: v for k, v in self.context.items() if _is_json_scalar(v)},
        }


def _is_json_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | bool)
