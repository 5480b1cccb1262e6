"""Fixtures for the docs guards: a freshly built copy of the real site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_site(config: Path, site_dir: Path, *, strict: bool = True) -> None:
    """Run ``mkdocs build`` the way ``nox -s docs`` does; fail with mkdocs' own output."""
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(config), "-d", str(site_dir)]
    if strict:
        cmd.append("--strict")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    env.setdefault("MPLBACKEND", "Agg")
    result = subprocess.run(cmd, cwd=config.parent, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        pytest.fail(f"mkdocs build failed:\n{result.stdout}\n{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own site, built with --strict into a temporary directory."""
    site = tmp_path_factory.mktemp("site")
    build_site(ROOT / "mkdocs.yml", site)
    return site
