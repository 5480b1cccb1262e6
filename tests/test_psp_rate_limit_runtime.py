"""The runtime's PSP client draws from one shared token bucket (finding 18).

``stripe_client.py`` promised "a shared rate limiter, so the fleet stays under
the PSP's limit"; `build_runtime` never passed one. These tests build real
runtimes on real Redis and check the bucket is there, is shared by every
worker, and degrades to a per-worker bucket instead of failing payments when
Redis dies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

import payment_systems.config as config_module
from payment_systems.api.runtime import Runtime, build_runtime, psp_rate_limiter
from payment_systems.config import Settings
from payment_systems.infra import EmbeddedRedis
from payment_systems.infra.http import BackgroundServer
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money
from payment_systems.patterns.rate_limit import TokenBucket


@pytest.fixture
def psp_env(psp_sandbox: SandboxServer, psp_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point `PSPClient.from_env` (what `build_runtime` uses) at the sandbox."""
    monkeypatch.setenv("PSP_API_BASE", psp_sandbox.url)
    monkeypatch.setenv("PSP_API_KEY", psp_key)
    return psp_key


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    """Runtimes built by a test, their pools closed afterwards."""
    built: list[Runtime] = []
    yield built
    for runtime in built:
        runtime.engine.dispose()


def _build(runtimes: list[Runtime], tmp: Path, client: redis.Redis, **settings: object) -> Runtime:
    runtime = build_runtime(
        Settings(database_url=f"sqlite:///{tmp / 'payments.db'}", **settings),  # type: ignore[arg-type]
        redis_client=client,
        migrate=True,
    )
    runtimes.append(runtime)
    return runtime


def _limiter(runtime: Runtime) -> TokenBucket:
    psp = runtime.service.psp
    assert isinstance(psp, PSPClient)
    assert isinstance(psp.limiter, TokenBucket)
    return psp.limiter


@pytest.mark.usefixtures("psp_env")
def test_runtime_psp_client_uses_the_shared_rate_limiter(
    redis_client: redis.Redis, runtimes: list[Runtime], tmp_path: Path
) -> None:
    # 0.5/s: a bucket of one token, refilled every 2 s, so the test cannot race the refill
    worker_a = _build(runtimes, tmp_path, redis_client, psp_rate_limit=0.5)
    worker_b = _build(runtimes, tmp_path, redis_client, psp_rate_limit=0.5)
    a, b = _limiter(worker_a), _limiter(worker_b)
    assert a.key == b.key  # one bucket for the fleet, not one per worker

    # A real PSP call through the runtime's client takes its token from Redis...
    intent = worker_a.service.psp.authorize(
        merchant_id="m_1",
        payment_id=f"pay_{uuid.uuid4().hex}",
        amount=Money.of("12.00", "USD"),
        payment_method="pm_card_visa",
    )
    assert intent.status == "succeeded"
    assert float(redis_client.hget(a.key, "tokens") or 0) < 1
    assert a.shared
    # ...so the other worker has none left: the budget is the fleet's
    assert b.try_acquire() == pytest.approx(2.0, abs=0.2)

    # At the default 100/s: a burst of 0.1 s, leased 5 tokens per Redis round trip.
    sized = psp_rate_limiter(redis_client, 100.0)
    assert sized is not None
    assert (sized.rate, sized.capacity, sized.lease) == (100.0, 10.0, 5.0)


@pytest.mark.usefixtures("psp_env")
def test_psp_rate_limit_setting_is_documented_defaulted_and_zero_turns_it_off(
    redis_client: redis.Redis, runtimes: list[Runtime], tmp_path: Path
) -> None:
    assert Settings.from_env({}).psp_rate_limit == 100.0
    assert Settings.from_env({"PSP_RATE_LIMIT": "25"}).psp_rate_limit == 25.0
    assert Settings.from_env({"PSP_RATE_LIMIT": "0"}).psp_rate_limit == 0.0
    with pytest.raises(ValueError, match="PSP_RATE_LIMIT must be >= 0"):
        Settings.from_env({"PSP_RATE_LIMIT": "-1"})
    off = _build(runtimes, tmp_path, redis_client, psp_rate_limit=0.0)
    assert isinstance(off.service.psp, PSPClient) and off.service.psp.limiter is None
    source = Path(config_module.__file__).read_text()
    assert "PSP_RATE_LIMIT:" in source  # documented beside the field, like the others


@pytest.mark.usefixtures("psp_env")
def test_rate_limiter_does_not_fail_payments_when_redis_is_down(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    """Redis dies; with IDEMPOTENCY_FALLBACK=sql a payment through the API still succeeds."""
    from payment_systems.api.app import create_app
    from payment_systems.core.merchants import create_merchant
    from payment_systems.database.session import unit_of_work

    with EmbeddedRedis() as server:
        runtime = _build(
            runtimes, tmp_path, server.client(),
            psp_rate_limit=50.0, idempotency_fallback="sql", fraud_rules=False,
        )  # fmt: skip
        with unit_of_work(runtime.sessions) as session:
            _merchant, api_key = create_merchant(session, "Shop")
        limiter = _limiter(runtime)
        with BackgroundServer(create_app(runtime)) as api:
            server.kill()
            response = httpx.post(
                f"{api.url}/v1/payments",
                json={"amount": 2500, "currency": "usd", "payment_method": "pm_card_visa"},
                headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "redis-down"},
                timeout=30,
            )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "succeeded"
        assert not limiter.shared  # it noticed, and limited this worker on its own


def test_the_local_fallback_still_limits_and_redis_is_tried_again_later() -> None:
    now = [0.0]
    with EmbeddedRedis() as server:
        bucket = TokenBucket(
            server.client(), "psp", rate=10, capacity=2,
            retry_shared_after_s=1.0, monotonic=lambda: now[0],
        )  # fmt: skip
        assert bucket.try_acquire() == 0.0 and bucket.shared
        server.kill()
        assert bucket.try_acquire() == 0.0  # from the local bucket: no exception
        assert not bucket.shared
        assert bucket.try_acquire() == 0.0
        assert bucket.try_acquire() == pytest.approx(0.1)  # still a limit: 10/s, burst 2
        server.start()  # a new, empty Redis at the same address
        assert not bucket.shared  # not retried before retry_shared_after_s...
        now[0] += 1.5
        assert bucket.try_acquire() == 0.0
        assert bucket.shared  # ...and then the fleet shares one bucket again


def test_a_lease_takes_several_tokens_in_one_round_trip_and_expires(
    redis_client: redis.Redis,
) -> None:
    now = [0.0]
    bucket = TokenBucket(
        redis_client, "leased", rate=100, capacity=10, lease=5, lease_ttl_s=0.25,
        clock_ms=lambda: 1_000_000, monotonic=lambda: now[0],
    )  # fmt: skip
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5  # one lease of 5
    assert float(redis_client.hget(bucket.key, "tokens") or 0) == pytest.approx(5)
    assert bucket.try_acquire() == 0.0  # a second lease: 5 more
    assert float(redis_client.hget(bucket.key, "tokens") or 0) == pytest.approx(0)
    now[0] += 1.0  # the remaining 4 leased tokens expire unspent...
    assert bucket.try_acquire() > 0.0  # ...so the empty shared bucket decides
