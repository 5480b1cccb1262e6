"""Sessions: docs, serve, tests, lint, bench.

Each session builds its own virtualenv and installs what it needs, so a fresh
machine with only Python 3.11 and pip needs exactly:

    python3 -m pip install nox && nox -s docs
    nox -s tests
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
# Sessions run in a venv made from the interpreter that runs nox (Python >= 3.11).

DOCS_ENV = {
    "NO_MKDOCS_2_WARNING": "1",
    "DISABLE_MKDOCS_2_WARNING": "true",
    "MPLBACKEND": "Agg",
    "JUPYTER_PLATFORM_DIRS": "1",
}


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site into site/ with mkdocs --strict: any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "-d", "site", *session.posargs, env=DOCS_ENV)
    session.log("site built: open site/index.html, or run `nox -s serve`")


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the site with live reload on http://127.0.0.1:8000."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "serve", "-a", "127.0.0.1:8000", *session.posargs, env=DOCS_ENV)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: unit, integration (real Redis/Postgres), docs blocks, the guard.

    Extra arguments go to pytest: `nox -s tests -- tests/test_money.py -k alloc`.
    """
    session.install("-e", ".[test,docs]")
    _ensure_chromium(session)
    session.run("pytest", *session.posargs, env=DOCS_ENV)


def _ensure_chromium(session: nox.Session) -> None:
    """Debian's chromium, for the browser test of the site (installed when we are root).

    Playwright drives it; its own browser download needs the internet, apt does not
    (only the package mirror). Without root or apt the browser test says how to get it.
    """
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        session.warn("chromium not found and cannot be installed here: `apt-get install chromium`")
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env={**os.environ, **env}, check=False).returncode != 0:
        session.run("apt-get", "update", external=True, env=env)
        session.run(*install, external=True, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict src."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "src")


@nox.session
def bench(session: nox.Session) -> None:
    """Run benchmarks/ and write benchmarks/results/*.json (rendered by the docs).

    The wrk cross-check also wants Debian's ``wrk`` (apt-get install wrk); without it
    that benchmark records that it was skipped.
    """
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
