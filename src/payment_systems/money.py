"""Money as integer minor units: never a float.

A float cannot hold 0.10 exactly, so sums drift and ``round(2.675, 2)`` gives
2.67. A payments system that adds a million such amounts a day books money
that does not exist. `Money` stores an ``int`` count of the currency's
minor units (cents for USD, yen for JPY, fils for KWD) and converts to
``Decimal`` only at the edges, with the rounding mode named every time.

Examples:
    >>> price = Money.of("19.99", "USD")
    >>> price.amount_minor, price.currency, price.amount
    (1999, 'USD', Decimal('19.99'))
    >>> price + Money.of("0.01", "USD")
    Money.of('20.00', 'USD')

The production library for this is ``py-moneyed`` or Java's ``JSR 354``; we
write it by hand because it is one of the patterns this project teaches.
"""

from __future__ import annotations

import copy
import decimal
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Self

from babel import Locale

from payment_systems.currencies import UnknownCurrency, minor_units, normalize_code
from payment_systems.errors import PaymentSystemsError

__all__ = [
    "AmountTooPrecise",
    "CurrencyMismatch",
    "Money",
    "MoneyError",
    "Rounding",
    "UnknownCurrency",
]


class Rounding(StrEnum):
    """Rounding modes, named because each money operation must choose one.

    Stripe rounds fees half-up; Square rounds tax half-even (banker's
    rounding); FX conversion rounds in the house's favour (``DOWN`` on what
    the customer receives). There is no safe default, so there is none.
    """

    HALF_UP = decimal.ROUND_HALF_UP
    HALF_EVEN = decimal.ROUND_HALF_EVEN
    HALF_DOWN = decimal.ROUND_HALF_DOWN
    UP = decimal.ROUND_UP
    DOWN = decimal.ROUND_DOWN
    CEILING = decimal.ROUND_CEILING
    FLOOR = decimal.ROUND_FLOOR


class MoneyError(PaymentSystemsError):
    """Base class for invalid money operations."""

    code = "money_error"
    http_status = 400


class CurrencyMismatch(MoneyError, ValueError):
    """Two amounts in different currencies were combined without an FX conversion."""

    code = "currency_mismatch"

    def __init__(self, left: str, right: str, operation: str) -> None:
        super().__init__(
            f"cannot {operation} {left} and {right}: convert one side first "
            "(payment_systems.fx) so both are in the same currency",
            left=left,
            right=right,
        )


class AmountTooPrecise(MoneyError, ValueError):
    """An amount has more decimals than its currency's minor unit allows."""

    code = "amount_too_precise"

    def __init__(self, amount: Decimal, currency: str, exponent: int) -> None:
        super().__init__(
            f"{amount} has more than {exponent} decimal place(s), the minor unit of {currency}; "
            "pass rounding=Rounding.HALF_UP (or another Rounding) to round it explicitly",
            amount=str(amount),
            currency=currency,
        )


def _reject_float(value: object, what: str) -> None:
    if isinstance(value, float):
        raise TypeError(
            f"{what} must not be a float ({value!r}): a float cannot represent most "
            "decimal amounts exactly; pass a str such as '12.34' or a decimal.Decimal"
        )


