"""``/_sandbox/faults`` and ``/healthz``: the sandbox's own control surface (JSON, not form)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, SandboxError

if TYPE_CHECKING:
    from payment_systems.integrations.psp_sandbox.app import Sandbox


def admin_routes(sb: Sandbox) -> list[Route]:
    """Routes that control the sandbox rather than imitate Stripe."""
    from payment_systems.integrations.psp_sandbox.app import _api_key, account_for

    async def faults(request: Request) -> Response:
        try:
            account = account_for(_api_key(request))
            if request.method == "POST":
                try:
                    spec = json.loads(await request.body() or b"{}")
                except json.JSONDecodeError as exc:
                    raise InvalidRequest(f"fault spec must be JSON: {exc}") from None
                if not isinstance(spec, dict):
                    raise InvalidRequest("fault spec must be a JSON object")
                return JSONResponse(sb.faults.add(account, spec).as_json())
            if request.method == "DELETE":
                sb.faults.clear(account)
            active = [f.as_json() for f in sb.faults.active(account)]
            return JSONResponse({"object": "list", "data": active})
        except SandboxError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
