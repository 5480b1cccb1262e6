"""Start the PSP sandbox as its own process, as it would run next to a real service.

Benchmarks run the sandbox out of process so its CPU time is measured apart
from the client's and the two do not share one interpreter lock.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def sandbox_process() -> Iterator[tuple[str, psutil.Process]]:
    """Yield (base URL, process) of a freshly started ``payment-systems sandbox``."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "payment_systems", "sandbox", "--port", str(port), "--db", db],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("sandbox did not start") from None
                time.sleep(0.05)
            yield url, psutil.Process(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
