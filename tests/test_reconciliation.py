"""Three-way reconciliation finds every injected break, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment_systems.core.recon_formats import (
    UnsortedInput,
    read_bank,
    read_ledger,
    read_psp,
    to_major,
    to_minor,
)
from payment_systems.core.recon_generator import Dataset, inject, sandbox_days, synthetic_files
from payment_systems.core.reconciliation import (
    BreakClass,
    Report,
    Tolerance,
    reconcile,
    reconcile_files,
)
from payment_systems.integrations.psp_sandbox import SandboxServer

ALL = list(BreakClass)


@pytest.fixture(scope="module")
def clean(psp_sandbox: SandboxServer) -> Dataset:
    """Three days of real traffic through the sandbox: partial captures, refunds, payouts."""
    return sandbox_days(psp_sandbox.url, days=3, per_day=14, seed=11)


def _run(data: Dataset, tmp: Path, **kw: object) -> Report:
    """Both engines, which must agree: the streaming one on rows, the fast one on files."""
    ledger, psp, bank = data.write(tmp)
    rows = reconcile(read_ledger(ledger), read_psp(psp), read_bank(bank), cutoff=data.cutoff, **kw)  # type: ignore[arg-type]
    files = reconcile_files(ledger, psp, bank, cutoff=data.cutoff, **kw)  # type: ignore[arg-type]
    assert files.breaks == rows.breaks
    assert (files.matched, files.payouts_matched) == (rows.matched, rows.payouts_matched)
    return files


def _found(report: Report) -> set[tuple[BreakClass, str]]:
    return {(b.cls, b.reference) for b in report.breaks}


def test_clean_traffic_reconciles_with_no_breaks(clean: Dataset, tmp_path: Path) -> None:
    report = _run(clean, tmp_path)
    assert report.breaks == []
    assert report.matched == len(clean.ledger)
    assert (
        report.payouts_matched == len(clean.bank) > 1
    )  # several daily payouts, each batching many


def test_the_generated_traffic_is_realistic(clean: Dataset) -> None:
    kinds = {row.kind for row in clean.ledger}
    assert kinds == {"charge", "refund"}
    assert all(row.fee > 0 for row in clean.ledger if row.kind == "charge")
    assert len({row.payout_id for row in clean.psp if row.kind != "payout"}) >= 2


@pytest.mark.parametrize("cls", ALL, ids=[c.value for c in ALL])
def test_each_break_class_is_found_and_classified(
    clean: Dataset, tmp_path: Path, cls: BreakClass
) -> None:
    broken = inject(clean, {cls: 2}, seed=3)
    assert _found(_run(broken, tmp_path)) == broken.expected


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.sampled_from(ALL), st.integers(0, 2)), st.integers(0, 10_000))
def test_any_mix_of_breaks_is_found_exactly(
    clean: Dataset,
    tmp_path_factory: pytest.TempPathFactory,
    counts: dict[BreakClass, int],
    seed: int,
) -> None:
    counts = {c: n for c, n in counts.items() if c is not BreakClass.MISSING_IN_BANK} | (
        {BreakClass.MISSING_IN_BANK: min(counts.get(BreakClass.MISSING_IN_BANK, 0), 1)}
    )
    broken = inject(clean, counts, seed=seed)
    found = _found(_run(broken, tmp_path_factory.mktemp("mix")))
    assert found == broken.expected  # all found, correctly classified, no false positives


def test_timing_breaks_clear_on_the_next_days_run(clean: Dataset, tmp_path: Path) -> None:
    broken = inject(clean, {BreakClass.TIMING: 2}, seed=5)
    today = _run(broken, tmp_path)
    assert {b.cls for b in today.breaks} == {BreakClass.TIMING}
    assert today.unexplained == []
    timing_refs = {b.reference for b in today.breaks}
    tomorrow_psp = sorted(
        (p for p in broken.psp if p.reference in timing_refs), key=lambda p: p.reference
    )
    tomorrow = reconcile(
        [], tomorrow_psp, [], cutoff=broken.cutoff + 86_400, carried=today.carried_ledger
    )
    assert tomorrow.breaks == []
    assert tomorrow.matched == 2


def test_an_amount_inside_the_tolerance_matches(clean: Dataset, tmp_path: Path) -> None:
    broken = inject(clean, {BreakClass.AMOUNT_MISMATCH: 1}, seed=9)
    ((_, ref),) = broken.expected
    row = next(r for r in broken.ledger if r.reference == ref)
    original = next(r for r in clean.ledger if r.reference == ref)
    report = _run(
        broken, tmp_path, tolerance=Tolerance(amount_minor=abs(row.amount - original.amount))
    )
    assert report.breaks == []


def test_an_unsorted_file_is_refused_with_instructions(tmp_path: Path) -> None:
    (tmp_path / "ledger.csv").write_text(
        "reference,payment_id,type,amount,fee,currency,booked_at\n"
        "ch_b,pay_1,charge,1.00,0.33,usd,2026-01-01T00:00:00Z\n"
        "ch_a,pay_2,charge,1.00,0.33,usd,2026-01-01T00:00:00Z\n"
    )
    with pytest.raises(UnsortedInput, match="sort it first"):
        list(read_ledger(tmp_path / "ledger.csv"))


def test_amounts_parse_to_minor_units_without_floats() -> None:
    assert to_minor("1234.56", "usd") == 123456
    assert to_minor("-0.01", "usd") == -1
    assert to_minor("5", "jpy") == 5
    assert to_major(-1, "usd") == "-0.01"
    with pytest.raises(ValueError, match="more decimals"):
        to_minor("1.005", "usd")


def test_a_large_synthetic_day_reconciles_clean(tmp_path: Path) -> None:
    synthetic_files(tmp_path, 20_000)
    report = reconcile(
        read_ledger(tmp_path / "ledger.csv"), read_psp(tmp_path / "psp.csv"),
        read_bank(tmp_path / "bank.csv"), cutoff=2_000_000_000,
    )  # fmt: skip
    assert report.breaks == []
    assert report.matched == 20_000
    assert report.payouts_matched == 20


def test_the_cli_exits_non_zero_on_unexplained_breaks_and_writes_reports(
    clean: Dataset, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from payment_systems.cli import app

    broken = inject(clean, {BreakClass.FEE_MISMATCH: 1, BreakClass.TIMING: 1}, seed=2)
    ledger, psp, bank = broken.write(tmp_path)
    cutoff = __import__("payment_systems.core.recon_formats", fromlist=["iso"]).iso(broken.cutoff)
    args = ["reconcile", str(ledger), str(psp), str(bank), "--cutoff", cutoff,
            "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "fee_mismatch" in result.output
    assert (tmp_path / "r.csv").read_text().count("\n") == 3  # header + 2 breaks
    only_timing = inject(clean, {BreakClass.TIMING: 1}, seed=2)
    ledger, psp, bank = only_timing.write(tmp_path)
    ok = CliRunner().invoke(
        app, ["reconcile", str(ledger), str(psp), str(bank), "--cutoff", cutoff]
    )
    assert ok.exit_code == 0  # timing is explained: it clears next run


def test_our_real_ledger_reconciles_with_the_psp_and_the_bank(tmp_path: Path) -> None:
    import httpx

    from payment_systems.api.local import local_stack
    from payment_systems.core.recon_generator import Dataset
    from payment_systems.core.recon_sources import bank_from_payouts, ledger_from_db, psp_from_api

    with local_stack() as stack:

        def post(path: str, body: dict[str, object], key: str) -> dict[str, object]:
            headers = {"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key}
            return httpx.post(f"{stack.url}{path}", json=body, headers=headers).json()  # type: ignore[no-any-return]

        for n, card in enumerate(["pm_card_visa", "pm_card_mastercard", "pm_card_amex"]):
            paid = post(
                "/v1/payments",
                {"amount": 1000 + n, "currency": "usd", "payment_method": card},
                f"p{n}",
            )
            post("/v1/refunds", {"payment": paid["id"], "amount": 100}, f"r{n}")
        manual = {"amount": 5000, "currency": "usd", "payment_method": "pm_card_visa",
                  "capture_method": "manual"}  # fmt: skip
        held = post("/v1/payments", manual, "h")
        post(f"/v1/payments/{held['id']}/capture", {"amount": 3000}, "c")
        httpx.post(f"{stack.sandbox_url}/_sandbox/clock/advance", data={"seconds": 4 * 86_400},
                   auth=(stack.psp_key, ""))  # fmt: skip
        psp = stack.runtime.service.psp
        data = Dataset(
            ledger_from_db(stack.runtime.sessions), psp_from_api(psp), bank_from_payouts(psp), 0
        )
    data.cutoff = max(r.at for r in data.psp)
    ledger, psp_file, bank = data.write(tmp_path)
    report = reconcile_files(ledger, psp_file, bank, cutoff=data.cutoff)
    assert report.breaks == []
    assert report.matched == 7  # 4 captures + 3 refunds
    assert report.payouts_matched == 1
