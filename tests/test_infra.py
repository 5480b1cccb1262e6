"""Embedded services are real servers, and they do not leak."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from payment_systems.config import DEFAULT_DATABASE_URL, Settings
from payment_systems.infra import EmbeddedRedis, create_engine, normalize_url


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_redis_fixture_is_a_real_server_that_runs_lua(redis_client: redis.Redis) -> None:
    script = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 30000)"
    assert redis_client.eval(script, 1, "lock", "a") == b"OK"
    assert redis_client.eval(script, 1, "lock", "b") is None
    assert 0 < redis_client.pttl("lock") <= 30000


def test_redis_fixture_starts_each_test_flushed(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0


def test_embedded_redis_supports_streams_with_consumer_groups() -> None:
    with EmbeddedRedis() as server:
        client = server.client()
        client.xadd("events", {"type": "payment.succeeded"})
        client.xgroup_create("events", "relay", id="0")
        batch = client.xreadgroup("relay", "c1", {"events": ">"}, count=10)
        assert batch[0][1][0][1] == {b"type": b"payment.succeeded"}
        client.close()


def test_stopping_embedded_redis_kills_the_server_process() -> None:
    server = EmbeddedRedis().start()
    pid = server.pid
    server.stop()
    assert not _alive(pid)
    server.stop()  # a second stop is harmless


def test_pg_engine_is_a_real_postgres(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        got_lock = conn.execute(sa.text("SELECT pg_try_advisory_lock(42)")).scalar_one()
    assert int(version.split(".")[0]) >= 14
    assert got_lock is True


def test_sqlite_engine_enforces_foreign_keys(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1


def test_any_engine_runs_the_same_sql_on_both_databases(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (amount_minor BIGINT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO t VALUES (9007199254740993)"))  # > 2**53: no float
        assert conn.execute(sa.text("SELECT amount_minor FROM t")).scalar_one() == 2**53 + 1


def test_bare_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert create_engine("postgresql://u@h/db").dialect.driver == "psycopg"


def test_settings_default_to_embedded_services() -> None:
    assert Settings.from_env({}) == Settings(DEFAULT_DATABASE_URL, None)


def test_empty_env_values_count_as_unset() -> None:
    assert Settings.from_env({"REDIS_URL": "", "DATABASE_URL": ""}).redis_url is None


def test_a_process_that_starts_both_servers_leaves_no_server_running_after_exit() -> None:
    program = textwrap.dedent(
        """
        from payment_systems.infra import EmbeddedPostgres, EmbeddedRedis
        r = EmbeddedRedis().start()
        p = EmbeddedPostgres().start()
        print(r.pid, p.pid, flush=True)
        # no stop(): the atexit hooks must do it
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env
    ).stdout
    redis_pid, pg_pid = (int(x) for x in out.split())
    assert not _alive(redis_pid)
    psutil.wait_procs([p for p in [_proc(pg_pid)] if p], timeout=10)
    assert not _alive(pg_pid)


def test_a_killed_parent_takes_its_redis_server_with_it() -> None:
    program = textwrap.dedent(
        """
        import os, signal
        from payment_systems.infra import EmbeddedRedis
        print(EmbeddedRedis().start().pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    pid = int(proc.stdout.strip())
    child = _proc(pid)
    if child is not None:
        psutil.wait_procs([child], timeout=10)
    assert not _alive(pid)


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_a_dead_redis_is_reported_after_one_short_retry_not_seconds_of_backoff() -> None:
    from payment_systems.infra.redis import connect_redis

    client = connect_redis("unix:///nonexistent/redis.sock")
    retry = client.get_retry()
    assert retry is not None
    assert retry.get_retries() == 1  # redis-py's default is 3, with up to 10 s of backoff
    with pytest.raises(redis.ConnectionError, match="nonexistent"):
        client.ping()
