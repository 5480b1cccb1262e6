"""ISO 4217 minor units: how many digits after the point a currency's amounts have.

The table comes from the ``iso4217`` package, which ships the ISO 4217
maintenance agency's list. We do *not* use babel's ``get_currency_precision``:
that is CLDR's *display* precision, which says Iraqi dinar shows 0 digits while
ISO says IQD has 3 minor units. Storing 1 IQD as ``1`` instead of ``1000``
would be an off-by-1000 bug in every ledger row.

PSPs sometimes disagree with ISO (Stripe treats MGA as zero-decimal, and its
three-decimal amounts must end in 0). Those are per-PSP overrides that belong
with the PSP adapter, not in this table.
"""

from __future__ import annotations

from functools import cache

from iso4217 import Currency

from payment_systems.errors import PaymentSystemsError


class UnknownCurrency(PaymentSystemsError, ValueError):
    """The code is not an ISO 4217 currency with minor units (e.g. ``"XYZ"``, ``"XAU"``)."""

    code = "unknown_currency"
    http_status = 400

    def __init__(self, currency: str, reason: str = "is not an ISO 4217 currency code") -> None:
        hint = "use a three-letter ISO 4217 code such as 'USD', 'EUR' or 'JPY'"
        super().__init__(f"{currency!r} {reason}; {hint}", currency=currency)
        self.currency = currency


def normalize_code(currency: str) -> str:
    """Upper-case and validate the shape of a currency code (``"usd"`` -> ``"USD"``)."""
    if not isinstance(currency, str):
        raise TypeError(f"currency must be a str such as 'USD', not {type(currency).__name__}")
    code = currency.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise UnknownCurrency(currency)
    return code


@cache
def minor_units(currency: str) -> int:
    """The ISO 4217 exponent of ``currency``.

    Examples:
        >>> minor_units("USD"), minor_units("JPY"), minor_units("KWD"), minor_units("CLF")
        (2, 0, 3, 4)

    Codes without minor units in ISO 4217 (precious metals, testing codes) are
    rejected, because an amount in them cannot be held as integer minor units.
    """
    code = normalize_code(currency)
    try:
        entry = Currency(code)
    except ValueError:
        raise UnknownCurrency(currency) from None
    if entry.exponent is None:
        raise UnknownCurrency(currency, "has no minor unit in ISO 4217 (a metal or fund code)")
    return int(entry.exponent)


def is_known(currency: str) -> bool:
    """True if ``currency`` can be used for `Money`."""
    try:
        minor_units(currency)
    except (UnknownCurrency, TypeError):
        return False
    return True
