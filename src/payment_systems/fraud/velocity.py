"""Fraud velocity rules: too many of something, too fast, from one source.

Card testers try hundreds of stolen cards from one IP; a stolen card is
tried again and again; an account taken over suddenly spends ten times its
usual amount. Velocity rules catch these by counting over a *sliding*
window per key, in Redis sorted sets (score = time):

| rule | key | window | measures |
|---|---|---|---|
| ``card_attempts`` | card fingerprint (global) | 10 min | attempts |
| ``cards_per_ip`` | client IP (global) | 1 h | distinct cards |
| ``customer_amount`` | merchant + customer id | 24 h | amount, minor units |
| ``merchant_declines`` | merchant | 1 min | declines |

Each check is one Lua script: drop entries older than the window, add this
one, measure, set the key's expiry, all atomically, so twenty parallel
requests can neither lose an increment nor both slip under the limit.
A fixed window (``INCR`` per minute) would let a burst straddling the
minute boundary through at twice the limit; a sliding window does not.

**Whose key is it?** A key a merchant *names* is scoped by the merchant: the
``customer_id`` in the request metadata is the merchant's own label, so
merchant A's ``cus_1`` and merchant B's ``cus_1`` are different people.
Without the merchant in the key, A could spend B's customer into a block (or
hide its own customer's spending behind B's). A card fingerprint and a client
IP are different: they are facts about the world that we observe, and the
same card or IP at two merchants *is* the same card or IP. A card-testing
run spreads its list across many merchants precisely so that no single
merchant sees much of it; global windows see all of it, while per-merchant
windows would give the attacker the limit once per merchant.

**Fail closed.** If the rules cannot run (Redis refuses the connection or
does not answer in time), `VelocityRules.check` raises
`FraudScreeningUnavailable` (a 503) instead of answering "allow". A payment
the rules never saw must not reach the PSP. Without this, a dead Redis under
``IDEMPOTENCY_FALLBACK=sql`` would switch screening off silently while
payments kept flowing. Counting a *decline* (`VelocityRules.record_decline`)
is the exception: it happens after the PSP has answered, and failing there
would leave a real decline unrecorded, so it is best effort.

In production: Stripe Radar, Sift, or your PSP's risk engine; velocity
rules are still the first layer most of them run.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import redis

from payment_systems.errors import PaymentSystemsError

log = logging.getLogger(__name__)

# What "Redis cannot answer" looks like: a refused or dropped connection, or no
# reply in time. Anything else (a script error, a wrong type) is a bug, not an outage.
UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

_LUA = """
local now, window, member, mode = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if member ~= '' then redis.call('ZADD', KEYS[1], now, member) end
redis.call('PEXPIRE', KEYS[1], window)
if mode == 'sum' then
  local total = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    total = total + tonumber(string.match(m, '^(%d+):'))
  end
  return total
end
return redis.call('ZCARD', KEYS[1])
"""


class Decision(StrEnum):
    """What the rules say. The payment service gives each decision a defined outcome.

    * ``ALLOW``: the payment goes to the PSP as asked.
    * ``REVIEW``: the payment goes to the PSP *with 3DS requested*. The issuer
      challenges the cardholder: a step-up that needs no analyst and no
      queue, and that moves the fraud liability to the issuer if it
      succeeds. A manual review queue would keep the customer waiting at
      checkout for minutes.
    * ``BLOCK``: the payment fails with ``fraud_blocked`` (402) and never
      reaches the PSP.
    """

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Rule:
    """One velocity rule and its thresholds (value >= threshold triggers)."""

    name: str
    window_s: int
    review_at: int
    block_at: int
    mode: str = "count"  # count | distinct | sum


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("card_attempts", 600, review_at=4, block_at=6),
    Rule("cards_per_ip", 3600, review_at=3, block_at=5, mode="distinct"),
    Rule("customer_amount", 86_400, review_at=500_000, block_at=1_000_000, mode="sum"),
    Rule("merchant_declines", 60, review_at=20, block_at=50),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision and what triggered it."""

    decision: Decision
    rule: str | None = None
    value: int = 0
    threshold: int = 0
    values: Mapping[str, int] | None = None


class FraudBlocked(PaymentSystemsError):
    """The payment was refused by a velocity rule (a 402, like a decline)."""

    code = "fraud_blocked"
    http_status = 402

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(
            f"payment blocked by fraud rule {verdict.rule}: value {verdict.value} reached "
            f"the block threshold {verdict.threshold}; contact support if this is wrong",
            rule=verdict.rule,
            value=verdict.value,
        )
        self.verdict = verdict


