"""The sandbox's own control surface (JSON, not form): faults, duplicate counts, health.

``GET /_sandbox/charges/duplicates?metadata_key=K[&run_key=R&run=V]`` answers
the question a load test must ask the PSP, not us: did any logical payment
get charged twice? Charges are grouped by ``metadata[K]`` (the client's
idempotency key, which the load generator puts in the metadata), optionally
limited to one run (``metadata[R] == V``); every paid charge beyond the first
in a group is a duplicate charge. ``&list=1`` adds every key that was charged,
so an audit can compare them with the payments the merchant recorded.

Webhook delivery under a model checker's control (form-encoded, like the
Stripe routes; parameters may also go in the query string):

| route | does |
|---|---|
| ``POST /_sandbox/webhooks/hold`` | queue the account's webhooks from now on, not send them |
| ``GET /_sandbox/webhooks/held`` | the held events, oldest first |
| ``POST /_sandbox/webhooks/release`` | send held events now: ``event`` ids, or ``order`` |
| ``POST /_sandbox/webhooks/resume`` | stop holding; what is held stays held |
| ``POST /_sandbox/webhooks/redeliver`` | send an event again (``event=evt_...``) |

``release`` takes ``event`` (repeatable, or a comma list: sent in that
order) or ``order=fifo|lifo|random`` (``random`` needs ``seed``), and
``duplicate=true`` to send each event twice; it answers after every endpoint
answered, with each attempt's status. Resuming does not flush the queue: a
burst of old events arriving while the checker asserts would be exactly the
nondeterminism the hold exists to remove, so held events go only when
released. The semantics of failures are in ``delivery.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payment_systems.integrations.psp_sandbox.delivery import RELEASE_ORDERS
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, SandboxError
from payment_systems.integrations.psp_sandbox.forms import decode, get_bool, get_int, get_str
from payment_systems.integrations.psp_sandbox.payment_intents import reject_unknown

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

    def control(
        action: Callable[[str, Request], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate as the key's account, run ``action``, answer in Stripe's error shape."""

        async def route(request: Request) -> Response:
            try:
                return JSONResponse(await action(account_for(_api_key(request)), request))
            except SandboxError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)

        return route

    async def hold(account: str, _: Request) -> dict[str, Any]:
        sb.faults.hold(account)
        sb.dispatcher.hold_pending(account)
        return _hold_state(account)

    async def resume(account: str, _: Request) -> dict[str, Any]:
        sb.faults.resume(account)
        return _hold_state(account)

    def _hold_state(account: str) -> dict[str, Any]:
        return {
            "object": "sandbox.webhook_hold",
            "holding": sb.faults.holding(account),
            "held": len(sb.dispatcher.held(account)),
        }

    async def held(account: str, _: Request) -> dict[str, Any]:
        return {
            "object": "list",
            "holding": sb.faults.holding(account),
            "data": sb.dispatcher.held(account),
        }

    async def release(account: str, request: Request) -> dict[str, Any]:
        raw = await _raw_params(request)
        params = decode(raw)
        reject_unknown(params, {"event", "order", "seed", "duplicate"})
        order = get_str(params, "order")
        if order is not None and order not in RELEASE_ORDERS:
            raise InvalidRequest("order must be fifo, lifo or random", param="order")
        sent = await sb.dispatcher.release(
            account,
            _event_ids(raw),
            order=order,
            seed=get_int(params, "seed"),
            duplicate=get_bool(params, "duplicate"),
        )
        return {"object": "list", "data": [s.as_json() for s in sent]}

    async def redeliver(account: str, request: Request) -> dict[str, Any]:
        raw = await _raw_params(request)
        reject_unknown(decode(raw), {"event"})
        ids = _event_ids(raw)
        if len(ids) != 1:
            raise InvalidRequest("pass exactly one event id: event=evt_...", param="event")
        sent = await sb.dispatcher.redeliver(account, ids[0])
        return {"object": "list", "data": [s.as_json() for s in sent]}

    async def stats(_: Request) -> Response:
        return JSONResponse({"object": "sandbox.stats", "api_requests": sb.api_requests})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/charges/duplicates", duplicates, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/webhooks/hold", control(hold), methods=["POST"]),
        Route("/_sandbox/webhooks/held", control(held), methods=["GET"]),
        Route("/_sandbox/webhooks/release", control(release), methods=["POST"]),
        Route("/_sandbox/webhooks/resume", control(resume), methods=["POST"]),
        Route("/_sandbox/webhooks/redeliver", control(redeliver), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]


async def _raw_params(request: Request) -> str:
    """The query string and the form body together, so ``?event=`` and a form both work."""
    body = (await request.body()).decode("utf-8")
    return "&".join(part for part in (request.url.query, body) if part)


def _event_ids(raw: str) -> list[str]:
    """Every ``event`` value, in order: ``event=a&event=b``, ``event=a,b`` or ``event[0]=a``.

    The sandbox's form decoder keeps the last of repeated keys, as Stripe's
    does; event ids are read from the raw pairs because their order is the
    delivery order the caller asked for.
    """
    ids: list[str] = []
    for key, value in parse_qsl(raw, keep_blank_values=True):
        if key == "event" or key.startswith("event["):
            ids += [part.strip() for part in value.split(",") if part.strip()]
    return ids
