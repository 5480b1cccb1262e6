"""The payment-systems command explains itself and starts nothing it does not need."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from payment_systems import __version__
from payment_systems.cli import app

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"payment-systems {__version__}"


def test_help_says_what_the_project_is_and_how_to_use_real_servers() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "card-payments" in result.output
    assert "REDIS_URL" in result.output


def test_no_arguments_shows_help_instead_of_doing_something() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output


def test_config_masks_passwords_in_urls() -> None:
    env = {"REDIS_URL": "redis://:hunter2@cache:6379/0", "COLUMNS": "200"}
    result = runner.invoke(app, ["config"], env=env)
    assert result.exit_code == 0
    assert "hunter2" not in result.output
    assert "redis://:***@cache:6379/0" in result.output


def test_python_dash_m_runs_the_same_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "payment_systems", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"payment-systems {__version__}"


def test_config_shows_the_psp_and_masks_its_key() -> None:
    env = {
        "PSP_API_BASE": "https://api.stripe.com",
        "PSP_API_KEY": "sk_test_abcdefgh12345678",
        "COLUMNS": "200",
    }
    result = runner.invoke(app, ["config"], env=env)
    assert "https://api.stripe.com" in result.output
    assert "abcdefgh1234" not in result.output
    assert "sk_test_…5678" in result.output


def test_sandbox_help_explains_how_to_point_the_sdk_at_it() -> None:
    result = runner.invoke(app, ["sandbox", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "base_addresses" in result.output
