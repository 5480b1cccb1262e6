"""The dispute lifecycle, network monitoring and fight-or-accept: pure rules, no I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_systems.business.impact import chargeback_fight
from payment_systems.chargebacks import lifecycle as lc
from payment_systems.chargebacks.decision import FeeModel, estimated_win_rate, fight_or_accept
from payment_systems.chargebacks.monitoring import MonthCounts, mastercard, vamp
from payment_systems.chargebacks.service import path_between
from payment_systems.core.ledger import Direction
from payment_systems.money import Money, Rounding

S = lc.DisputeStatus
FEES = lc.DisputeFees()
USD75 = Money(7_500, "USD")


def _open(status: lc.DisputeStatus = S.NEEDS_RESPONSE, due_by: int = 100) -> lc.Dispute:
    dispute, _ = lc.open_dispute("dp_1", "pay_1", USD75, "fraudulent", status, due_by, FEES)
    return dispute


def _balances(moves: list[lc.Movement]) -> Counter[str]:
    balances: Counter[str] = Counter()
    for leg in lc.journal_legs(moves):
        sign = 1 if leg.direction is Direction.DEBIT else -1
        balances[leg.account] += sign * leg.amount.amount_minor
    return balances


# -- the state machine -----------------------------------------------------------------


def test_a_closed_dispute_never_reopens() -> None:
    won, _ = lc.step(lc.step(_open(), S.UNDER_REVIEW, now=1, fees=FEES)[0], S.WON, now=2, fees=FEES)
    with pytest.raises(lc.IllegalDisputeTransition, match="never reopens"):
        lc.step(won, S.LOST, now=3, fees=FEES)


def test_a_chargeback_cannot_be_decided_before_evidence_is_reviewed() -> None:
    with pytest.raises(lc.IllegalDisputeTransition, match="cannot become won"):
        lc.step(_open(), S.WON, now=1, fees=FEES)


def test_a_dispute_cannot_open_already_decided() -> None:
    with pytest.raises(lc.IllegalDisputeTransition, match="cannot open as won"):
        lc.open_dispute("dp_1", "pay_1", USD75, "fraudulent", S.WON, 0, FEES)


def test_evidence_is_accepted_only_once() -> None:
    already = replace(_open(), evidence_submitted=True)  # e.g. a record restored from the PSP
    with pytest.raises(lc.EvidenceAlreadySubmitted, match="accept it once"):
        lc.step(already, S.UNDER_REVIEW, now=1, fees=FEES)


def test_evidence_after_the_deadline_is_refused_and_the_deadline_loses_the_dispute() -> None:
    dispute = _open(due_by=100)
    with pytest.raises(lc.ResponseDeadlinePassed, match="due by 100"):
        lc.step(dispute, S.UNDER_REVIEW, now=101, fees=FEES)
    expired, moves = lc.expire(dispute, now=101, fees=FEES)
    assert expired.status is S.LOST
    assert [m.kind for m in moves] == ["loss"]


def test_an_unanswered_inquiry_escalates_to_a_chargeback_with_a_new_deadline() -> None:
    inquiry = _open(S.WARNING_NEEDS_RESPONSE, due_by=100)
    escalated, moves = lc.step(inquiry, S.NEEDS_RESPONSE, now=101, fees=FEES, due_by=700)
    assert (escalated.status, escalated.due_by, escalated.funds_withdrawn) == (
        S.NEEDS_RESPONSE, 700, True,
    )  # fmt: skip
    assert [m.kind for m in moves] == ["withdrawal", "dispute_fee"]


def test_an_inquiry_moves_no_money_when_opened_or_answered() -> None:
    _, opened = lc.open_dispute(
        "dp_1", "pay_1", USD75, "fraudulent", S.WARNING_NEEDS_RESPONSE, 9, FEES
    )
    _, answered = lc.step(_open(S.WARNING_NEEDS_RESPONSE), S.WARNING_UNDER_REVIEW, now=1, fees=FEES)
    assert opened == answered == []


def test_a_won_chargeback_costs_exactly_the_dispute_fee() -> None:
    dispute, opened = lc.open_dispute("dp_1", "pay_1", USD75, "fraudulent", S.NEEDS_RESPONSE,
                                      100, FEES)  # fmt: skip
    dispute, submitted = lc.step(dispute, S.UNDER_REVIEW, now=1, fees=FEES)
    _, won = lc.step(dispute, S.WON, now=2, fees=FEES)
    balances = _balances(opened + submitted + won)
    assert balances["disputed_funds"] == 0
    assert balances["dispute_fees"] == 1_500
    assert balances["psp_receivable"] == -1_500


def test_a_lost_chargeback_books_the_amount_as_a_loss_and_both_fees() -> None:
    dispute, opened = lc.open_dispute("dp_1", "pay_1", USD75, "fraudulent", S.NEEDS_RESPONSE,
                                      100, FEES)  # fmt: skip
    dispute, submitted = lc.step(dispute, S.UNDER_REVIEW, now=1, fees=FEES)
    _, lost = lc.step(dispute, S.LOST, now=2, fees=FEES)
    balances = _balances(opened + submitted + lost)
    assert (balances["disputed_funds"], balances["dispute_losses"], balances["dispute_fees"]) == (
        0, 7_500, 3_000,
    )  # fmt: skip


def test_fees_follow_the_dispute_currency_at_face_value() -> None:
    _dispute, moves = lc.open_dispute("dp_1", "pay_1", Money(10_000, "JPY"), "fraudulent",
                                     S.NEEDS_RESPONSE, 9, FEES)  # fmt: skip
    assert [str(m.amount) for m in moves] == ["10000 JPY", "15 JPY"]


@given(st.lists(st.sampled_from(list(S)), max_size=8), st.sampled_from(sorted(lc.OPENING)))
def test_any_walk_of_legal_moves_keeps_every_journal_balanced_and_closes_disputed_funds(
    targets: list[lc.DisputeStatus], opening: lc.DisputeStatus
) -> None:
    dispute, moves = lc.open_dispute("dp_1", "pay_1", USD75, "fraudulent", opening, 100, FEES)
    history = list(moves)
    for target in targets:
        if target in lc.TRANSITIONS[dispute.status] and not (
            target in (S.UNDER_REVIEW, S.WARNING_UNDER_REVIEW) and dispute.evidence_submitted
        ):
            dispute, moves = lc.step(dispute, target, now=1, fees=FEES, due_by=200)
            history += moves
    balances = _balances(history)
    assert sum(balances.values()) == 0  # debits equal credits
    if dispute.status in (S.WON, S.LOST) or not dispute.funds_withdrawn:
        assert balances["disputed_funds"] == 0  # nothing left in limbo once decided


def test_the_walk_from_any_status_to_the_psps_never_goes_backwards() -> None:
    assert path_between(S.WARNING_NEEDS_RESPONSE, S.WON) == [
        S.NEEDS_RESPONSE, S.UNDER_REVIEW, S.WON,
    ]  # fmt: skip
    assert path_between(S.LOST, S.NEEDS_RESPONSE) == []
    assert path_between(S.UNDER_REVIEW, S.UNDER_REVIEW) == []


# -- network monitoring ------------------------------------------------------------------


def _counts(month: date, settled: int, previous: int, chargebacks: int) -> MonthCounts:
    return MonthCounts("m_1", month, settled, previous, chargebacks)


def test_vamp_tightens_from_2_2_to_1_5_percent_in_april_2026() -> None:
    at_1_8_percent = {"settled": 100_000, "previous": 100_000, "chargebacks": 1_800}
    assert vamp(_counts(date(2026, 3, 1), **at_1_8_percent)).tier == "standard"
    assert vamp(_counts(date(2026, 4, 1), **at_1_8_percent)).tier == "excessive"


def test_vamp_ignores_small_merchants_at_or_below_1500_counted_items() -> None:
    assert vamp(_counts(date(2026, 11, 1), 10_000, 10_000, 1_500)).tier == "standard"  # 15%


def test_vamp_counts_fraud_reports_without_a_dispute_too() -> None:
    counts = MonthCounts("m_1", date(2026, 11, 1), 100_000, 100_000, 1_000, 600)
    status = vamp(counts)
    assert (status.count, status.ratio, status.tier) == (1_600, Decimal("0.016"), "excessive")


def test_mastercard_divides_by_the_previous_months_sales() -> None:
    # 150 chargebacks on a quiet previous month (10,000) but a busy current one (50,000)
    status = mastercard(_counts(date(2026, 11, 1), 50_000, 10_000, 150))
    assert (status.ratio, status.tier) == (Decimal("0.015"), "ECM")


@pytest.mark.parametrize(
    ("chargebacks", "previous", "tier"),
    [(99, 1_000, "standard"), (100, 10_000, "CMM"), (100, 6_000, "ECM"),
     (300, 10_000, "HECM"), (299, 5_000, "ECM")],
)  # fmt: skip
def test_mastercard_tiers_need_both_the_ratio_and_the_count(
    chargebacks: int, previous: int, tier: str
) -> None:
    assert mastercard(_counts(date(2026, 11, 1), 1, previous, chargebacks)).tier == tier


# -- fight or accept -----------------------------------------------------------------


def test_the_study_plans_worked_example_says_fight_and_saves_2400_not_24000_a_year() -> None:
    decision = fight_or_accept(USD75, Decimal("0.30"), Money(2_500, "USD"), Money(1_500, "USD"),
                               FeeModel.REFUNDED_ON_WIN)  # fmt: skip
    assert decision.fight and str(decision.expected_value) == "2.00 USD"
    yearly = decision.expected_value.multiply(100 * 12, rounding=Rounding.HALF_UP)
    assert str(yearly) == "2400.00 USD" == str(chargeback_fight().annual_gain)


def test_the_2025_counter_fee_flips_the_worked_example_to_accept() -> None:
    decision = fight_or_accept(USD75, Decimal("0.30"), Money(2_500, "USD"), Money(1_500, "USD"))
    assert not decision.fight
    assert str(decision.expected_value) == "-13.00 USD"
    assert decision.break_even_win_rate.quantize(Decimal("0.001")) == Decimal("0.444")


def test_a_win_rate_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        fight_or_accept(USD75, Decimal("1.2"), Money(2_500, "USD"), Money(1_500, "USD"))


def test_our_history_moves_the_win_rate_away_from_the_prior_as_it_grows() -> None:
    assert estimated_win_rate(0, 0) == Decimal("0.30")
    assert estimated_win_rate(9, 1) > estimated_win_rate(1, 0) > Decimal("0.30")
