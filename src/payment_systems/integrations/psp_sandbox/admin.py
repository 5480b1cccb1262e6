"""The sandbox's own control surface (JSON, not form): faults, duplicate counts, health.

``GET /_sandbox/charges/duplicates?metadata_key=K[&run_key=R&run=V]`` answers
the question a load test must ask the PSP, not us: did any logical payment
get charged twice? Charges are grouped by ``metadata[K]`` (the client's
idempotency key, which the load generator puts in the metadata), optionally
limited to one run (``metadata[R] == V``); every paid charge beyond the first
in a group is a duplicate charge. ``&list=1`` adds every key that was charged,
so an audit can compare them with the payments the merchant recorded.
"""

from __future__ import annotations

import json
from collections import Counter
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

    async def duplicates(request: Request) -> Response:
        try:
            account = account_for(_api_key(request))
            key = request.query_params.get("metadata_key")
            if not key:
                raise InvalidRequest("metadata_key is required, e.g. ?metadata_key=load_key")
            run_key, run = request.query_params.get("run_key"), request.query_params.get("run")
            groups: Counter[str] = Counter()
            with sb.store.tx() as conn:
                for _, charge in sb.store.find(conn, account, "charge"):
                    meta = charge.get("metadata") or {}
                    if not charge.get("paid") or key not in meta:
                        continue
                    if run_key and meta.get(run_key) != run:
                        continue
                    groups[str(meta[key])] += 1
            doubled = {k: n for k, n in groups.items() if n > 1}
            body = {
                "object": "sandbox.duplicates",
                "charges": sum(groups.values()),
                "keys": len(groups),
                "duplicate_charges": sum(n - 1 for n in doubled.values()),
                "examples": sorted(doubled)[:5],
            }
            if request.query_params.get("list") == "1":  # every key charged (lost-payment audits)
                body["charged_keys"] = sorted(groups)
            return JSONResponse(body)
        except SandboxError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    async def stats(_: Request) -> Response:
        return JSONResponse({"object": "sandbox.stats", "api_requests": sb.api_requests})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/charges/duplicates", duplicates, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
