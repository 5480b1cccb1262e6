"""``payment-systems ledger balances|check`` read the books a real payment wrote."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from payment_systems.cli import app
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import CreatePayment, PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra import create_engine
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money


def _one_payment(url: str, sandbox: SandboxServer, psp_key: str) -> tuple[str, int]:
    engine = create_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with unit_of_work(sessions) as session:
        merchant, _key = create_merchant(session, "CLI Shop")
    service = PaymentService(sessions, PSPClient(psp_key, sandbox.url))
    payment = service.create(
        merchant.id, str(uuid.uuid4()), CreatePayment(Money.of("25.00", "USD"), "pm_card_visa")
    )
    engine.dispose()
    return merchant.id, 2500 - payment.fee_minor


def test_ledger_balances_prints_each_merchants_net_as_json(
    tmp_path: Path, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    merchant_id, net = _one_payment(url, psp_sandbox, psp_key)
    result = CliRunner().invoke(app, ["ledger", "balances", "--json"], env={"DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert (row["merchant"], row["currency"], row["total"]) == (merchant_id, "usd", net)


def test_ledger_check_exits_1_when_the_books_break(
    tmp_path: Path, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _one_payment(url, psp_sandbox, psp_key)
    clean = CliRunner().invoke(app, ["ledger", "check"], env={"DATABASE_URL": url})
    assert clean.exit_code == 0 and "the books are clean" in clean.output
    engine = create_engine(url)
    with engine.begin() as conn:  # the payment row now claims more than the books hold
        conn.execute(sa.text("UPDATE payments SET amount_captured = amount_captured + 1"))
    engine.dispose()
    broken = CliRunner().invoke(app, ["ledger", "check", "--json"], env={"DATABASE_URL": url})
    assert broken.exit_code == 1
    assert len(json.loads(broken.output)["balance_breaks"]) == 1
