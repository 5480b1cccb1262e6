"""Every program under snippets/ runs, as a reader would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SNIPPETS = sorted((Path(__file__).resolve().parents[2] / "snippets").glob("*.py"))


def test_there_are_snippets_to_run() -> None:
    assert SNIPPETS


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[p.name for p in SNIPPETS])
def test_snippet_runs_to_completion(snippet: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(snippet)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[p.name for p in SNIPPETS])
def test_snippet_explains_itself_with_help(snippet: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(snippet), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_split_bill_prints_shares_that_add_up() -> None:
    script = next(p for p in SNIPPETS if p.name == "split_bill.py")
    out = subprocess.run(
        [sys.executable, str(script), "10.00", "EUR", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "payer 1: €3.34" in out
    assert "payer 3: €3.33" in out
