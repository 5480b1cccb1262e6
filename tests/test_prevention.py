"""3DS prevention: the threshold policy, its economics, and the challenge flow end to end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.business.impact import three_ds_breakeven_fraud_rate
from payment_systems.chargebacks.prevention import (
    Economics,
    Population,
    ThreeDSPolicy,
    optimal_threshold,
    profit_curve,
)
from payment_systems.config import Settings
from payment_systems.integrations.psp_sandbox.control import authenticate


def test_a_payment_without_a_score_is_not_challenged() -> None:
    assert not ThreeDSPolicy(38).challenge(None)


def test_the_threshold_itself_is_challenged() -> None:
    policy = ThreeDSPolicy(38)
    assert (policy.challenge(37), policy.challenge(38)) == (False, True)


def test_the_default_threshold_is_the_computed_optimum_not_a_guess() -> None:
    assert Settings().three_ds_threshold == optimal_threshold()


def test_the_study_plan_economics_in_minor_units() -> None:
    # $15.00 margin, $90.00 loss; challenged: 15% fewer sales, 80% fewer chargebacks
    assert Economics().values() == (1_500, 9_000, 1_275, 1_800)


def test_a_score_bucket_is_challenged_exactly_when_its_fraud_rate_beats_break_even() -> None:
    # score 10: 1 fraud in 100 (1% < 3.125%); score 60: 10 in 100 (10% > 3.125%)
    scores = np.array([10] * 100 + [60] * 100)
    fraud = np.array([i < 1 for i in range(100)] + [i < 10 for i in range(100)])
    curve = profit_curve(Population(scores, fraud))
    assert three_ds_breakeven_fraud_rate() == pytest.approx(0.03125)
    assert 11 <= curve.best <= 60  # challenge the 60s, not the 10s
    assert curve.at(curve.best) > max(curve.at(0), curve.at(100))


def test_never_challenging_earns_the_margin_minus_every_fraud() -> None:
    scores, fraud = np.array([5, 50, 95]), np.array([False, True, False])
    assert profit_curve(Population(scores, fraud)).at(100) == 3 * 1_500 - 9_000


# -- the challenge flow through our API and the sandbox ----------------------------------


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with local_stack() as running:
        yield running


def _pay(stack: LocalStack, key: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.url}/v1/payments",
        json={"amount": 7500, "currency": "usd", "payment_method": "pm_card_visa", **body},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def _authenticate(stack: LocalStack, intent_id: str, result: str) -> None:
    authenticate(stack.sandbox_url, stack.psp_key, intent_id, succeed=result == "succeed")


def _eventually(stack: LocalStack, payment_id: str, check: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 15
    while True:
        status = str(
            httpx.get(
                f"{stack.url}/v1/payments/{payment_id}",
                headers={"Authorization": f"Bearer {stack.api_key}"},
                timeout=30,
            ).json()["status"]
        )
        if check(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_a_low_risk_payment_goes_straight_through(stack: LocalStack) -> None:
    assert _pay(stack, "low", risk_score=10)["status"] == "succeeded"


def test_a_high_risk_payment_waits_for_3ds_then_succeeds_by_webhook(stack: LocalStack) -> None:
    payment = _pay(stack, "high", risk_score=90)
    assert payment["status"] == "requires_action"
    assert payment["next_action"]["type"] == "three_d_secure"
    _authenticate(stack, payment["psp_payment_intent"], "succeed")
    assert _eventually(stack, payment["id"], lambda s: s == "succeeded") == "succeeded"


def test_a_failed_challenge_fails_the_payment_and_charges_nothing(stack: LocalStack) -> None:
    payment = _pay(stack, "high-fail", risk_score=90)
    _authenticate(stack, payment["psp_payment_intent"], "fail")
    assert _eventually(stack, payment["id"], lambda s: s == "failed") == "failed"


def test_a_card_that_demands_3ds_is_waiting_not_failed(stack: LocalStack) -> None:
    payment = _pay(stack, "card-3ds", payment_method="pm_card_threeDSecure2Required")
    assert payment["status"] == "requires_action"


def test_a_risk_score_outside_0_to_99_is_a_clear_400(stack: LocalStack) -> None:
    response = httpx.post(
        f"{stack.url}/v1/payments",
        json={"amount": 100, "currency": "usd", "payment_method": "pm_card_visa",
              "risk_score": 150},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": "bad"},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 400
    assert "risk_score" in response.text
