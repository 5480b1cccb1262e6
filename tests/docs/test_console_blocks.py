"""Shell commands shown on the site run, and print what the page says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.conftest import ROOT
from tests.docs.console import Command, commands_in_docs, nox_sessions, sessions_ci_runs

COMMANDS = commands_in_docs(ROOT / "docs")
RUNNABLE = [c for c in COMMANDS if nox_sessions(c.command) is None]
SETUP = [c for c in COMMANDS if nox_sessions(c.command) is not None]


def test_the_docs_show_commands() -> None:
    assert COMMANDS


@pytest.mark.parametrize("shown", SETUP, ids=[c.source for c in SETUP])
def test_every_nox_session_a_page_tells_readers_to_run_is_run_by_ci(shown: Command) -> None:
    sessions = nox_sessions(shown.command)
    assert sessions is not None
    assert sessions <= sessions_ci_runs(ROOT / ".ci" / "run") | {"serve", "bench"}


@pytest.mark.parametrize("shown", RUNNABLE, ids=[c.source for c in RUNNABLE])
def test_command_shown_on_a_page_runs_and_prints_what_the_page_says(shown: Command) -> None:
    # The reader has the package installed; so does this interpreter's environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        shown.command, shell=True, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    if shown.expected_output:
        assert _lines(result.stdout) == _lines(shown.expected_output)


def _lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.strip().splitlines()]


def test_setup_commands_are_recognised_as_nox_sessions() -> None:
    assert nox_sessions("python3 -m pip install nox && nox -s docs") == {"docs"}
    assert nox_sessions("nox -s lint tests docs") == {"lint", "tests", "docs"}
    assert nox_sessions("payment-systems --help") is None


def test_sessions_ci_runs_reads_the_nox_line(tmp_path: Path) -> None:
    script = tmp_path / "run"
    script.write_text('# nox -s bench\n"$PYTHON" -m nox --no-reuse -s lint tests docs\n')
    assert sessions_ci_runs(script) == {"lint", "tests", "docs"}
