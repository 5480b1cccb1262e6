"""Idempotency backends: the same request is processed once, whoever races it.

Each backend (Redis, Postgres, SQLite) must give the same answers; the tests
are parametrized over all three where the behaviour is shared.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
import redis
from sqlalchemy.engine import Engine

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
from payment_systems.database.models import Base
from payment_systems.infra.redis import connect_redis

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