@dataclass(frozen=True, slots=True)
class Money:
    """An immutable amount: an ``int`` of minor units plus an ISO 4217 currency.

    ``Money(1234, "USD")`` is $12.34; ``Money(1234, "JPY")`` is ¥1,234;
    ``Money(1234, "KWD")`` is 1.234 dinar. Use `of` to build one from a
    decimal string.
    """

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        _reject_float(self.amount_minor, "amount_minor")
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError(
                f"amount_minor must be an int count of minor units, not "
                f"{type(self.amount_minor).__name__}; use Money.of('12.34', 'USD') for decimals"
            )
        code = normalize_code(self.currency)
        minor_units(code)  # raises UnknownCurrency
        object.__setattr__(self, "currency", code)

    # -- construction -------------------------------------------------------

    @classmethod
    def of(
        cls,
        amount: str | Decimal | int,
        currency: str,
        *,
        rounding: Rounding | None = None,
    ) -> Self:
        """Build from a decimal amount in major units: ``Money.of("12.34", "USD")``.

        Floats are refused. An amount finer than the currency allows (``"1.005"``
        USD) is refused unless ``rounding`` says how to round it, because
        silently dropping a tenth of a cent is how ledgers stop balancing.

        Examples:
            >>> Money.of("1.005", "USD", rounding=Rounding.HALF_UP)
            Money.of('1.01', 'USD')
        """
        _reject_float(amount, "amount")
        if isinstance(amount, bool) or not isinstance(amount, str | Decimal | int):
            raise TypeError(f"amount must be a str, Decimal or int, not {type(amount).__name__}")
        try:
            value = Decimal(amount.strip()) if isinstance(amount, str) else Decimal(amount)
        except decimal.InvalidOperation:
            raise MoneyError(
                f"{amount!r} is not a decimal number; write amounts like '12.34'",
                amount=str(amount),
            ) from None
        if not value.is_finite():
            raise MoneyError(f"{amount!r} is not a finite amount", amount=str(amount))
        exponent = minor_units(currency)
        quantum = Decimal(1).scaleb(-exponent)
        exact = value.quantize(quantum, rounding=decimal.ROUND_DOWN)
        if exact != value:
            if rounding is None:
                raise AmountTooPrecise(value, normalize_code(currency), exponent)
            exact = value.quantize(quantum, rounding=rounding)
        return cls(int(exact.scaleb(exponent)), currency)

    @classmethod
    def zero(cls, currency: str) -> Self:
        """The additive identity in ``currency``."""
        return cls(0, currency)

    # -- views ---------------------------------------------------------------

    @property
    def exponent(self) -> int:
        """ISO 4217 minor units: 2 for USD, 0 for JPY, 3 for KWD."""
        return minor_units(self.currency)

    @property
    def amount(self) -> Decimal:
        """The amount in major units, exact, with the currency's number of places."""
        return (
            Decimal(self.amount_minor)
            .scaleb(-self.exponent)
            .quantize(Decimal(1).scaleb(-self.exponent))
        )

    def format(self, locale: str = "en_US") -> str:
        """Locale-aware display through babel, with ISO's (not CLDR's) decimals.

        Examples:
            >>> Money.of("1234.5", "USD").format("en_US")
            '$1,234.50'
            >>> Money.of("1234.500", "IQD").format("en_US")
            'IQD1,234.500'
        """
        loc = Locale.parse(locale)
        pattern = loc.currency_formats["standard"]
        if pattern is None:  # pragma: no cover - every CLDR locale has one
            raise MoneyError(f"locale {locale!r} has no currency format")
        pattern = copy.copy(pattern)
        pattern.frac_prec = (self.exponent, self.exponent)
        return str(pattern.apply(self.amount, loc, currency=self.currency, currency_digits=False))

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

    def __repr__(self) -> str:
        return f"Money.of({str(self.amount)!r}, {self.currency!r})"

    # -- arithmetic ----------------------------------------------------------

    def _same_currency(self, other: object, operation: str) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot {operation} Money and {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(self.currency, other.currency, operation)
        return other

    def __add__(self, other: Money) -> Money:
        o = self._same_currency(other, "add")
        return Money(self.amount_minor + o.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        o = self._same_currency(other, "subtract")
        return Money(self.amount_minor - o.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount_minor), self.currency)

    def __bool__(self) -> bool:
        return self.amount_minor != 0

    def __lt__(self, other: Money) -> bool:
        return self.amount_minor < self._same_currency(other, "compare").amount_minor

    def __le__(self, other: Money) -> bool:
        return self.amount_minor <= self._same_currency(other, "compare").amount_minor

    def __gt__(self, other: Money) -> bool:
        return self.amount_minor > self._same_currency(other, "compare").amount_minor

    def __ge__(self, other: Money) -> bool:
        return self.amount_minor >= self._same_currency(other, "compare").amount_minor

    def multiply(self, factor: Decimal | int | str, *, rounding: Rounding) -> Money:
        """Scale by ``factor`` (a fee rate, a tax rate), rounding as told.

        Examples:
            >>> Money.of("10.00", "USD").multiply("0.029", rounding=Rounding.HALF_UP)
            Money.of('0.29', 'USD')
        """
        _reject_float(factor, "factor")
        product = Decimal(self.amount_minor) * Decimal(factor)
        return Money(int(product.quantize(Decimal(1), rounding=rounding)), self.currency)

    def allocate(self, ratios: Sequence[int]) -> list[Money]:
        """Split into parts proportional to ``ratios`` without losing a minor unit.

        Each part gets the floor of its share; the minor units left over go one
        each to the parts with the largest remainders (ties: the earlier part),
        so a zero ratio never receives a unit. The parts always sum to the
        original, which a naive ``amount / 3`` rounded three times does not.

        Examples:
            >>> [str(m) for m in Money.of("100.00", "USD").allocate([1, 1, 1])]
            ['33.34 USD', '33.33 USD', '33.33 USD']
        """
        if not ratios:
            raise ValueError("allocate needs at least one ratio")
        for r in ratios:
            _reject_float(r, "ratio")
            if isinstance(r, bool) or not isinstance(r, int) or r < 0:
                raise ValueError(f"ratios must be non-negative ints, got {r!r}")
        total = sum(ratios)
        if total == 0:
            raise ValueError("ratios must not all be zero")
        sign = -1 if self.amount_minor < 0 else 1
        whole = abs(self.amount_minor)
        shares = [whole * r // total for r in ratios]
        leftover = whole - sum(shares)  # always < number of non-zero ratios
        by_remainder = sorted(range(len(ratios)), key=lambda i: -(whole * ratios[i] % total))
        for i in by_remainder[:leftover]:
            shares[i] += 1
        return [Money(sign * s, self.currency) for s in shares]
