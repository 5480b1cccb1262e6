"""Every notebook under docs/notebooks runs top to bottom without error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "docs" / "notebooks").glob("*.py"))


def test_there_are_notebooks_to_run() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_as_a_script(notebook: Path) -> None:
    # jupytext percent notebooks are plain Python; Agg draws figures without a screen.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(notebook)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
