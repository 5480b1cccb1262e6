"""The sandbox ASGI app: auth, faults, idempotency, then the endpoint, in that order.

Request pipeline, as at Stripe:

1. **Auth.** ``Authorization: Bearer sk_test_…``; each key is its own account.
2. **Faults.** Latency, 429s and "before" errors happen before anything else.
3. **Idempotency** (POST with ``Idempotency-Key``). A new key is claimed; a
   completed one replays its stored status and body with
   ``Idempotent-Replayed: true``; other parameters give 400
   ``idempotency_error``; a key still in flight gives 409.
4. **The endpoint**, in one database transaction.
5. **Store the result** under the key. Validation errors (4xx other than
   card declines) are *not* stored, because the endpoint never started; card
   declines and 5xx are, so a retry sees exactly what the first attempt saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payment_systems.integrations.psp_sandbox import (
    clock,
    disputes,
    payment_intents,
    refunds,
    webhook_endpoints,
)
from payment_systems.integrations.psp_sandbox.context import Ctx, random_id
from payment_systems.integrations.psp_sandbox.delivery import Dispatcher, RetryPolicy
from payment_systems.integrations.psp_sandbox.errors import (
    CardDeclined,
    IdempotencyConflict,
    IdempotencyMismatch,
    InjectedFault,
    InvalidRequest,
    NotFound,
    SandboxError,
    Unauthorized,
)
from payment_systems.integrations.psp_sandbox.faults import FaultBook
from payment_systems.integrations.psp_sandbox.forms import decode, get_int, get_str
from payment_systems.integrations.psp_sandbox.listing import expand, page, search
from payment_systems.integrations.psp_sandbox.store import Obj, Store, fingerprint

Handler = Callable[[Ctx, dict[str, Any], dict[str, str]], Obj]
MAX_KEY_LENGTH = 255


def account_for(api_key: str) -> str:
    """One sandbox account per secret key: isolation without sign-up."""
    return "acct_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        import base64

        value = base64.b64decode(value).decode().split(":", 1)[0]
    elif scheme.lower() != "bearer":
        raise Unauthorized(
            "You did not provide an API key. Provide it in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer sk_test_...')."
        )
    if not value.startswith("sk_test_") or len(value) < 12:
        shown = value[:8] + "*" * max(0, len(value) - 12) + value[-4:]
        raise Unauthorized(f"Invalid API Key provided: {shown}; the sandbox takes sk_test_ keys.")
    return value


class Sandbox:
    """Holds the store, the faults and the webhook dispatcher behind one Starlette app."""

    def __init__(
        self,
        database_url: str,
        *,
        faults: FaultBook | None = None,
        retry_policy: RetryPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = random_id,
    ) -> None:
        self.store = Store(database_url, wall_clock=wall_clock)
        self.api_requests = 0
        self.faults = faults or FaultBook()
        self.new_id = new_id
        self.dispatcher = Dispatcher(self.store, retry_policy, holding=self.faults.holding)

    # -- pipeline --------------------------------------------------------------

    def endpoint(self, handler: Handler, *, idempotent: bool) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            self.api_requests += 1  # for load tests: PSP calls per payment
            request_id = self.new_id("req")
            try:
                account = account_for(_api_key(request))
                await self._request_faults(account, request.url.path, request.method)
                body = await request.body()
                params = decode(body if request.method == "POST" else request.url.query)
                key = request.headers.get("idempotency-key") if idempotent else None
                if key is None:
                    status, result = self._execute(
                        handler, account, params, request, request_id, None
                    )
                    status, result = self._after_faults(account, request, status, result)
                else:
                    return await self._idempotent(
                        handler, account, params, request, request_id, key
                    )
            except SandboxError as exc:
                return _error(exc, request_id)
            return await self._respond(account, request, status, result, request_id)

        return run

    async def _idempotent(
        self,
        handler: Handler,
        account: str,
        params: dict[str, Any],
        request: Request,
        request_id: str,
        key: str,
    ) -> Response:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters long.")
        begun = self.store.begin_idempotent(
            account, key, fingerprint(request.method, request.url.path, params)
        )
        if begun.outcome == "mismatch":
            raise IdempotencyMismatch(key)
        if begun.outcome == "in_flight":
            raise IdempotencyConflict(key)
        if begun.outcome == "replay":
            assert begun.status is not None
            assert begun.body is not None
            return Response(
                begun.body,
                status_code=begun.status,
                media_type="application/json",
                headers={
                    "Idempotent-Replayed": "true",
                    "Idempotency-Key": key,
                    "Request-Id": request_id,
                },
            )
        try:
            await self._processing_latency(account, request.url.path)
            status, result = self._execute(handler, account, params, request, request_id, key)
            status, result = self._after_faults(account, request, status, result)
        except (InvalidRequest, NotFound) as exc:
            self.store.release_idempotent(account, key)  # never started: nothing to remember
            return _error(exc, request_id)
        except BaseException:
            self.store.release_idempotent(account, key)
            raise
        self.store.complete_idempotent(account, key, status, json.dumps(result))
        response = await self._respond(account, request, status, result, request_id)
        response.headers["Idempotency-Key"] = key
        return response

    def _execute(
        self,
        handler: Handler,
        account: str,
        params: dict[str, Any],
        request: Request,
        request_id: str,
        key: str | None,
    ) -> tuple[int, Obj]:
        now = self.store.now(account)
        webhooks = self.faults.webhook_options(account)
        with self.store.tx() as conn:
            ctx = Ctx(
                self.store,
                conn,
                account,
                now,
                new_id=self.new_id,
                request_id=request_id,
                idempotency_key=key,
                delay_webhooks_s=webhooks.delay_s,
                duplicate_webhooks=webhooks.duplicate,
                reorder_window_s=webhooks.reorder_window_s,
                hold_webhooks=webhooks.hold,
            )
            try:
                obj = handler(ctx, params, dict(request.path_params))
            except CardDeclined as exc:  # the failed charge is real: commit it
                return exc.status, exc.body()
            return 200, expand(ctx, obj, params)

    async def _request_faults(self, account: str, path: str, method: str) -> None:
        for fault in self.faults.active(account, path, method):
            if not self.faults.fires(fault):
                continue
            if fault.kind == "latency" and fault.phase == "before":
                await asyncio.sleep(self.faults.latency_s(fault))
            elif fault.kind == "rate_limit":
                raise InjectedFault(
                    429,
                    "Too many requests hit the API too quickly (sandbox fault).",
                    headers={"Retry-After": str(fault.retry_after_s)},
                )
            elif fault.kind == "error" and fault.phase == "before":
                raise InjectedFault(fault.status, "An unknown error occurred (sandbox fault).")
            elif fault.kind == "timeout" and fault.phase == "before":
                await asyncio.sleep(fault.hold_s)
                raise InjectedFault(504, "The request timed out before it was processed.")

    async def _processing_latency(self, account: str, path: str) -> None:
        """Latency with ``phase=after``: the key is claimed, the card network is slow.

        This is the window in which a concurrent request with the same key
        finds it in flight and gets a 409.
        """
        for fault in self.faults.active(account, path):
            if fault.kind == "latency" and fault.phase == "after" and self.faults.fires(fault):
                await asyncio.sleep(self.faults.latency_s(fault))

    def _after_faults(
        self, account: str, request: Request, status: int, result: Obj
    ) -> tuple[int, Obj]:
        for fault in self.faults.active(account, request.url.path, request.method):
            if fault.kind == "error" and fault.phase == "after" and self.faults.fires(fault):
                error = InjectedFault(fault.status, "An unknown error occurred (sandbox fault).")
                return error.status, error.body()
        return status, result

    async def _respond(
        self, account: str, request: Request, status: int, result: Obj, request_id: str
    ) -> Response:
        for fault in self.faults.active(account, request.url.path, request.method):
            if fault.kind == "timeout" and fault.phase == "after" and self.faults.fires(fault):
                await asyncio.sleep(fault.hold_s)  # the work is done; the client gives up waiting
        return JSONResponse(result, status_code=status, headers={"Request-Id": request_id})

    # -- the app ---------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application, with the webhook dispatcher running in its lifespan."""

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            task = asyncio.create_task(self.dispatcher.run())
            try:
                yield
            finally:
                self.dispatcher.stop()
                await task

        return Starlette(routes=routes(self), lifespan=lifespan)


