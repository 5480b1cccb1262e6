"""PSP client: the official ``stripe`` SDK, wrapped so a retry can never double-charge.

What the wrapper adds, and the failure each part prevents:

* **One idempotency key per (merchant, payment, operation)**, derived with a
  hash *before* the retry loop and reused by every attempt, even after our
  process restarts. A retry after a lost response is replayed by the PSP, not
  executed twice.
* **Bounded retries** on 409, 429 (honouring ``Retry-After``), 5xx and
  network errors only, with capped exponential backoff and jitter.
* **An overall deadline per operation** (`RetryPolicy.deadline_s`, 25 s), so
  all the attempts and pauses of one call end before the caller's
  idempotency lock (30 s) expires; `worst_case_psp_seconds` does the sums.
* **A circuit breaker**, so a PSP outage fails fast instead of tying up
  every worker for the full timeout.
* **A shared rate limiter**, so the fleet stays under the PSP's limit.
* **Unknown outcomes are not failures.** A timeout after the request left
  (or a final 5xx) raises `PSPOutcomeUnknown`; `PSPClient.resolve_unknown`
  later asks the PSP what happened, as Kill Bill's janitor does. Reporting
  "failed" there would let the customer pay again for a charge that went through.

Point it at real Stripe test mode with ``PSP_API_BASE=https://api.stripe.com``
and ``PSP_API_KEY=sk_test_…``; the sandbox is the default.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe

from payment_systems.errors import PaymentSystemsError
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import CircuitBreaker, CircuitOpen
from payment_systems.patterns.rate_limit import RateLimited, TokenBucket

T = TypeVar("T")

DEFAULT_API_BASE = "http://127.0.0.1:12111"
DEFAULT_API_KEY = "sk_test_payment_systems_sandbox"
# The fee is on the charge's balance transaction; expanding it saves a second round trip.
EXPAND = ("latest_charge.balance_transaction",)
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
# 5 s under the API's idempotency lock (LOCK_TTL_S, 30 s): the lock is taken before
# our own writes and released after them, and they need that margin around the PSP call.
DEFAULT_DEADLINE_S = 25.0


class PSPError(PaymentSystemsError):
    """Base class for PSP failures; ``operation`` and ``payment_id`` say which call."""

    code = "psp_error"
    http_status = 502


class PSPDeclined(PSPError):
    """The card was declined: a final answer, never retried."""

    code = "card_declined"
    http_status = 402

    def __init__(self, message: str, *, decline_code: str | None, intent_id: str | None) -> None:
        super().__init__(message, decline_code=decline_code, payment_intent=intent_id)
        self.decline_code = decline_code
        self.intent_id = intent_id


class PSPRequestError(PSPError):
    """The PSP rejected our request as invalid: a bug on our side, not retried."""

    code = "psp_request_invalid"


class PSPUnavailable(PSPError):
    """The PSP could not be reached (or the breaker is open); nothing was charged."""

    code = "psp_unavailable"
    http_status = 503


class PSPOutcomeUnknown(PSPError):
    """The request may have been processed. Resolve it; do not report it as failed."""

    code = "psp_outcome_unknown"
    http_status = 504

    def __init__(self, operation: str, payment_id: str, idempotency_key: str, cause: str) -> None:
        super().__init__(
            f"{operation} for {payment_id} may or may not have happened ({cause}); "
            "call resolve_unknown() to ask the PSP, and retry only with the same key",
            operation=operation,
            payment_id=payment_id,
        )
        self.operation = operation
        self.payment_id = payment_id
        self.idempotency_key = idempotency_key


def psp_idempotency_key(merchant_id: str, payment_id: str, operation: str) -> str:
    """The PSP idempotency key for one operation on one payment: same inputs, same key.

    Examples:
        >>> psp_idempotency_key("m_1", "pay_1", "authorize") == psp_idempotency_key(
        ...     "m_1", "pay_1", "authorize")
        True
        >>> psp_idempotency_key("m_1", "pay_1", "authorize")[:4]
        'psk_'
    """
    digest = hashlib.sha256(f"{merchant_id}\x1f{payment_id}\x1f{operation}".encode()).hexdigest()
    return f"psk_{digest[:48]}"


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures to retry, and how long to wait: one readable, bounded function each.

    Backoff is ``min(base_s * 2**(attempt-1), cap_s)`` scaled by a jitter in
    [0.5, 1), so a fleet that failed together does not retry together. A
    ``Retry-After`` from the server wins, up to ``max_retry_after_s``.

    ``deadline_s`` bounds the whole operation, every attempt and pause
    included. Without it, four attempts that each wait out the 2 s connect and
    10 s read timeouts, plus the backoffs, take 51.5 s, and 138 s if the PSP
    asks for 30 s pauses: far past the 30 s idempotency lock the API holds
    around the call, so a client's retry would get in while the first request
    is still charging. `PSPClient.call` starts no attempt, and sleeps no pause,
    that would end past the deadline. ``min_read_s`` is the least read time
    worth an attempt: one given less would mostly time out, and turn a clean
    "unavailable" (nothing charged) into an "unknown" to resolve.
    """

    max_attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 5.0
    max_retry_after_s: float = 30.0
    deadline_s: float = DEFAULT_DEADLINE_S
    min_read_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError("need max_attempts >= 1 and 0 <= base_s <= cap_s")
        if self.deadline_s <= 0 or self.min_read_s < 0:
            raise ValueError("need deadline_s > 0 and min_read_s >= 0")

    def should_retry(self, status: int | None) -> bool:
        """Retry 409 (in flight), 429 (throttled), 5xx and network errors (``None``)."""
        return status is None or status in (409, 429) or status >= 500

    def jitter(self) -> float:
        """Isolated so tests can pin it."""
        return 0.5 + self.rng.random() / 2

    def backoff(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        return float(min(self.base_s * 2 ** (attempt - 1), self.cap_s)) * self.jitter()

    def max_backoff(self, attempt: int) -> float:
        """The longest `backoff` after attempt ``attempt`` without ``Retry-After`` (jitter 1)."""
        return float(min(self.base_s * 2 ** (attempt - 1), self.cap_s))


def worst_case_psp_seconds(
    policy: RetryPolicy,
    connect_s: float = CONNECT_TIMEOUT_S,
    read_s: float = READ_TIMEOUT_S,
    *,
    retry_after_s: float | None = None,
    deadline: bool = True,
) -> float:
    """The longest one PSP operation can take: the figure the idempotency lock must outlive.

    Every attempt waits out its full connect and read timeouts, and every pause
    is the longest backoff (or ``retry_after_s``, when the PSP sends
    ``Retry-After`` each time, capped at ``max_retry_after_s``)::

        max_attempts x (connect_s + read_s) + the pauses between them

    With ``deadline=True`` (how `PSPClient` runs), the call ends by
    ``deadline_s``: each attempt's read timeout is cut to the time left, and
    an attempt or pause that would end later is not started.

    Examples:
        >>> worst_case_psp_seconds(RetryPolicy(), 2.0, 10.0, deadline=False)
        51.5
        >>> worst_case_psp_seconds(RetryPolicy(), 2.0, 10.0, retry_after_s=30, deadline=False)
        138.0
        >>> worst_case_psp_seconds(RetryPolicy(), 2.0, 10.0)
        25.0
    """
    pauses = range(1, policy.max_attempts)
    if retry_after_s is None:
        waiting = sum(policy.max_backoff(attempt) for attempt in pauses)
    else:
        waiting = len(pauses) * min(retry_after_s, policy.max_retry_after_s)
    total = policy.max_attempts * (connect_s + read_s) + waiting
    return min(total, policy.deadline_s) if deadline else total


class _DeadlineRequestsClient(stripe.RequestsClient):
    """stripe's `RequestsClient`, with a read timeout that one thread can shorten per attempt.

    The SDK takes one ``(connect, read)`` timeout for the client's lifetime and
    passes ``self._timeout`` to every request. Computing that attribute from a
    per-thread cap lets `PSPClient.call` give an attempt only the time its
    deadline leaves, without rebuilding the client (and its pooled
    connections), and without one thread's cap leaking into another's
    (`PSPClient.capture_many` runs operations concurrently).
    """

    def __init__(self, connect_s: float, read_s: float) -> None:
        self._cap = threading.local()
        super().__init__(timeout=(connect_s, read_s))

    @property
    def _timeout(self) -> tuple[float, float]:
        cap: float | None = getattr(self._cap, "read_s", None)
        read = self.read_s if cap is None else min(cap, self.read_s)
        return (self.connect_s, read)

    @_timeout.setter
    def _timeout(self, value: float | tuple[float, float]) -> None:
        self.connect_s, self.read_s = value if isinstance(value, tuple) else (value, value)

    @contextmanager
    def read_timeout_at_most(self, seconds: float) -> Iterator[None]:
        """Cap this thread's read timeout while the block runs."""
        self._cap.read_s = seconds
        try:
            yield
        finally:
            self._cap.read_s = None


def _was_sent(exc: BaseException) -> bool:
    """False only when the connection was never made (refused, connect timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name in ("ConnectTimeout", "NewConnectionError", "ConnectionRefusedError"):
            return False
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return not ("NewConnectionError" in text or "Connection refused" in text)


@dataclass(frozen=True)
class CaptureRequest:
    """One capture in a batch for `PSPClient.capture_many`."""

    merchant_id: str
    payment_id: str
    intent_id: str
    amount: Money | None = None


class PSPClient:
    """Payments through the official SDK, with retries, a breaker and a rate limiter."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        api_base: str = DEFAULT_API_BASE,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: TokenBucket | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key.startswith(("sk_test_", "sk_live_", "rk_")):
            raise ValueError("api_key must be a Stripe secret key (sk_test_... for the sandbox)")
        self.http = _DeadlineRequestsClient(connect_timeout_s, read_timeout_s)
        self.stripe = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=0,  # we retry ourselves, with our key and our breaker
            http_client=self.http,
        )
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.api_base = api_base
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(f"psp:{api_base}")
        self.limiter = limiter
        self.sleep = sleep
        self.clock = clock
        self.attempts = 0  # total HTTP attempts made, for tests and metrics

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> PSPClient:
        """Configure from ``PSP_API_BASE`` and ``PSP_API_KEY`` (the sandbox by default)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("PSP_API_KEY") or DEFAULT_API_KEY,
            env.get("PSP_API_BASE") or DEFAULT_API_BASE,
            **options,
        )

    # -- operations --------------------------------------------------------------

    def authorize(
        self,
        *,
        merchant_id: str,
        payment_id: str,
        amount: Money,
        payment_method: str,
        capture: bool = True,
        metadata: Mapping[str, str] | None = None,
        three_d_secure: bool = False,
    ) -> stripe.PaymentIntent:
        """Create and confirm a PaymentIntent; ``capture=False`` only authorizes.

        ``three_d_secure=True`` asks the issuer to challenge the cardholder: the
        intent comes back ``requires_action`` until they authenticate.
        """
        params: dict[str, Any] = {
            "amount": amount.amount_minor,
            "currency": amount.currency.lower(),
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": "automatic" if capture else "manual",
            "metadata": {**(metadata or {}), "payment_id": payment_id, "merchant_id": merchant_id},
            "expand": list(EXPAND),
        }
        if three_d_secure:
            params["payment_method_options"] = {"card": {"request_three_d_secure": "any"}}
        key = psp_idempotency_key(merchant_id, payment_id, "authorize")
        return self.call(
            "authorize",
            payment_id,
            key,
            lambda o: self.stripe.v1.payment_intents.create(params=params, options=o),  # type: ignore[arg-type]
        )

    def capture(
        self, *, merchant_id: str, payment_id: str, intent_id: str, amount: Money | None = None
    ) -> stripe.PaymentIntent:
        """Capture an authorization, fully or (with ``amount``) partly."""
        params: dict[str, Any] = {"expand": list(EXPAND)}
        if amount is not None:
            params["amount_to_capture"] = amount.amount_minor
        key = psp_idempotency_key(merchant_id, payment_id, "capture")
        return self.call(
            "capture",
            payment_id,
            key,
            lambda o: self.stripe.v1.payment_intents.capture(intent_id, params=params, options=o),  # type: ignore[arg-type]
        )

    def refund(
        self,
        *,
        merchant_id: str,
        payment_id: str,
        refund_id: str,
        intent_id: str,
        amount: Money | None = None,
    ) -> stripe.Refund:
        """Refund; ``refund_id`` is ours, so each of several partial refunds has its own key."""
        params: dict[str, Any] = {"payment_intent": intent_id, "metadata": {"refund_id": refund_id}}
        if amount is not None:
            params["amount"] = amount.amount_minor
        key = psp_idempotency_key(merchant_id, payment_id, f"refund:{refund_id}")
        return self.call(
            "refund",
            payment_id,
            key,
            lambda o: self.stripe.v1.refunds.create(params=params, options=o),  # type: ignore[arg-type]
        )

    def cancel(self, *, merchant_id: str, payment_id: str, intent_id: str) -> stripe.PaymentIntent:
        """Void an authorization: the hold on the customer's card is released."""
        params: dict[str, Any] = {"expand": list(EXPAND)}
        key = psp_idempotency_key(merchant_id, payment_id, "cancel")
        return self.call(
            "cancel",
            payment_id,
            key,
            lambda o: self.stripe.v1.payment_intents.cancel(intent_id, params=params, options=o),  # type: ignore[arg-type]
        )

    def list_refunds(self, intent_id: str) -> list[dict[str, Any]]:
        """Every refund of an intent, as plain JSON: how a refund is booked by its own id."""
        listing = self.call(
            "list_refunds",
            intent_id,
            "",
            lambda _o: self.stripe.v1.refunds.list(
                params={"payment_intent": intent_id, "limit": 100}
            ),
        )
        return [refund.to_dict() for refund in listing.auto_paging_iter()]

    def retrieve(self, intent_id: str) -> stripe.PaymentIntent:
        """Fetch the PSP's current view of a PaymentIntent (reads need no key)."""
        return self.call(
            "retrieve", intent_id, "", lambda _o: self.stripe.v1.payment_intents.retrieve(intent_id)
        )

    def retrieve_expanded(self, intent_id: str) -> dict[str, Any]:
        """The PaymentIntent with its charge and fee, as plain JSON (for webhook re-fetches)."""
        intent = self.call(
            "retrieve",
            intent_id,
            "",
            lambda _o: self.stripe.v1.payment_intents.retrieve(
                intent_id, params={"expand": list(EXPAND)}
            ),
        )
        as_dict: dict[str, Any] = intent.to_dict()
        return as_dict

    def resolve_unknown(self, *, merchant_id: str, payment_id: str) -> stripe.PaymentIntent | None:
        """After `PSPOutcomeUnknown`: ask the PSP whether our payment exists, and in what state.

        Searches by the ``payment_id`` metadata we attach to every intent. None
        means the PSP never created it, so retrying with the same key is safe.
        (Stripe's search index lags up to a minute; a janitor runs this later.)
        """
        query = f"metadata['payment_id']:'{payment_id}' AND metadata['merchant_id']:'{merchant_id}'"
        found = self.call(
            "resolve",
            payment_id,
            "",
            lambda _o: self.stripe.v1.payment_intents.search(params={"query": query}),
        )
        return found.data[0] if found.data else None

    def capture_many(
        self, requests: Sequence[CaptureRequest], *, max_workers: int = 8
    ) -> list[stripe.PaymentIntent | PSPError]:
        """Capture a batch concurrently over pooled connections; errors are returned, not raised.

        Stripe has no batch endpoint, so "batching" means concurrency and
        connection reuse; ``nox -s bench`` measures what that buys.
        """

        def one(req: CaptureRequest) -> stripe.PaymentIntent | PSPError:
            try:
                return self.capture(
                    merchant_id=req.merchant_id,
                    payment_id=req.payment_id,
                    intent_id=req.intent_id,
                    amount=req.amount,
                )
            except PSPError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            return list(pool.map(one, requests))

    # -- the retry loop ----------------------------------------------------------

    def _read_budget(self, deadline: float) -> float | None:
        """The read timeout the next attempt may have, or None if none fits before ``deadline``."""
        read = min(self.read_timeout_s, deadline - self.clock() - self.connect_timeout_s)
        return read if read >= min(self.retry.min_read_s, self.read_timeout_s) else None

    def _least_attempt_s(self) -> float:
        """The shortest attempt worth starting: a full connect and `RetryPolicy.min_read_s`."""
        return self.connect_timeout_s + min(self.retry.min_read_s, self.read_timeout_s)

    def call(self, operation: str, payment_id: str, key: str, fn: Callable[[Any], T]) -> T:
        """Run one PSP request through the circuit breaker, the rate limiter and retries.

        ``fn`` receives the request options (the idempotency key, when ``key`` is set).
        All of it ends within ``RetryPolicy.deadline_s``: each attempt's read
        timeout is cut to the time left, and an attempt or a pause (however
        long the PSP's ``Retry-After``) that could not end in time is not
        started. Stopped by the deadline, the call fails as the last attempt
        left it: `PSPOutcomeUnknown` if a request may have been processed,
        else `PSPUnavailable`.
        """
        options = {"idempotency_key": key} if key else {}
        deadline = self.clock() + self.retry.deadline_s
        out_of_time = f"; stopped by the {self.retry.deadline_s:g} s deadline"
        maybe_processed = False
        last = "no attempt made"
        made = 0
        for attempt in range(1, self.retry.max_attempts + 1):
            if self._read_budget(deadline) is None:
                last += out_of_time
                break
            try:
                self.breaker.before_call()
            except CircuitOpen as exc:
                if maybe_processed:
                    raise PSPOutcomeUnknown(operation, payment_id, key, last) from exc
                raise PSPUnavailable(str(exc), operation=operation) from exc
            if self.limiter is not None:
                patience = deadline - self.clock() - self._least_attempt_s()
                try:
                    self.limiter.acquire(timeout_s=max(0.0, patience))
                except RateLimited:
                    last += "; our rate limiter had no token before the deadline"
                    break
            read_s = self._read_budget(deadline)
            if read_s is None:
                last += out_of_time
                break
            self.attempts += 1
            made += 1
            retry_after: float | None = None
            try:
                with self.http.read_timeout_at_most(read_s):
                    result = fn(options)
            except stripe.CardError as exc:
                self.breaker.record_success()  # the PSP is healthy; the card is not
                intent = exc.error.payment_intent if exc.error else None
                raise PSPDeclined(
                    exc.user_message or "card declined",
                    decline_code=exc.error.decline_code if exc.error else None,
                    intent_id=intent.id if intent else None,
                ) from exc
            except stripe.RateLimitError as exc:
                self.breaker.record_success()
                retry_after = _retry_after(exc)
                last = "429 rate limited"
                status: int | None = 429
            except stripe.APIConnectionError as exc:
                self.breaker.record_failure()
                sent = _was_sent(exc)
                maybe_processed = maybe_processed or sent
                last = "timeout or connection lost after sending" if sent else "connection refused"
                status = None
            except stripe.APIError as exc:
                status = exc.http_status
                if status is not None and status >= 500:
                    self.breaker.record_failure()
                    maybe_processed = True
                elif status == 409:  # our own earlier attempt is still running at the PSP
                    maybe_processed = True
                last = f"HTTP {status}"
            except stripe.StripeError as exc:  # 400/401/403/404: retrying cannot help
                self.breaker.record_success()
                raise PSPRequestError(
                    exc.user_message or str(exc), operation=operation, code_detail=exc.code
                ) from exc
            else:
                self.breaker.record_success()
                return result
            if not self.retry.should_retry(status) or attempt == self.retry.max_attempts:
                break
            pause = self.retry.backoff(attempt, retry_after)
            if self.clock() + pause + self._least_attempt_s() > deadline:
                last += out_of_time  # a pause with no time for an attempt after it is waste
                break
            self.sleep(pause)
        if maybe_processed:
            raise PSPOutcomeUnknown(operation, payment_id, key, last)
        raise PSPUnavailable(
            f"{operation} for {payment_id} failed after {made} attempt(s) ({last}); "
            "nothing was charged, so retrying later is safe",
            operation=operation,
        )


def _retry_after(exc: stripe.StripeError) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