class FraudScreeningUnavailable(PaymentSystemsError):
    """The velocity rules could not run, so the payment was stopped before the PSP (503).

    This fails closed. The alternative, going ahead unscreened, is exactly the
    hole card testers look for: take Redis down, or wait for it to fall over,
    and the rules are off. Nothing was charged. The payment stays
    ``processing``, and the client's retry with the same ``Idempotency-Key``
    screens it and carries on. The API adds ``Retry-After`` to every 503.
    """

    code = "fraud_screening_unavailable"
    http_status = 503

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            "fraud screening is unavailable right now, so the payment was not sent for "
            "authorization and nothing was charged; retry after the Retry-After delay with "
            "the same Idempotency-Key",
            cause=type(cause).__name__,
        )


def card_fingerprint(payment_method: str) -> str:
    """A stable, non-reversible id for a card: the rules count cards, never store them."""
    return hashlib.sha256(payment_method.encode()).hexdigest()[:16]


def customer_key(merchant_id: str, customer_id: str) -> str:
    """The window key for one merchant's customer. ``customer_id`` is the merchant's label.

    Two merchants may both call someone ``cus_1``, but they are not the same
    person, so one merchant's payments must never count against (or block)
    the other's customer. Merchant ids are ours and contain no ``:``, so no
    choice of ``customer_id`` can reach into another merchant's keys.
    """
    return f"{merchant_id}:{customer_id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the rules look at for one payment attempt."""

    merchant_id: str
    card_fingerprint: str
    amount_minor: int
    ip: str | None = None
    customer_id: str | None = None


class VelocityRules:
    """Evaluates the rules against shared Redis state; the clock is injectable (ms)."""

    def __init__(
        self,
        client: redis.Redis,
        rules: tuple[Rule, ...] = DEFAULT_RULES,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        prefix: str = "velocity",
    ) -> None:
        self.client = client
        self.rules = {rule.name: rule for rule in rules}
        self.clock_ms = clock_ms
        self.prefix = prefix
        self._script = client.register_script(_LUA)

    def _measure(self, rule: Rule, key: str, member: str, now: int) -> int:
        if rule.name not in self.rules:
            return 0
        redis_key = f"{self.prefix}:{rule.name}:{{{key}}}"
        window_ms = rule.window_s * 1000
        return int(self._script([redis_key], [now, window_ms, member, rule.mode]))

    def check(self, attempt: Attempt) -> Verdict:
        """Record the attempt in every window and decide allow / review / block.

        Raises `FraudScreeningUnavailable` when Redis cannot be reached. The
        rules never make up a verdict.
        """
        return self._evaluate(attempt, record=True)

    def peek(self, attempt: Attempt) -> Verdict:
        """What the rules say about the windows now, without counting an attempt.

        For dashboards and the end-to-end trace: looking must not change the answer.
        """
        return self._evaluate(attempt, record=False)

    def _evaluate(self, attempt: Attempt, *, record: bool) -> Verdict:
        now = self.clock_ms()
        unique = uuid.uuid4().hex if record else ""
        values: dict[str, int] = {}
        try:
            for rule in self.rules.values():
                if rule.name == "card_attempts":  # global: the same card at any merchant
                    values[rule.name] = self._measure(rule, attempt.card_fingerprint, unique, now)
                elif rule.name == "cards_per_ip" and attempt.ip:  # global: observed by us
                    member = attempt.card_fingerprint if record else ""
                    values[rule.name] = self._measure(rule, attempt.ip, member, now)
                elif rule.name == "customer_amount" and attempt.customer_id:
                    member = f"{attempt.amount_minor}:{unique}" if record else ""
                    key = customer_key(attempt.merchant_id, attempt.customer_id)
                    values[rule.name] = self._measure(rule, key, member, now)
                elif rule.name == "merchant_declines":
                    values[rule.name] = self._measure(rule, attempt.merchant_id, "", now)
        except UNREACHABLE as exc:
            raise FraudScreeningUnavailable(exc) from exc
        return self.decide(values)

    def record_decline(self, merchant_id: str) -> int:
        """Count a decline for the merchant's decline-rate rule; returns the window's count.

        This is best effort. It runs after the PSP has declined, and the decline
        must be recorded on the payment whether or not Redis is up. A dead
        Redis costs one missing count (logged; the call returns 0), while
        raising here would cost the payment its recorded outcome.
        """
        rule = self.rules.get("merchant_declines")
        if rule is None:
            return 0
        try:
            return self._measure(rule, merchant_id, uuid.uuid4().hex, self.clock_ms())
        except UNREACHABLE as exc:
            log.warning(
                "decline for merchant %s not counted, Redis unreachable: %s", merchant_id, exc
            )
            return 0

    def decide(self, values: Mapping[str, int]) -> Verdict:
        """The strictest outcome over all rules (pure: no Redis)."""
        worst = Verdict(Decision.ALLOW, values=dict(values))
        for name, value in values.items():
            rule = self.rules[name]
            if value >= rule.block_at:
                return Verdict(Decision.BLOCK, name, value, rule.block_at, dict(values))
            if value >= rule.review_at and worst.decision is Decision.ALLOW:
                worst = Verdict(Decision.REVIEW, name, value, rule.review_at, dict(values))
        return worst
