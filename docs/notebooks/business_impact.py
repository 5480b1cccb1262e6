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
# # Business impact, with your numbers
#
# Every chart below is computed by `payment_systems.business.impact` when the
# site is built (and again by the test suite). Change the inputs in the next
# cell and run the notebook to see your own business.

# %%
from decimal import Decimal

import matplotlib.pyplot as plt

from payment_systems.business import impact
from payment_systems.money import Money

TRANSACTIONS_PER_MONTH = 1_000_000
AVERAGE_TRANSACTION = Money.of("50.00", "USD")
DAILY_VOLUME = Money.of("1000000.00", "USD")
FX_VOLUME = Money.of("10000000.00", "USD")
CHARGEBACK = Money.of("75.00", "USD")

# %% [markdown]
# ## Monthly loss against the duplicate rate (idempotency)

# %%
rates = [Decimal(n) / 10_000 for n in range(0, 21)]  # 0% to 0.2%
losses = [
    impact.duplicate_charge_cost(TRANSACTIONS_PER_MONTH, AVERAGE_TRANSACTION, r).total.amount
    for r in rates
]
fig, axes = plt.subplots(2, 2, figsize=(10, 7))
ax = axes[0][0]
ax.plot([float(r * 100) for r in rates], [float(x) for x in losses], marker="o")
ax.set(title="Idempotency: monthly loss", xlabel="duplicate rate (%)", ylabel="USD / month")

errors = [Decimal(n) / 100_000 for n in range(0, 31, 3)]  # 0% to 0.03%
totals = [impact.reconciliation_cost(DAILY_VOLUME, e).total_per_month.amount for e in errors]
ax = axes[0][1]
ax.plot(
    [float(e * 100) for e in errors], [float(t) for t in totals], marker="o", color="tab:orange"
)
ax.set(title="Reconciliation: monthly cost", xlabel="unreconciled share (%)", ylabel="USD / month")

markups = [Decimal(n) / 1000 for n in range(5, 41, 5)]
revenue = [impact.fx_markup_revenue(FX_VOLUME, m).revenue.amount for m in markups]
ax = axes[1][0]
ax.bar([f"{float(m * 100):.1f}" for m in markups], [float(v) for v in revenue], color="tab:green")
ax.set(title="FX: monthly markup revenue", xlabel="markup (%)", ylabel="USD / month")

win_rates = [Decimal(n) / 100 for n in range(10, 61, 5)]
gains = [impact.chargeback_fight(CHARGEBACK, win_rate=w).annual_gain.amount for w in win_rates]
ax = axes[1][1]
ax.plot([int(w * 100) for w in win_rates], [float(g) for g in gains], marker="o", color="tab:red")
ax.axvline(float(Decimal("25") / Decimal("0.9")), linestyle="--", color="grey")
ax.set(title="Chargebacks: yearly gain from fighting", xlabel="win rate (%)", ylabel="USD / year")
fig.tight_layout()
plt.show()

# %% [markdown]
# The dashed line is the break-even win rate, $25 / ($75 + $15) = 27.8%:
# below it, accept the chargeback.

# %%
for case in impact.cases():
    print(f"{case.name:48} {case.computed:>14}  (study plan: {case.stated or 'not stated'})")
