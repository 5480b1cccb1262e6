"""The portfolio pages say only what the code and the tests back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from payment_systems.chargebacks.lifecycle import OPENING
from payment_systems.chargebacks.lifecycle import TRANSITIONS as DISPUTE_MOVES
from payment_systems.core import payment_state as ps

ROOT = Path(__file__).resolve().parents[1]
PORTFOLIO = ROOT / "docs" / "portfolio"


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    return names


def _mermaid(page: str, kind: str) -> list[str]:
    text = (PORTFOLIO / page).read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    return [b for b in blocks if b.startswith(kind)]


def test_every_test_a_portfolio_page_names_exists() -> None:
    existing = _test_names()
    for page in PORTFOLIO.glob("*.md"):
        named = set(re.findall(r"`(test_[a-z0-9_]+)`", page.read_text()))
        assert named <= existing, (page.name, sorted(named - existing))


def test_the_failure_modes_page_has_at_least_twenty_modes_each_with_a_proof() -> None:
    rows = [
        line for line in (PORTFOLIO / "failure-modes.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith(("| Failure", "|---"))
    ]  # fmt: skip
    assert len(rows) >= 20
    assert "Forty-four" in (PORTFOLIO / "failure-modes.md").read_text() and len(rows) == 44
    for row in rows:
        proof = row.rstrip(" |").rsplit("|", 1)[-1]
        assert "test_" in proof or "chaos.md" in proof, row


def _edges(diagram: str) -> set[tuple[str, str, str]]:
    found = re.findall(r"^\s*(\S+) --> (\S+)(?: : (.+))?$", diagram, re.M)
    return {(a, b, (label or "").strip()) for a, b, label in found}


TARGET = {
    ps.CREATED: {"processing"}, ps.AUTHORIZED: {"requires_capture"},
    ps.CAPTURED: {"succeeded"}, ps.FAILED: {"failed"}, ps.CANCELED: {"canceled"},
    ps.UNKNOWN: {"unknown"}, ps.ACTION_REQUIRED: {"requires_action"},
    ps.SCREENED: {"processing"},  # the fraud rules ran: recorded, status unchanged
    ps.REFUNDED: {"partially_refunded", "refunded"},
}  # fmt: skip


def test_the_payment_state_diagram_is_exactly_the_state_machine() -> None:
    [diagram] = [d for d in _mermaid("system-architecture.md", "stateDiagram") if "Payment" in d]
    drawn = {(a, b, e) for a, b, e in _edges(diagram) if a != "[*]" and b != "[*]"}
    code = {
        (status, target, event)
        for status, events in ps.TRANSITIONS.items()
        for event in events
        for target in TARGET[event]
    }
    assert drawn == code


def test_the_dispute_state_diagram_is_exactly_the_lifecycle() -> None:
    [diagram] = [d for d in _mermaid("system-architecture.md", "stateDiagram") if "won" in d]
    edges = _edges(diagram)
    drawn = {(a, b) for a, b, _ in edges if a != "[*]" and b != "[*]"}
    code = {(s.value, t.value) for s, moves in DISPUTE_MOVES.items() for t in moves}
    assert drawn == code
    assert {b for a, b, _ in edges if a == "[*]"} == {s.value for s in OPENING}
