"""Any interleaving of create, replay, capture and refund keeps the books and the story straight."""

from __future__ import annotations

import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment_systems.core import payment_state as ps
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import CreatePayment, PaymentService
from payment_systems.database.ledger_store import account_balances
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.errors import PaymentSystemsError
from payment_systems.infra.engines import create_engine
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money

step = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 3), st.sampled_from(["automatic", "manual"]),
              st.integers(100, 10_000)),
    st.tuples(st.just("replay"), st.integers(0, 3), st.just(""), st.just(0)),
    st.tuples(st.just("capture"), st.integers(0, 3), st.just(""), st.integers(1, 100)),
    st.tuples(st.just("refund"), st.integers(0, 3), st.just(""), st.integers(1, 100)),
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(step, min_size=1, max_size=12))
def test_any_interleaving_keeps_the_ledger_balanced_and_state_equal_to_events(
    tmp_path: Path, psp_sandbox: SandboxServer, ops: list[tuple[str, int, str, int]]
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")  # fresh books per example
    upgrade(engine)
    sessions = session_factory(engine)
    with unit_of_work(sessions) as session:
        merchant, _ = create_merchant(session, f"m-{uuid.uuid4()}")
    service = PaymentService(sessions, PSPClient("sk_test_" + uuid.uuid4().hex, psp_sandbox.url))
    created: dict[int, str] = {}
    for n, (op, slot, capture_method, value) in enumerate(ops):
        key = f"{merchant.id}-key-{slot}"
        try:
            if op in ("create", "replay"):
                amount = Money(value or 500, "USD")
                payment = service.create(
                    merchant.id,
                    key,
                    CreatePayment(amount, "pm_card_visa", capture_method or "automatic"),
                )
                created.setdefault(slot, payment.id)
                assert payment.id == created[slot]  # a replay never makes a second payment
            elif slot in created:
                current = service.get(merchant.id, created[slot])
                if op == "capture":
                    part = Money(max(1, current.amount_minor * value // 100), "USD")
                    service.capture(merchant.id, current.id, part)
                else:
                    left = current.amount_captured - current.amount_refunded
                    service.refund(
                        merchant.id, current.id, f"r{n}", Money(max(1, left * value // 100), "USD")
                    )
        except PaymentSystemsError:
            pass  # refused operations (wrong state, too much) must change nothing
    with sessions() as session:
        balances = account_balances(session)
    assert sum(balances.values()) == 0
    captured = refunded = fees = 0
    for payment_id in created.values():
        stored = service.get(merchant.id, payment_id)
        folded = ps.fold(service.events(payment_id))
        assert (folded.status, folded.amount_captured, folded.amount_refunded) == (
            stored.status, stored.amount_captured, stored.amount_refunded,
        )  # fmt: skip
        captured += stored.amount_captured
        refunded += stored.amount_refunded
        fees += stored.fee_minor
    # the merchant is owed the net: captured - refunded - the PSP fees it pays
    assert -balances.get(("merchant_payable", "USD"), 0) == captured - refunded - fees
