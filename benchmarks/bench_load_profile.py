"""Where the API's CPU goes at saturation: a py-spy flame graph and a table by library.

py-spy samples the running worker processes from outside (no code change,
no slowdown to speak of), 100 times a second, while the system is offered
more than it can do. The SVG is the flame graph on the load-testing page;
the rows attribute each sample's innermost frame to the library it is in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from payment_systems.load_tests.measure import load
from payment_systems.load_tests.system import running_system

TITLE = "Where the API workers' time goes at saturation (py-spy, 20 s)"
RESULTS = Path(__file__).resolve().parent / "results"
SECONDS = 20
LIBRARIES = (  # first match wins: (label, path fragment)
    ("our code (payment_systems)", "payment_systems/"),
    ("SQLAlchemy", "sqlalchemy/"),
    ("psycopg (PostgreSQL driver)", "psycopg"),
    ("stripe SDK, requests, urllib3", ("stripe/", "requests/", "urllib3/")),
    ("FastAPI, Starlette, pydantic", ("fastapi/", "starlette/", "pydantic")),
    ("uvicorn, asyncio, anyio", ("uvicorn/", "asyncio/", "anyio/", "h11/", "httptools")),
    ("redis-py", "redis/"),
)
STDLIB = "Python stdlib (threads, selectors, sockets, json)"  # py-spy prints bare stdlib paths


def _library(frame: str) -> str:
    for label, fragments in LIBRARIES:
        if any(f in frame for f in ((fragments,) if isinstance(fragments, str) else fragments)):
            return label
    return STDLIB


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def run() -> list[dict[str, Any]]:
    py_spy = _py_spy()
    if py_spy is None:
        return [{"library": "py-spy is not installed: pip install py-spy", "share": ""}]
    with running_system("postgres", workers=2, ADMISSION_LIMIT="0") as system, \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        raw, svg = Path(tmp) / "profile.txt", RESULTS / "load_profile.svg"
        spy = ["--pid", str(system.api_pid), "--subprocesses", "--duration", str(SECONDS),
               "--rate", "100", "--nonblocking"]  # fmt: skip
        jobs = [
            subprocess.Popen([py_spy, "record", *spy, "--format", "raw", "-o", str(raw)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([py_spy, "record", *spy, "--format", "flamegraph", "-o", str(svg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]  # fmt: skip
        loader = threading.Thread(target=load, args=(system, 120, SECONDS + 2))
        loader.start()
        for job in jobs:
            job.wait(timeout=SECONDS + 60)
        loader.join()
        samples: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1] if stack else ""
            samples[_library(leaf)] += int(count)
    total = sum(samples.values()) or 1
    return [
        {"library (innermost frame)": label, "share of busy samples": f"{n / total:.1%}"}
        for label, n in samples.most_common()
    ]


NOTES = (
    "py-spy record --subprocesses on the `payment-systems serve` process (both uvicorn "
    "workers), 100 samples/s for 20 s, while offered 120 payments/s (above capacity) with no "
    "admission limit. Idle samples are excluded (py-spy's default), but a thread waiting for "
    "PostgreSQL inside psycopg's Python wait loop counts as busy: the psycopg share is mostly "
    "database round trips (commits included), not driver CPU. The flame graph is "
    "benchmarks/results/load_profile.svg."
)
