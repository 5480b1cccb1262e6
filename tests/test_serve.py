"""``payment-systems serve`` on a fresh machine receives webhooks with no manual step.

When ``serve`` starts the PSP sandbox itself and no ``PSP_WEBHOOK_SECRETS`` is
set, it registers the API's webhook route with that sandbox and gives the
workers the secret; configuration someone did set is left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from payment_systems.core.merchants import create_merchant
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra import create_engine
from payment_systems.integrations.psp_sandbox.server import free_port


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


CONFIGURATION = ("REDIS_URL", "DATABASE_URL", "PSP_API_BASE", "PSP_API_KEY", "PSP_WEBHOOK_SECRETS")


@contextmanager
def _serve(tmp: Path, port: int, sandbox_port: int) -> Iterator[Path]:
    """``serve`` in its own process, as a newcomer runs it: nothing configured but the file."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    env["DATABASE_URL"] = f"sqlite:///{tmp / 'payments.db'}"
    env["COLUMNS"] = "300"  # rich wraps at 80 columns when writing to a file
    program = (
        "from payment_systems.api.serve import serve; "
        f"serve('127.0.0.1', {port}, 1, sandbox_port={sandbox_port})"
    )
    log = tmp / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", program], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not start:\n" + log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield log
    finally:
        # SIGTERM, as a supervisor stops it: uvicorn drains (waiting out the keep-alive
        # connection the sandbox's webhook sender holds), then serve stops what it started.
        process.terminate()
        process.wait(timeout=20)
    assert "Traceback" not in log.read_text()
    assert not _answers(f"http://127.0.0.1:{sandbox_port}"), "serve left its sandbox running"


def test_serve_registers_its_webhook_endpoint_with_the_sandbox_it_starts(tmp_path: Path) -> None:
    port, sandbox_port = free_port(), free_port()
    with _serve(tmp_path, port, sandbox_port) as log:
        printed = log.read_text()
        url = f"http://127.0.0.1:{port}/v1/webhooks/psp"
        assert re.search(rf"webhooks: registered {re.escape(url)} with the sandbox \(we_", printed)
        assert "whsec_" not in printed  # the secret itself is never printed
        engine = create_engine(f"sqlite:///{tmp_path / 'payments.db'}")
        with unit_of_work(session_factory(engine)) as session:
            _merchant, api_key = create_merchant(session, "Newcomer")
        engine.dispose()
        paid = httpx.post(
            f"http://127.0.0.1:{port}/v1/payments",
            json={"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"},
            headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "first"},
            timeout=30,
        )
        assert paid.status_code == 201, paid.text
        # The sandbox's events arrive and verify: the worker counts them by outcome
        # (a delivery with a bad signature would be a 400, never counted here).
        deadline = time.monotonic() + 10
        metrics = ""
        while 'webhooks_total{outcome="' not in metrics:
            assert time.monotonic() < deadline, "no verified webhook arrived\n" + metrics
            time.sleep(0.2)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'errors_total{code="signature_verification_failed"}' not in metrics


def test_serve_leaves_configured_webhook_secrets_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payment_systems.api import serve as serve_module

    for name in CONFIGURATION:
        monkeypatch.setenv(name, "")  # unset for Settings, restored after the test
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'payments.db'}")
    monkeypatch.setenv("PSP_WEBHOOK_SECRETS", "whsec_configured")
    seen: dict[str, str] = {}
    monkeypatch.setattr(  # stand in for the workers: what environment would they get?
        serve_module.uvicorn, "run", lambda *_args, **_kwargs: seen.update(os.environ)
    )
    sandbox_port = free_port()
    with (tmp_path / "out.txt").open("w") as out:
        console = Console(file=out, width=200)
        serve_module.serve("127.0.0.1", free_port(), 1, console, sandbox_port=sandbox_port)
    printed = (tmp_path / "out.txt").read_text()
    assert f"started the PSP sandbox at http://127.0.0.1:{sandbox_port}" in printed
    assert seen["PSP_WEBHOOK_SECRETS"] == "whsec_configured"
    assert "webhooks: registered" not in printed
    assert not _answers(f"http://127.0.0.1:{sandbox_port}")  # stopped when serve returned
