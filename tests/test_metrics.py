"""Business metrics, scraped from a running API after real traffic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.cli import app
from payment_systems.monitoring.metrics import _quantile, summarize


@pytest.fixture(scope="module")
def scrape() -> Iterator[tuple[LocalStack, str]]:
    with local_stack() as stack:
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        # three customers' cards (more distinct cards from one IP would look like card testing)
        cards = (["pm_card_visa", "pm_card_mastercard", "pm_card_amex"] * 3)[:8]
        for n, pm in enumerate(cards + ["pm_card_chargeDeclined"] * 2):
            body = {"amount": 1000, "currency": "usd", "payment_method": pm}
            httpx.post(
                f"{stack.url}/v1/payments",
                json=body,
                headers={**headers, "Idempotency-Key": f"k{n}"},
            )
        body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
        httpx.post(
            f"{stack.url}/v1/payments", json=body, headers={**headers, "Idempotency-Key": "k0"}
        )  # a replay
        deadline = time.monotonic() + 15
        text = httpx.get(f"{stack.url}/metrics").text
        while 'webhooks_total{outcome="stale"}' not in text:
            assert time.monotonic() < deadline, "no webhook reached the API"
            time.sleep(0.1)  # webhooks arrive asynchronously
            text = httpx.get(f"{stack.url}/metrics").text
        yield stack, text


def test_metrics_are_served_in_prometheus_text_format(scrape: tuple[LocalStack, str]) -> None:
    _, text = scrape
    assert 'payments_total{outcome="succeeded"} 8.0' in text
    assert "# TYPE payment_latency_seconds histogram" in text
    assert "outbox_backlog" in text
    assert "circuit_breaker_state 0.0" in text


def test_the_summary_computes_the_four_business_metrics(scrape: tuple[LocalStack, str]) -> None:
    _, text = scrape
    summary = summarize(text)
    assert summary.payments == 10
    assert summary.success_rate == pytest.approx(0.8)
    assert summary.duplicate_rate is not None and summary.duplicate_rate > 0
    assert summary.latency_p95_s is not None and summary.latency_p95_s > 0
    assert summary.webhook_lag_p95_s is not None


def test_metrics_summary_reads_a_running_server(scrape: tuple[LocalStack, str]) -> None:
    stack, _ = scrape
    result = CliRunner().invoke(
        app, ["metrics", "summary", "--url", stack.url], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "80.00%" in result.output
    assert "direct revenue impact" in result.output


def test_metrics_summary_reads_a_recorded_scrape(
    scrape: tuple[LocalStack, str], tmp_path: Path
) -> None:
    _, text = scrape
    saved = tmp_path / "metrics.txt"
    saved.write_text(text)
    result = CliRunner().invoke(
        app, ["metrics", "summary", "--file", str(saved)], env={"COLUMNS": "200"}
    )
    assert "80.00%" in result.output


def test_metrics_summary_says_what_to_do_when_nothing_answers() -> None:
    result = CliRunner().invoke(
        app, ["metrics", "summary", "--url", "http://127.0.0.1:9"], env={"COLUMNS": "200"}
    )
    assert result.exit_code != 0
    assert "payment-systems serve" in result.output


def test_quantiles_interpolate_within_a_bucket() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == pytest.approx(0.1)
    assert _quantile(buckets, 0.75) == pytest.approx(0.15)
    assert _quantile([], 0.95) is None
