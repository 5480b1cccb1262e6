"""The Payments API (FastAPI). Every POST is idempotent, per the IETF draft.

| Case | Answer | Stored for replay? |
|---|---|---|
| no ``Idempotency-Key``, or longer than 255 | 400 ``invalid_idempotency_key`` | no |
| same key, different body | 422 ``idempotency_key_reused`` | no |
| same key, first request still running | 409 ``request_in_progress`` + ``Retry-After`` | no |
| same key after completion | the stored status and body, byte for byte (1) | is the replay |
| Redis down | 503 ``idempotency_unavailable`` + ``Retry-After`` (2) | no |
| database pool empty, or a row lock held too long | 503 ``database_busy`` + ``Retry-After`` | no |
| invalid body, unknown currency, bad state | 4xx problem | no |
| success (201/200) | the payment | yes, 24 h |

1. with the header ``Idempotent-Replayed: true``.
2. never process without the lock: fail closed, and let the client retry; or, with
   ``IDEMPOTENCY_FALLBACK=sql``, take the lock in the database instead
   (`payment_systems.core.idempotency_fallback`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from payment_systems import __version__
from payment_systems.api.admission import AdmissionControl
from payment_systems.api.problems import PROBLEM_JSON, from_error, problem
from payment_systems.api.runtime import Runtime, build_runtime
from payment_systems.api.schemas import (
    CaptureBody,
    CreatePaymentBody,
    RefundBody,
    encode,
    payment_view,
)
from payment_systems.core.idempotency import (
    IdempotencyUnavailable,
    Outcome,
    StoredResponse,
    fingerprint,
    validate_key,
)
from payment_systems.core.payments import CreatePayment
from payment_systems.currencies import minor_units
from payment_systems.database.ledger_store import MerchantBalance, merchant_balances
from payment_systems.errors import PaymentSystemsError
from payment_systems.fraud.velocity import FraudBlocked
from payment_systems.money import Money

log = logging.getLogger(__name__)
Handler = Callable[[], tuple[int, dict[str, Any]]]


class RequestInvalid(PaymentSystemsError):
    code = "invalid_request"
    http_status = 400


class Unauthenticated(PaymentSystemsError):
    code = "unauthenticated"
    http_status = 401


class BodyTooLarge(PaymentSystemsError):
    code = "body_too_large"
    http_status = 413


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise RequestInvalid(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the body must be a JSON object")
    amount = data.get("amount")
    if isinstance(amount, float):
        raise RequestInvalid(
            f"amount must be an integer number of minor units (cents), not {amount!r}: "
            "send 1050 for $10.50",
            param="amount",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestInvalid(f"{where}: {first['msg']}", param=where) from None


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app; without ``runtime`` it builds one from the environment at start-up."""
    state: dict[str, Runtime] = {}

    def rt() -> Runtime:
        if "rt" not in state:
            state["rt"] = runtime or build_runtime()
        return state["rt"]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Connect before the first request, not during it: uvicorn accepts traffic
        # only after this, so a fresh (or recycled) worker is never handed requests
        # it would queue while it connects, and shed.
        await run_in_threadpool(rt)
        yield

    app = FastAPI(title="payment-systems Payments API", version=__version__, lifespan=lifespan)

    app.add_middleware(
        AdmissionControl,
        limit=lambda: rt().admission_limit,
        on_shed=lambda: rt().metrics.shed.inc(),
    )

    @app.exception_handler(PaymentSystemsError)
    async def typed_error(_: Request, exc: PaymentSystemsError) -> Response:
        rt().metrics.errors.labels(exc.code).inc()
        headers = {"Retry-After": "1"} if exc.http_status == 503 else None
        return from_error(exc, headers)

    def database_busy(detail: str) -> Response:
        rt().metrics.errors.labels("database_busy").inc()
        return problem(503, "database_busy", detail, headers={"Retry-After": "1"})

    @app.exception_handler(sa_exc.TimeoutError)
    async def pool_exhausted(_: Request, exc: sa_exc.TimeoutError) -> Response:
        log.warning("database connection pool exhausted: %s", exc)
        return database_busy(
            "every database connection is in use; nothing was changed, retry after the "
            "Retry-After delay with the same Idempotency-Key"
        )

    @app.exception_handler(sa_exc.OperationalError)
    async def database_error(request: Request, exc: sa_exc.OperationalError) -> Response:
        # PostgreSQL's lock_timeout (55P03): a lock held elsewhere (a migration, a
        # runaway transaction) would otherwise hold this request, and its pooled
        # connection, for as long as that lock lives. The transaction rolled back.
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            log.warning("database lock wait timed out: %s", exc.orig)
            return database_busy(
                "a database lock was held too long and this step was rolled back; retry "
                "after the Retry-After delay with the same Idempotency-Key to get the outcome"
            )
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        rt().metrics.errors.labels("internal_error").inc()
        return problem(500, "internal_error", "an unexpected error occurred; it has been logged")

    async def read_body(request: Request) -> bytes:
        limit = rt().max_body_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        return body

    def merchant(request: Request) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        merchant_id = rt().merchant_for(key) if scheme.lower() == "bearer" and key else None
        if merchant_id is None:
            raise Unauthenticated(
                "send your API key as 'Authorization: Bearer sk_test_…' "
                "(create one with `payment-systems merchants create NAME`)"
            )
        return merchant_id

    def idempotent(request: Request, merchant_id: str, body: bytes, handler: Handler) -> Response:
        key = validate_key(request.headers.get("idempotency-key"))
        if not rt().idempotency_layer:  # the overhead benchmark's baseline: no Redis at all
            status, payload = handler()
            media = PROBLEM_JSON if status >= 400 else "application/json"
            return Response(encode(payload), status_code=status, media_type=media)
        backend = rt().idempotency
        begun = backend.begin(merchant_id, key, fingerprint(request.method, request.url.path, body))
        if begun.outcome is Outcome.REPLAY:
            rt().metrics.replays.inc()
            assert begun.response is not None
            stored = begun.response
            return Response(
                stored.body,
                status_code=stored.status,
                media_type=stored.content_type,
                headers={"Idempotent-Replayed": "true"},
            )
        if begun.outcome is Outcome.MISMATCH:
            return problem(
                422, "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new request",
            )  # fmt: skip
        if begun.outcome is Outcome.IN_PROGRESS:
            return problem(
                409, "request_in_progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        try:
            status, payload = handler()
        except BaseException:
            # nothing stored: a retry is safe (and if the store is gone, so is the lock)
            with contextlib.suppress(IdempotencyUnavailable):
                backend.release(merchant_id, key, begun.token)
            raise
        body_bytes = encode(payload)
        media = PROBLEM_JSON if status >= 400 else "application/json"
        try:
            kept = backend.complete(
                merchant_id, key, begun.token, StoredResponse(status, body_bytes, media)
            )
        except IdempotencyUnavailable as exc:
            # The work is done and committed; only the cached reply is lost. A retry
            # re-runs the handler, which finds this payment by (merchant, key) in the
            # database and answers with it, so the client still gets the truth.
            log.warning("response for key %s not stored: %s", key, exc)
        else:
            if not kept:
                # Fenced out: our lock expired mid-request (a PSP call that outlived
                # LOCK_TTL_S) and a retry took the key over, so the store refused our
                # response. Say so: it means the lock TTL is too short for the work.
                # The answer is still true (the work is committed, and a retry finds
                # the payment by (merchant, key) in the database), so the client gets it.
                rt().metrics.stale_completions.inc()
                log.warning(
                    "response for key %s not stored: lock token %d is stale, another "
                    "request took the key over while this one ran",
                    key,
                    begun.token,
                )
        return Response(body_bytes, status_code=status, media_type=media)

    @app.post("/v1/payments", status_code=201)
    async def create_payment(request: Request) -> Response:
        leak = rt().leak
        if leak is not None:  # chaos only: the memory-leak scenario's injected fault
            leak.maybe_leak()
        body = await read_body(request)
        merchant_id = await run_in_threadpool(merchant, request)
        parsed: CreatePaymentBody = _parse(CreatePaymentBody, body)
        minor_units(parsed.currency)  # UnknownCurrency -> 400 before anything is locked
        command = CreatePayment(
            Money(parsed.amount, parsed.currency),
            parsed.payment_method,
            parsed.capture_method,
            parsed.description,
            parsed.metadata,
            client_ip=parsed.customer_ip,  # the shopper's, not our caller's (a server)
            risk_score=parsed.risk_score,
            fingerprint=fingerprint(request.method, request.url.path, body),
        )
        key = request.headers.get("idempotency-key") or ""

        def handler() -> tuple[int, dict[str, Any]]:
            try:
                payment = rt().service.create(merchant_id, key, command)
            except FraudBlocked as exc:  # a recorded outcome, stored like a decline
                rt().metrics.payments.labels("blocked").inc()
                return 402, exc.to_problem()
            rt().metrics.payments.labels(payment.status).inc()
            return 201, payment_view(payment)

        with rt().metrics.latency.time():
            return await run_in_threadpool(idempotent, request, merchant_id, body, handler)

    @app.get("/v1/payments/{payment_id}")
    async def get_payment(payment_id: str, request: Request) -> Response:
        merchant_id = await run_in_threadpool(merchant, request)
        payment = await run_in_threadpool(rt().service.get, merchant_id, payment_id)
        return Response(encode(payment_view(payment)), media_type="application/json")

    @app.post("/v1/payments/{payment_id}/capture")
    async def capture_payment(payment_id: str, request: Request) -> Response:
        body = await read_body(request)
        merchant_id = await run_in_threadpool(merchant, request)
        parsed: CaptureBody = _parse(CaptureBody, body)

        def handler() -> tuple[int, dict[str, Any]]:
            current = rt().service.get(merchant_id, payment_id)
            amount = None if parsed.amount is None else Money(parsed.amount, current.currency)
            return 200, payment_view(rt().service.capture(merchant_id, payment_id, amount))

        return await run_in_threadpool(idempotent, request, merchant_id, body, handler)

    @app.post("/v1/payments/{payment_id}/cancel")
    async def cancel_payment(payment_id: str, request: Request) -> Response:
        """Void an authorization that was not captured; idempotent like every POST."""
        body = await read_body(request)
        merchant_id = await run_in_threadpool(merchant, request)

        def handler() -> tuple[int, dict[str, Any]]:
            return 200, payment_view(rt().service.cancel(merchant_id, payment_id))

        return await run_in_threadpool(idempotent, request, merchant_id, body, handler)

    @app.get("/v1/balance")
    async def balance(request: Request) -> Response:
        """This merchant's balance, from the ledger's journal entries (Stripe's shape)."""
        merchant_id = await run_in_threadpool(merchant, request)

        def read() -> list[MerchantBalance]:
            with rt().sessions() as session:
                return merchant_balances(session, int(time.time()), merchant_id)

        rows = await run_in_threadpool(read)
        payload = {
            "object": "balance",
            "livemode": False,
            "available": [{"amount": b.available, "currency": b.currency.lower()} for b in rows],
            "pending": [{"amount": b.pending, "currency": b.currency.lower()} for b in rows],
        }
        return Response(encode(payload), media_type="application/json")

    @app.post("/v1/refunds")
    async def refund(request: Request) -> Response:
        body = await read_body(request)
        merchant_id = await run_in_threadpool(merchant, request)
        parsed: RefundBody = _parse(RefundBody, body)
        key = request.headers.get("idempotency-key") or ""

        def handler() -> tuple[int, dict[str, Any]]:
            current = rt().service.get(merchant_id, parsed.payment)
            amount = None if parsed.amount is None else Money(parsed.amount, current.currency)
            payment, refund_id, value = rt().service.refund(
                merchant_id, parsed.payment, key, amount
            )
            return 201, {
                "id": refund_id,
                "object": "refund",
                "amount": value.amount_minor,
                "currency": value.currency.lower(),
                "status": rt().service.refund_status(refund_id),
                "payment": payment_view(payment),
            }

        return await run_in_threadpool(idempotent, request, merchant_id, body, handler)

    async def read_webhook_body(request: Request) -> bytes:
        """The body, refused with 413 once it passes ``max_webhook_bytes``, never buffered whole.

        Anyone can post here: the signature is what authenticates, and checking it
        needs the body. So a declared Content-Length over the cap is refused before a
        byte is read, and a body without one (chunked) is counted as it streams and
        cut off at the cap, instead of `request.body()` buffering whatever arrives.
        """
        limit = rt().max_webhook_bytes
        too_large = f"a webhook body is at most {limit} bytes; PSP events are far smaller"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(too_large, limit=limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(too_large, limit=limit)
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/v1/webhooks/psp")
    async def psp_webhook(request: Request) -> Response:
        """Signed PSP events: 2xx once applied (or already applied); 400 if the signature fails."""
        body = await read_webhook_body(request)
        signature = request.headers.get("stripe-signature", "")
        result = await run_in_threadpool(rt().webhooks.handle_stripe, body, signature)
        rt().metrics.webhooks.labels(result.outcome).inc()
        if result.outcome != "duplicate" and result.created:
            rt().metrics.webhook_lag.observe(max(0.0, time.time() - result.created))
        return JSONResponse({"received": True, "event": result.event_id, "outcome": result.outcome})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: the business metrics and the machinery's health."""
        body = await run_in_threadpool(rt().metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Response:
        checks = {"database": "ok", "redis": "ok"}
        try:
            await run_in_threadpool(rt().redis.ping)
        except Exception:
            checks["redis"] = "down: payment creation answers 503, reads still work"
        return JSONResponse({"status": "ok", "version": __version__, **checks})

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness: can this worker take a payment now? 503 with the reasons if not.

        ``/healthz`` says the process is alive (restart it if not); ``/readyz``
        says its dependencies answer (route traffic elsewhere if not). Chaos
        runs and load balancers poll it: it is how a fault is *detected*.
        """
        checks: dict[str, str] = {}

        def database() -> None:
            with rt().sessions() as session:
                session.execute(sa.text("SELECT 1"))

        for name, probe in (("database", database), ("redis", rt().redis.ping)):
            try:
                await run_in_threadpool(probe)
                checks[name] = "ok"
            except Exception as exc:  # any failure is the answer, not an error
                checks[name] = f"down: {type(exc).__name__}"
        read_breaker = rt().metrics.breaker
        breaker = str(read_breaker()) if read_breaker is not None else "unknown"
        checks["psp_circuit"] = "ok" if breaker in ("closed", "unknown") else breaker
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "degraded", **checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "1"},
        )

    return app
