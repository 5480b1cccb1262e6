"""RFC 7807 ``application/problem+json`` responses with a stable ``code``.

Clients branch on ``code`` (``unknown_currency``, ``idempotency_key_reused``…),
never on ``detail``, which is written for the human reading the logs.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from payment_systems.errors import PaymentSystemsError

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem document; ``type`` is a stable URI per code."""
    body = {
        "type": f"https://payment-systems.dev/errors/{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(
        json.dumps(body, sort_keys=True).encode(),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def from_error(exc: PaymentSystemsError, headers: dict[str, str] | None = None) -> Response:
    """Render any of this package's typed errors."""
    body = exc.to_problem()
    extra = {
        k: v for k, v in body.items() if k not in ("type", "title", "status", "detail", "code")
    }
    return problem(exc.http_status, exc.code, exc.message, headers=headers, **extra)
