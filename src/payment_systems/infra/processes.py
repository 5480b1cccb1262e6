"""Child services we start ourselves: wait until they answer, stop them without leaking them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, *, what: str, timeout_s: float = 60.0
) -> None:
    """Poll ``url``/healthz until it answers 200; raise with the log's tail if the child dies.

    A child that exits, or never answers within ``timeout_s``, is reported
    with the end of its own log: the only place its reason is written.
    """
    import httpx  # lazy: only the callers that start processes need it

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s`` for a graceful exit, then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # pragma: no cover - a wedged child
        process.kill()
        process.wait()
