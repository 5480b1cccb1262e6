"""The partition proxy: real traffic through it, cut and restored on command."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from payment_systems.chaos.proxy import FaultProxy
from payment_systems.infra.redis import EmbeddedRedis
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient, PSPOutcomeUnknown, RetryPolicy
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import CircuitBreaker


@pytest.fixture
def redis_behind_proxy() -> Iterator[FaultProxy]:
    with EmbeddedRedis() as server, FaultProxy(server.socket_path) as proxy:
        yield proxy


def _client(proxy: FaultProxy) -> redis.Redis:
    host, _, port = proxy.address.partition(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=0.5, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))  # fmt: skip


def test_in_pass_mode_traffic_flows_untouched(redis_behind_proxy: FaultProxy) -> None:
    with _client(redis_behind_proxy) as client:
        assert client.ping() is True


def test_a_blackhole_is_noticed_only_as_a_timeout_and_heals(
    redis_behind_proxy: FaultProxy,
) -> None:
    with _client(redis_behind_proxy) as client:
        client.set("k", "v")
        redis_behind_proxy.set_mode("blackhole")
        with pytest.raises(redis.TimeoutError):
            client.get("k")
    redis_behind_proxy.set_mode("pass")
    with _client(redis_behind_proxy) as healed:
        assert healed.get("k") == b"v"


def test_a_reset_drops_live_connections_and_refuses_new_ones(
    redis_behind_proxy: FaultProxy,
) -> None:
    with _client(redis_behind_proxy) as live:
        live.ping()
        redis_behind_proxy.set_mode("reset")
        with pytest.raises(redis.ConnectionError):
            live.ping()  # the live connection was dropped
    with _client(redis_behind_proxy) as fresh, pytest.raises(redis.ConnectionError):
        fresh.ping()  # and a new one is refused
    redis_behind_proxy.set_mode("pass")
    with _client(redis_behind_proxy) as healed:
        assert healed.ping() is True


def test_a_partition_after_the_request_reached_the_psp_is_an_unknown_outcome_resolved_later(
    psp_sandbox: SandboxServer, psp_key: str
) -> None:
    upstream = psp_sandbox.url.removeprefix("http://")
    with FaultProxy(upstream) as proxy:
        psp = PSPClient(
            psp_key, f"http://{proxy.address}", read_timeout_s=0.5,
            retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02),
            breaker=CircuitBreaker(f"p-{uuid.uuid4()}"),
        )  # fmt: skip
        proxy.set_mode("blackhole")
        with pytest.raises(PSPOutcomeUnknown):
            psp.authorize(merchant_id="m_1", payment_id="pay_p1", amount=Money(900, "USD"),
                          payment_method="pm_card_visa")  # fmt: skip
        proxy.set_mode("pass")
        # Whether the held request reaches the PSP after the partition heals is unknowable
        # from here, as in real life. Retrying with the same key is safe either way.
        retried = psp.authorize(
            merchant_id="m_1", payment_id="pay_p1", amount=Money(900, "USD"),
            payment_method="pm_card_visa",
        )  # fmt: skip
        assert retried.status == "succeeded"
        found = psp.stripe.v1.payment_intents.search(
            params={"query": "metadata['payment_id']:'pay_p1'"}
        )
        assert len(found.data) == 1  # charged exactly once