def _error(exc: SandboxError, request_id: str) -> Response:
    headers = {"Request-Id": request_id, **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _by_id(kind: str) -> Handler:
    def handler(ctx: Ctx, _params: dict[str, Any], path: dict[str, str]) -> Obj:
        obj = ctx.get(kind, path["id"])
        if obj is None:
            raise NotFound(kind, path["id"])
        return obj

    return handler


def _list(kind: str, url: str, *filters: str) -> Handler:
    def handler(ctx: Ctx, params: dict[str, Any], _path: dict[str, str]) -> Obj:
        wanted = {f: get_str(params, f) for f in filters if f not in ("payout",)}
        wanted = {f: v for f, v in wanted.items() if v is not None}
        return page(
            ctx,
            kind,
            params,
            url,
            payout=get_str(params, "payout") if "payout" in filters else None,
            keep=lambda obj: all(obj.get(f) == v for f, v in wanted.items()),
        )

    return handler


def _advance(ctx: Ctx, params: dict[str, Any], _path: dict[str, str]) -> Obj:
    seconds = get_int(params, "seconds", required=True)
    assert seconds is not None
    return clock.advance(ctx, seconds)


def _clock(ctx: Ctx, _params: dict[str, Any], _path: dict[str, str]) -> Obj:
    return {"object": "sandbox.clock", "now": ctx.now}


def _authenticate(ctx: Ctx, params: dict[str, Any], path: dict[str, str]) -> Obj:
    result = get_str(params, "result") or "succeed"
    if result not in ("succeed", "fail"):
        raise InvalidRequest("result must be succeed or fail", param="result")
    return payment_intents.authenticate(ctx, path["id"], result == "succeed")


def routes(sb: Sandbox) -> list[Route]:
    """The URL map; every endpoint goes through the same pipeline."""
    from payment_systems.integrations.psp_sandbox.admin import admin_routes
    from payment_systems.integrations.psp_sandbox.exchange_rates import MID_PER_USD, rates_json

    async def exchange_rates(request: Request) -> Response:
        request_id = sb.new_id("req")
        try:
            account = account_for(_api_key(request))
            await sb._request_faults(account, request.url.path, "GET")
            code = request.path_params["currency"].lower()
            if code not in MID_PER_USD:
                raise NotFound("exchange_rate", code, "currency")
        except SandboxError as exc:
            return _error(exc, request_id)
        body = rates_json(code, sb.store.now(account))
        return Response(body, media_type="application/json", headers={"Request-Id": request_id})

    def post(path: str, handler: Handler, idempotent: bool = True) -> Route:
        return Route(path, sb.endpoint(handler, idempotent=idempotent), methods=["POST"])

    def get(path: str, handler: Handler) -> Route:
        return Route(path, sb.endpoint(handler, idempotent=False), methods=["GET"])

    pi = payment_intents
    return [
        post("/v1/payment_intents", lambda c, p, _: pi.create(c, p)),
        get("/v1/payment_intents", _list("payment_intent", "/v1/payment_intents", "status")),
        get(
            "/v1/payment_intents/search",
            lambda c, p, _: search(c, "payment_intent", p, "/v1/payment_intents/search"),
        ),
        get("/v1/payment_intents/{id}", lambda c, _p, a: pi.get(c, a["id"])),
        post("/v1/payment_intents/{id}/confirm", lambda c, p, a: pi.confirm(c, a["id"], p)),
        post("/v1/payment_intents/{id}/capture", lambda c, p, a: pi.capture(c, a["id"], p)),
        post("/v1/payment_intents/{id}/cancel", lambda c, p, a: pi.cancel(c, a["id"], p)),
        get("/v1/charges", _list("charge", "/v1/charges", "payment_intent")),
        get("/v1/charges/{id}", _by_id("charge")),
        post("/v1/refunds", lambda c, p, _: refunds.create(c, p)),
        get("/v1/refunds", _list("refund", "/v1/refunds", "charge", "payment_intent")),
        get("/v1/refunds/{id}", lambda c, _p, a: refunds.get(c, a["id"])),
        get(
            "/v1/balance_transactions",
            _list("balance_transaction", "/v1/balance_transactions", "payout", "type", "source"),
        ),
        get("/v1/balance_transactions/{id}", _by_id("balance_transaction")),
        get("/v1/payouts", _list("payout", "/v1/payouts", "status")),
        get("/v1/payouts/{id}", _by_id("payout")),
        get("/v1/disputes", _list("dispute", "/v1/disputes", "charge", "payment_intent")),
        get("/v1/disputes/{id}", lambda c, _p, a: disputes.get(c, a["id"])),
        post("/v1/disputes/{id}", lambda c, p, a: disputes.update(c, a["id"], p)),
        post("/v1/disputes/{id}/close", lambda c, _p, a: disputes.close(c, a["id"])),
        post("/v1/webhook_endpoints", lambda c, p, _: webhook_endpoints.create(c, p)),
        get("/v1/webhook_endpoints", _list("webhook_endpoint", "/v1/webhook_endpoints")),
        get("/v1/webhook_endpoints/{id}", _by_id("webhook_endpoint")),
        Route(
            "/v1/webhook_endpoints/{id}",
            sb.endpoint(lambda c, _p, a: webhook_endpoints.delete(c, a["id"]), idempotent=False),
            methods=["DELETE"],
        ),
        Route("/v1/exchange_rates/{currency}", exchange_rates, methods=["GET"]),
        get("/v1/events", _list("event", "/v1/events", "type")),
        get("/v1/events/{id}", _by_id("event")),
        get("/_sandbox/clock", _clock),
        post("/_sandbox/clock/advance", _advance, idempotent=False),
        post("/_sandbox/payment_intents/{id}/authenticate", _authenticate, idempotent=False),
        *admin_routes(sb),
    ]


def create_app(database_url: str, **options: Any) -> Starlette:
    """Build the sandbox app on ``database_url`` (SQLite file by default in the CLI)."""
    return Sandbox(database_url, **options).app()
