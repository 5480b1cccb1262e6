"""Idempotency backends: the same request is processed once, whoever races it.

Each backend (Redis, Postgres, SQLite) must give the same answers; the tests
are parametrized over all three where the behaviour is shared.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from payment_systems.api.runtime import Runtime, build_runtime
from payment_systems.cli import app as cli
from payment_systems.core.idempotency import (
    Begin,
    IdempotencyBackend,
    IdempotencyUnavailable,
    InvalidIdempotencyKey,
    Outcome,
    RedisIdempotency,
    StoredResponse,
    fingerprint,
    validate_key,
)
from payment_systems.core.idempotency_sql import SqlIdempotency
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import Base
from payment_systems.infra.redis import connect_redis
from payment_systems.integrations.psp_sandbox import SandboxServer
from tests.conftest import ApiUnderTest

FP = fingerprint("POST", "/v1/payments", b'{"amount": 100}')
OTHER = fingerprint("POST", "/v1/payments", b'{"amount": 101}')
OK = StoredResponse(201, b'{"id": "pay_1", "status": "succeeded"}')


@pytest.fixture(params=["redis", "postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, redis_client: redis.Redis) -> IdempotencyBackend:
    if request.param == "redis":
        return RedisIdempotency(redis_client)
    engine: Engine = request.getfixturevalue(
        "pg_engine" if request.param == "postgres" else "sqlite_engine"
    )
    Base.metadata.create_all(engine)
    return SqlIdempotency(engine)


def test_the_first_request_is_new_and_gets_a_fencing_token(backend: IdempotencyBackend) -> None:
    begun = backend.begin("m_1", "k", FP)
    assert begun.outcome is Outcome.NEW
    assert begun.token > 0


def test_a_second_request_while_the_first_runs_is_in_progress(backend: IdempotencyBackend) -> None:
    backend.begin("m_1", "k", FP)
    assert backend.begin("m_1", "k", FP).outcome is Outcome.IN_PROGRESS


def test_replay_returns_the_stored_response_byte_for_byte(backend: IdempotencyBackend) -> None:
    token = backend.begin("m_1", "k", FP).token
    assert backend.complete("m_1", "k", token, OK)
    replay = backend.begin("m_1", "k", FP)
    assert replay.outcome is Outcome.REPLAY
    assert replay.response is not None
    assert (replay.response.status, replay.response.body) == (OK.status, OK.body)


def test_the_same_key_with_a_different_body_is_a_mismatch(backend: IdempotencyBackend) -> None:
    token = backend.begin("m_1", "k", FP).token
    backend.complete("m_1", "k", token, OK)
    assert backend.begin("m_1", "k", OTHER).outcome is Outcome.MISMATCH


def test_keys_are_scoped_per_merchant(backend: IdempotencyBackend) -> None:
    token = backend.begin("m_a", "shared-key", FP).token
    backend.complete("m_a", "shared-key", token, OK)
    other = backend.begin("m_b", "shared-key", FP)
    assert other.outcome is Outcome.NEW  # merchant B sees nothing of A's
    assert other.response is None


def test_release_stores_nothing_so_a_retry_is_new(backend: IdempotencyBackend) -> None:
    token = backend.begin("m_1", "k", FP).token
    backend.release("m_1", "k", token)
    assert backend.begin("m_1", "k", FP).outcome is Outcome.NEW


def test_a_stale_holder_cannot_overwrite_the_newer_holders_result(
    redis_client: redis.Redis,
) -> None:
    idem = RedisIdempotency(redis_client, lock_ttl_s=0.05)
    first = idem.begin("m_1", "k", FP)
    time.sleep(0.1)  # the first holder's lock expires mid-request
    second = idem.begin("m_1", "k", FP)
    assert second.outcome is Outcome.NEW
    assert second.token > first.token
    assert idem.complete("m_1", "k", second.token, OK)
    stale = StoredResponse(500, b'{"stale": true}')
    assert idem.complete("m_1", "k", first.token, stale) is False  # fenced out
    replay = idem.begin("m_1", "k", FP)
    assert replay.response is not None and replay.response.body == OK.body


def test_sql_backend_takes_over_a_dead_lock_and_resumes_at_its_recovery_point(
    sqlite_engine: Engine,
) -> None:
    Base.metadata.create_all(sqlite_engine)
    now = [datetime(2026, 1, 1, 12, 0, 0)]
    idem = SqlIdempotency(sqlite_engine, lock_timeout_s=30, clock=lambda: now[0])
    first = idem.begin("m_1", "k", FP)
    assert idem.checkpoint("m_1", "k", first.token, "psp_called")
    now[0] += timedelta(seconds=31)  # the first request died holding the lock
    resumed = idem.begin("m_1", "k", FP)
    assert resumed.outcome is Outcome.NEW
    assert resumed.recovery_point == "psp_called"
    assert idem.checkpoint("m_1", "k", first.token, "finished") is False  # fenced


def test_the_reaper_deletes_keys_older_than_24_hours(sqlite_engine: Engine) -> None:
    Base.metadata.create_all(sqlite_engine)
    now = [datetime(2026, 1, 1)]
    idem = SqlIdempotency(sqlite_engine, clock=lambda: now[0])
    idem.begin("m_1", "old", FP)
    now[0] += timedelta(hours=25)
    idem.begin("m_1", "new", FP)
    assert idem.reap() == 1
    assert idem.begin("m_1", "new", FP).outcome is Outcome.IN_PROGRESS  # the young key survives


def test_a_missing_or_overlong_key_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidIdempotencyKey, match="required"):
        validate_key(None)
    with pytest.raises(InvalidIdempotencyKey, match="256 characters; the limit is 255"):
        validate_key("k" * 256)
    assert validate_key("k" * 255) == "k" * 255


def test_a_dead_redis_fails_closed_with_a_typed_error() -> None:
    dead = connect_redis("unix:///nonexistent/redis.sock")
    with pytest.raises(IdempotencyUnavailable) as info:
        RedisIdempotency(dead).begin("m_1", "k", FP)
    assert info.value.http_status == 503


def test_fingerprints_ignore_json_key_order_but_not_values() -> None:
    assert fingerprint("POST", "/p", b'{"a":1,"b":2}') == fingerprint(
        "POST", "/p", b'{"b": 2, "a": 1}'
    )
    assert fingerprint("POST", "/p", b'{"a":1}') != fingerprint("POST", "/p", b'{"a":2}')
    assert fingerprint("POST", "/p", b"{}") != fingerprint("POST", "/q", b"{}")


@pytest.mark.parametrize("threads", [50])
def test_many_threads_racing_one_key_let_exactly_one_in(
    backend: IdempotencyBackend, threads: int
) -> None:
    barrier = threading.Barrier(threads)
    results: list[Begin] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        begun = backend.begin("m_1", "race", FP)
        with lock:
            results.append(begun)

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.NEW) == 1
    assert set(outcomes) == {Outcome.NEW, Outcome.IN_PROGRESS}


# -- a stale holder is fenced out, and the API says so ---------------------------------


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_stale_complete_is_reported_not_ignored(
    api: ApiUnderTest,
    psp_sandbox: SandboxServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.runtime.idempotency = RedisIdempotency(redis_client, lock_ttl_s=0.3)  # shorter than the PSP
    httpx.post(
        f"{psp_sandbox.url}/_sandbox/faults",
        json={"kind": "latency", "ms": 1500, "methods": "POST", "duration_s": 30},
        auth=(api.psp_key, ""),
    ).raise_for_status()
    payload = {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa"}
    merchant = api.runtime.merchant_for(api.key_a)
    assert merchant is not None
    fp = fingerprint("POST", "/v1/payments", json.dumps(payload).encode())
    caplog.set_level(logging.WARNING, logger="payment_systems.api.app")
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(api.post, "/v1/payments", payload, key="stale")
        record, lock, _fence = RedisIdempotency.keys(merchant, "stale")
        _wait_for(lambda: redis_client.exists(record) == 1)  # the first request holds the key
        _wait_for(lambda: redis_client.exists(lock) == 0)  # its lock expires; it is at the PSP
        assert not first.done()
        taker = api.runtime.idempotency.begin(merchant, "stale", fp)  # another holder
        assert taker.outcome is Outcome.NEW
        response = first.result()
    # The client still gets the truth: the payment is committed in the database...
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    # ...but the API does not pretend it stored the reply: it logs and counts the refusal.
    assert b"idempotency_stale_completions_total 1.0" in api.runtime.metrics.exposition()
    assert "stale" in caplog.text
    # The stale reply was refused, not stored: the key is not a replay of it.
    check = api.runtime.idempotency.begin(merchant, "stale", fp)
    assert check.outcome is Outcome.NEW  # the taker's lock has expired too; nothing stored
    api.runtime.idempotency.release(merchant, "stale", check.token)
    # A real retry re-runs the handler, which finds the committed payment by (merchant, key).
    retry = api.post("/v1/payments", payload, key="stale")
    assert retry.status_code == 201 and retry.json()["id"] == response.json()["id"]


# -- the SQL backend: tokens, content types, the reaper ----------------------------------


def test_sql_tokens_keep_increasing_after_release_so_a_stale_holder_cannot_overwrite(
    any_engine: Engine,
) -> None:
    upgrade(any_engine)
    now = [datetime(2026, 1, 1, 12, 0, 0)]
    idem = SqlIdempotency(any_engine, lock_timeout_s=30, clock=lambda: now[0])
    stale = idem.begin("m_1", "k", FP)
    now[0] += timedelta(seconds=31)  # its lock expires while it is still at the PSP
    second = idem.begin("m_1", "k", FP)
    assert second.token > stale.token
    idem.release("m_1", "k", second.token)  # the second fails before any side effect
    third = idem.begin("m_1", "k", FP)
    assert third.outcome is Outcome.NEW
    assert third.token > second.token > stale.token  # never back to 1
    assert idem.complete("m_1", "k", third.token, OK)
    assert idem.complete("m_1", "k", stale.token, StoredResponse(500, b"stale")) is False
    replay = idem.begin("m_1", "k", FP)
    assert replay.response is not None and replay.response.body == OK.body


def test_sql_released_key_accepts_a_new_body_like_redis(any_engine: Engine) -> None:
    upgrade(any_engine)
    idem = SqlIdempotency(any_engine)
    idem.release("m_1", "k", idem.begin("m_1", "k", FP).token)  # nothing stored
    assert idem.begin("m_1", "k", OTHER).outcome is Outcome.NEW  # as after a Redis release


def test_sql_replay_keeps_the_content_type(any_engine: Engine) -> None:
    upgrade(any_engine)
    idem = SqlIdempotency(any_engine)
    problem = StoredResponse(402, b'{"code":"card_declined"}', "application/problem+json")
    idem.complete("m_1", "declined", idem.begin("m_1", "declined", FP).token, problem)
    replay = idem.begin("m_1", "declined", FP)
    assert replay.response == problem  # status, body and content type, as first sent
    # A row stored before the column existed replays as the API sent it then.
    with any_engine.begin() as conn:
        conn.execute(sa.text("UPDATE idempotency_keys SET response_content_type = NULL"))
    old = idem.begin("m_1", "declined", FP).response
    assert old is not None and old.content_type == "application/problem+json"


def test_janitor_reaps_expired_sql_keys(
    any_engine: Engine,
    redis_url: str,
    psp_sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upgrade(any_engine)
    yesterday = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=25)
    old = SqlIdempotency(any_engine, clock=lambda: yesterday)
    old.complete("m_1", "old", old.begin("m_1", "old", FP).token, OK)
    young = SqlIdempotency(any_engine)
    young.complete("m_1", "young", young.begin("m_1", "young", FP).token, OK)
    env = {
        "DATABASE_URL": any_engine.url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "IDEMPOTENCY_FALLBACK": "sql",
        "PSP_API_BASE": psp_sandbox.url,
    }
    built: list[Runtime] = []  # the command's runtime, to close its pool when it is done

    def build_and_keep(*args: Any, **kwargs: Any) -> Runtime:
        built.append(build_runtime(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr("payment_systems.api.runtime.build_runtime", build_and_keep)
    try:
        result = CliRunner().invoke(cli, ["janitor"], env=env)
    finally:
        for runtime in built:
            runtime.engine.dispose()
    assert result.exit_code == 0, result.output
    assert "1 expired SQL idempotency key(s) reaped" in result.output
    assert young.begin("m_1", "old", FP).outcome is Outcome.NEW  # gone: reaped
    assert young.begin("m_1", "young", FP).outcome is Outcome.REPLAY  # a day old: kept
