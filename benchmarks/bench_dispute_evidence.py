"""Evidence automation: win rate and money with and without it, on the real sandbox.

Each simulated dispute happens twice, on identical checkout records: once
answered by a manual process, once by `DisputeService.respond` (assembled
evidence, fight or accept by expected value). Both go through our API, the
sandbox opens the disputes, webhooks bring them in, and the sandbox's
documented rule decides them. Only the manual process is a model; its
parameters are stated in the notes.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.chargebacks.lifecycle import DisputeFees
from payment_systems.database.models import DisputeRecord
from payment_systems.integrations.psp_sandbox.control import advance_clock
from payment_systems.integrations.psp_sandbox.fees import COUNTER_FEE_MAJOR, DISPUTE_FEE_MAJOR
from payment_systems.money import Money, Rounding

TITLE = "Evidence automation: 60 disputes answered by hand and by DisputeService.respond"
CASES = 60
SEED = 5
AMOUNT = 7_500
MANUAL_ANSWER_RATE = 0.6  # share of disputes a busy team answers before the deadline
MANUAL_COST = Money(2_500, "USD")  # the study plan's cost to fight, per answered dispute
AUTOMATED_COST = Money(50, "USD")  # assumed: compute plus a one-minute human review
DAY = 86_400


def _checkout(rng: random.Random) -> tuple[str, dict[str, str]]:
    """What checkout recorded for one order, and which dispute it will get."""
    physical = rng.random() < 0.7
    meta = {"customer_email": f"c{rng.randrange(10**6)}@example.com", "product": "Order"}
    if rng.random() < 0.9:
        meta["ip"] = f"203.0.113.{rng.randrange(1, 255)}"
    if physical and rng.random() < 0.8:
        meta.update(shipping_carrier="UPS", tracking_number=f"1Z{rng.randrange(10**9)}")
        if rng.random() < 0.5:
            meta["delivery_signature"] = "signature.png"
    if not physical and rng.random() < 0.6:
        meta["access_log"] = "Logged in and downloaded the purchase twice after paying."
    if rng.random() < 0.3:
        meta["customer_messages"] = "Customer thanked support for the quick delivery."
    pm = (
        "pm_card_createDisputeProductNotReceived"
        if physical and rng.random() < 0.4
        else ("pm_card_createDispute")
    )
    return pm, meta


def _manual_evidence(rng: random.Random, meta: dict[str, str]) -> dict[str, str] | None:
    """A person with a queue: often late, and attaching what is at hand."""
    if rng.random() >= MANUAL_ANSWER_RATE:
        return None
    evidence = {"receipt": "receipt.pdf", "product_description": meta["product"],
                "customer_email_address": meta["customer_email"]}  # fmt: skip
    if "tracking_number" in meta and rng.random() < 0.5:
        evidence["shipping_tracking_number"] = meta["tracking_number"]
    if "delivery_signature" in meta and rng.random() < 0.5:
        evidence["customer_signature"] = meta["delivery_signature"]
    return evidence


def _pay(stack: LocalStack, key: str, pm: str, meta: dict[str, str]) -> None:
    httpx.post(
        f"{stack.url}/v1/payments",
        json={"amount": AMOUNT, "currency": "usd", "payment_method": pm, "metadata": meta},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key},
        timeout=30,
    ).raise_for_status()


def _advance(stack: LocalStack, seconds: int) -> list[str]:
    return list(advance_clock(stack.sandbox_url, stack.psp_key, seconds)["disputes_opened"])


def _records(stack: LocalStack, ids: list[str], done: set[str] | None = None) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while True:
        with stack.runtime.sessions() as session:
            rows = {r.id: r.status for r in session.query(DisputeRecord).filter(
                DisputeRecord.id.in_(ids))}  # fmt: skip
        if len(rows) == len(ids) and (done is None or set(rows.values()) <= done):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"dispute webhooks did not arrive: {len(rows)}/{len(ids)}")
        time.sleep(0.1)


def run() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    cases = [_checkout(rng) for _ in range(CASES)]
    with local_stack(fraud_rules=False) as stack:
        for i, (pm, meta) in enumerate(cases):
            _pay(stack, f"manual-{i}", pm, meta)
            _pay(stack, f"auto-{i}", pm, meta)
        opened = _advance(stack, 60)  # two per case, in payment order
        _records(stack, opened)
        manual_ids, auto_ids = opened[0::2], opened[1::2]
        service = stack.runtime.disputes
        assert service is not None
        manual_answered = 0
        for dispute_id, (_, meta) in zip(manual_ids, cases, strict=True):
            evidence = _manual_evidence(rng, meta)
            if evidence is not None:
                service.gateway.submit_evidence(dispute_id, evidence)
                manual_answered += 1
        fought = sum(service.respond(d).action == "fought" for d in auto_ids)
        _advance(stack, 8 * DAY)
        final = _records(stack, opened, done={"won", "lost"})
    fees = DisputeFees()
    assert fees.dispute_fee.amount == DISPUTE_FEE_MAJOR and fees.counter_fee.amount == (
        COUNTER_FEE_MAJOR
    )
    return [
        _row("manual", [final[d] for d in manual_ids], manual_answered, MANUAL_COST, fees),
        _row("automated", [final[d] for d in auto_ids], fought, AUTOMATED_COST, fees),
    ]


def _row(arm: str, statuses: list[str], answered: int, cost: Money, fees: DisputeFees
         ) -> dict[str, Any]:  # fmt: skip
    won = statuses.count("won")
    amount = Money(AMOUNT, "USD")
    recovered = amount.multiply(won, rounding=Rounding.HALF_UP)
    paid_fees = fees.dispute_fee.multiply(len(statuses), rounding=Rounding.HALF_UP) + (
        fees.counter_fee.multiply(answered - won, rounding=Rounding.HALF_UP)
    )
    handling = cost.multiply(answered, rounding=Rounding.HALF_UP)
    return {
        "process": arm,
        "disputes": len(statuses),
        "answered": answered,
        "won": won,
        "win rate (%)": round(100 * won / len(statuses), 1),
        "recovered (USD)": str(recovered.amount),
        "fees kept (USD)": str(paid_fees.amount),
        "handling (USD)": str(handling.amount),
        "net (USD)": str((recovered - paid_fees - handling).amount),
    }


NOTES = (
    f"Seed {SEED}; {CASES} checkout records, 70% physical goods (80% of those with tracking, "
    "half with a delivery signature), 30% digital (60% with an access log); 40% of physical "
    "orders get a 'product not received' dispute, the rest 'fraudulent'. Each case is "
    f"disputed twice, once per process, on identical records. Manual: answered before the "
    f"deadline {MANUAL_ANSWER_RATE:.0%} of the time with the receipt, the product and the "
    "email, plus tracking and the signature each half the time they exist, at "
    f"{MANUAL_COST} a response (the study plan's cost to fight). Automated: "
    f"DisputeService.respond, at an assumed {AUTOMATED_COST} a response. "
    "Fees: $15 dispute fee kept; $15 counter fee per answer, refunded on a win. The sandbox's "
    "documented rule decides every dispute."
)
