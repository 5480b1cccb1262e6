"""The study plan's idempotency experiments, recorded for the docs.

The same as ``payment-systems experiment idempotency``: see
`payment_systems.experiments.idempotency` for the workload.
"""

from __future__ import annotations

from typing import Any

from payment_systems.experiments.idempotency import VARIANTS, run_variant
from payment_systems.integrations.psp_sandbox.server import run_sandbox_process

TITLE = "Idempotency experiments: 30 keys x 3 concurrent clients, a PSP with a slow tail"
NOTES = (
    "Clients retry a 409 every 0.5 s. The PSP answers in 50 ms, but 1 call in 10 takes 6 s. "
    "The PSP idempotency key is random here, so only the layer under test prevents "
    "duplicates. 'lock' is the time to decide new / in progress / replay: Redis Lua versus "
    "Postgres advisory lock + row, measured in the same run."
)
PLOT = {
    "x": "variant",
    "y": ["duplicate charges"],
    "kind": "bar",
    "title": "Duplicate charges by variant",
}


def run() -> list[dict[str, Any]]:
    with run_sandbox_process() as (url, _pid):
        return [run_variant(variant, url).row() for variant in VARIANTS]
