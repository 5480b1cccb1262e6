"""FX conversion: cached rates, locked quotes, a markup, and rounding in the house's favour.

A customer pays in EUR; the merchant settles in USD. The converter:

* gets **mid rates** from a provider (the sandbox's ``/v1/exchange_rates``, or a
  static file), through a **Redis cache** (5 minutes by default): rates
  barely move in five minutes, providers charge per call and rate-limit,
  and a checkout must not wait on them;
* computes **cross rates** through a base currency (EUR→JPY = USD→JPY ÷ USD→EUR);
* gives a **locked quote**: mid rate, markup (2.5%), the customer's rate,
  the converted amount and an expiry. The quote is honoured until it
  expires, whatever the market does; after that, it is re-quoted;
* **rounds down** what the customer receives, to the target currency's ISO
  exponent (0 for JPY, 3 for KWD): fractions of a minor unit go to the house,
  never to nowhere, so a round trip can never create money;
* books the **FX revenue** (mid minus customer rate) as its own ledger posting.

If the provider times out, a cached rate is served only while it is younger
than ``max_stale_s``; older than that, conversion **fails closed**: quoting
a price from a stale rate is how a platform sells currency at a loss.

In production: a rates provider such as your PSP's FX API, OpenExchangeRates
or your bank's feed, and treasury tooling for the hedging.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import httpx
import redis

from payment_systems.core.ledger import Direction, Journal, Ledger, Leg
from payment_systems.currencies import minor_units, normalize_code
from payment_systems.errors import PaymentSystemsError
from payment_systems.money import Money, Rounding


class FxError(PaymentSystemsError):
    code = "fx_error"
    http_status = 400


class InvalidRate(FxError):
    """A provider returned a zero, negative or non-finite rate: refuse to use it."""

    code = "invalid_rate"
    http_status = 502


class RateNotAvailable(FxError):
    """The provider has no rate for this currency."""

    code = "rate_not_available"


class RatesUnavailable(FxError):
    """The provider is down and the cached rate is too old to trust: fail closed."""

    code = "rates_unavailable"
    http_status = 503


class RatesProvider(Protocol):
    """Mid rates: ``rates(base)[x]`` units of ``x`` per one unit of ``base``."""

    def rates(self, base: str) -> Mapping[str, Decimal]: ...


class SandboxRates:
    """The PSP sandbox's (Stripe-shaped) ``GET /v1/exchange_rates/{base}``, parsed as decimals."""

    def __init__(self, api_base: str, api_key: str, timeout_s: float = 2.0) -> None:
        self.api_base = api_base.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def rates(self, base: str) -> Mapping[str, Decimal]:
        try:
            response = httpx.get(
                f"{self.api_base}/v1/exchange_rates/{base.lower()}",
                auth=(self.api_key, ""),
                timeout=self.timeout_s,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise RatesUnavailable(f"the rates provider failed: {type(exc).__name__}") from exc
        body = json.loads(response.text, parse_float=Decimal, parse_int=Decimal)
        return {code.upper(): rate for code, rate in body["rates"].items()}


class StaticRates:
    """Rates from a JSON file ``{"base": "USD", "rates": {"EUR": "0.92", ...}}`` (strings)."""

    def __init__(self, source: Path | Mapping[str, str]) -> None:
        data = json.loads(source.read_text()) if isinstance(source, Path) else {"rates": source}
        self.base = str(data.get("base", "USD")).upper()
        self._rates = {k.upper(): Decimal(str(v)) for k, v in data["rates"].items()}

    def rates(self, base: str) -> Mapping[str, Decimal]:
        if base.upper() != self.base:
            raise RateNotAvailable(f"the static table is quoted against {self.base}, not {base}")
        return dict(self._rates)


def _check(code: str, rate: Decimal) -> Decimal:
    if not rate.is_finite() or rate <= 0:
        raise InvalidRate(f"the provider's rate for {code} is {rate}; refusing to convert with it")
    return rate


class CachedRates:
    """A provider behind a Redis cache with a freshness TTL and a staleness bound."""

    def __init__(
        self,
        provider: RatesProvider,
        client: redis.Redis,
        *,
        ttl_s: float = 300.0,
        max_stale_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        prefix: str = "fx",
    ) -> None:
        self.provider = provider
        self.client = client
        self.ttl_s = ttl_s
        self.max_stale_s = max_stale_s
        self.clock = clock
        self.prefix = prefix
        self.provider_calls = 0  # for the "why cache 5 minutes" measurement

    def rates(self, base: str) -> tuple[dict[str, Decimal], float]:
        """(rates, age in seconds); refreshes after ``ttl_s``, fails closed past ``max_stale_s``."""
        key = f"{self.prefix}:rates:{base.upper()}"
        cached = self.client.get(key)
        now = self.clock()
        if cached is not None:
            data = json.loads(cached)
            age = now - float(data["at"])
            if age < self.ttl_s:
                return {k: Decimal(v) for k, v in data["rates"].items()}, age
        try:
            self.provider_calls += 1
            fresh = {k: _check(k, v) for k, v in self.provider.rates(base).items()}
        except RatesUnavailable:
            if cached is not None and age <= self.max_stale_s:
                return {k: Decimal(v) for k, v in data["rates"].items()}, age
            raise RatesUnavailable(
                f"the rates provider is unavailable and no rate for {base} is younger than "
                f"{self.max_stale_s:.0f}s; refusing to quote (retry later)"
            ) from None
        payload = {"at": now, "rates": {k: str(v) for k, v in fresh.items()}}
        self.client.set(key, json.dumps(payload), ex=int(self.max_stale_s) + 60)
        return fresh, 0.0


@dataclass(frozen=True, slots=True)
class FxQuote:
    """A locked conversion: honoured until ``expires_at``."""

    id: str
    source: Money
    mid_rate: Decimal
    markup: Decimal
    customer_rate: Decimal
    converted: Money
    revenue: Money
    created_at: float
    expires_at: float

    def is_valid(self, now: float) -> bool:
        return now < self.expires_at


class FxConverter:
    """Quotes conversions between any two currencies the provider knows."""

    def __init__(
        self,
        rates: CachedRates,
        *,
        base: str = "USD",
        markup: Decimal = Decimal("0.025"),
        quote_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not Decimal(0) <= markup < 1:
            raise ValueError(f"markup must be in [0, 1), got {markup}")
        self.rates = rates
        self.base = base.upper()
        self.markup = markup
        self.quote_ttl_s = quote_ttl_s
        self.clock = clock

    def mid_rate(self, source: str, target: str) -> Decimal:
        """Units of ``target`` per unit of ``source``, crossed through the base currency."""
        source, target = normalize_code(source), normalize_code(target)
        minor_units(source)  # UnknownCurrency for codes that do not exist
        minor_units(target)
        if source == target:
            return Decimal(1)
        table, _age = self.rates.rates(self.base)
        per_base = {**table, self.base: Decimal(1)}
        for code in (source, target):
            if code not in per_base:
                raise RateNotAvailable(f"no exchange rate for {code} (quoted against {self.base})")
        return _check(target, per_base[target]) / _check(source, per_base[source])

    def quote(self, source: Money, target: str) -> FxQuote:
        """Lock a rate: the customer receives ``source`` x mid x (1 - markup), rounded down."""
        mid = self.mid_rate(source.currency, target)
        customer_rate = mid * (1 - self.markup)
        exact_mid = source.amount * mid
        converted = Money.of(source.amount * customer_rate, target, rounding=Rounding.DOWN)
        at_mid = Money.of(exact_mid, target, rounding=Rounding.DOWN)
        now = self.clock()
        return FxQuote(
            id="fxq_" + secrets.token_hex(10),
            source=source,
            mid_rate=mid,
            markup=self.markup,
            customer_rate=customer_rate,
            converted=converted,
            revenue=at_mid - converted,
            created_at=now,
            expires_at=now + self.quote_ttl_s,
        )

    def honour(self, quote: FxQuote) -> FxQuote:
        """The same quote while it is valid, whatever the market did; a new one after."""
        return (
            quote
            if quote.is_valid(self.clock())
            else self.quote(quote.source, quote.converted.currency)
        )


def book_conversion(
    ledger: Ledger, quote: FxQuote, journal_id: str, payment_id: str | None = None
) -> Journal:
    """Post a conversion: the source amount in, the converted amount owed, the markup earned.

    Each currency balances on its own through the ``fx_clearing`` account:
    the source currency moves from ``psp_receivable`` into clearing; in the
    target currency, clearing pays the merchant and books the FX revenue.
    """
    target_total = quote.converted + quote.revenue
    legs = [
        Leg("psp_receivable", Direction.DEBIT, quote.source),
        Leg("fx_clearing", Direction.CREDIT, quote.source),
        Leg("fx_clearing", Direction.DEBIT, target_total),
        Leg("merchant_payable", Direction.CREDIT, quote.converted),
    ]
    if quote.revenue.amount_minor:
        legs.append(Leg("fx_revenue", Direction.CREDIT, quote.revenue))
    return ledger.post(journal_id, legs, f"FX {quote.id}", payment_id)
