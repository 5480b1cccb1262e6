# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Notebook: Money behaviours
#
# This notebook is executed when the site is built, and again by the test
# suite (`tests/docs/test_notebooks.py`), so every number and the figure below
# come from running the code you see.
#
# We add a ten-cent fee again and again, once with floats and once with
# `Money`, and watch how far the float total drifts from the exact one.

# %%
from decimal import Decimal

import matplotlib.pyplot as plt

from payment_systems.money import Money

checkpoints = [10**k for k in range(1, 7)]
float_total = 0.0
money_total = Money.zero("USD")
fee = Money.of("0.10", "USD")
drift = []
n = 0
for target in checkpoints:
    while n < target:
        float_total += 0.10
        money_total = money_total + fee
        n += 1
    exact = Decimal(target) * Decimal("0.10")
    assert money_total.amount == exact
    drift.append(abs(Decimal(repr(float_total)) - exact))

for count, error in zip(checkpoints, drift, strict=True):
    print(f"{count:>9,} additions: float is off by {error:.3E} USD, Money by 0")

# %% [markdown]
# The float error grows with the number of additions; `Money`'s stays zero
# because it adds integers.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.loglog(checkpoints, [float(e) for e in drift], marker="o", label="float total")
ax.set_xlabel("number of $0.10 additions")
ax.set_ylabel("absolute error (USD)")
ax.set_title("Float drift when adding $0.10 repeatedly (Money: always 0)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Allocation never loses a cent
#
# Splitting $100.00 into 1 to 12 equal parts: the naive way (divide, then
# round each share) loses or invents cents; `allocate` never does.

# %%
from payment_systems.money import Rounding

total = Money.of("100.00", "USD")
for ways in range(1, 13):
    naive = Money.of(total.amount / ways, "USD", rounding=Rounding.HALF_EVEN)
    naive_sum = naive.amount_minor * ways
    exact_sum = sum(p.amount_minor for p in total.allocate([1] * ways))
    assert exact_sum == total.amount_minor
    naive_total, exact_total = Money(naive_sum, "USD"), Money(exact_sum, "USD")
    print(f"{ways:>2} ways: naive sum {naive_total}, allocate sum {exact_total}")
