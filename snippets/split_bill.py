"""Split a restaurant bill between friends without losing or inventing a cent.

Run it: ``python snippets/split_bill.py 100.00 USD 3`` (those are also the defaults).
"""

from __future__ import annotations

import argparse

from payment_systems.money import Money


def split(total: Money, ways: int) -> list[Money]:
    """Equal shares; any leftover minor units go to the first payers."""
    return total.allocate([1] * ways)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("amount", nargs="?", default="100.00", help="the bill, e.g. 100.00")
    parser.add_argument("currency", nargs="?", default="USD", help="ISO 4217 code, e.g. USD")
    parser.add_argument("ways", nargs="?", type=int, default=3, help="number of payers")
    args = parser.parse_args(argv)

    total = Money.of(args.amount, args.currency)
    shares = split(total, args.ways)
    for i, share in enumerate(shares, start=1):
        print(f"payer {i}: {share.format()}")
    assert sum(s.amount_minor for s in shares) == total.amount_minor
    print(f"total:   {total.format()} (checked: the shares add up exactly)")


if __name__ == "__main__":
    main()
