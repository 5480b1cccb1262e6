"""MkDocs hooks: put measured tables on any page with ``<!-- bench: NAME -->``.

The marker is replaced by the table from ``benchmarks/results/NAME.json``,
with the command, machine and date of the run, so prose pages quote
measurements without retyping (and silently staling) a single number.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_render

MARKER = re.compile(r"^<!-- bench: ([a-z0-9_]+) -->$", re.MULTILINE)
EXPLAIN = re.compile(r"^<!-- explain: idempotency_lookup -->$", re.MULTILINE)
EXPLAIN_WEBHOOK = re.compile(r"^<!-- explain: webhook_lookups -->$", re.MULTILINE)


def _explain_block() -> str:
    """EXPLAIN the idempotency lookup on a real, freshly migrated PostgreSQL."""
    from payment_systems.database.explain import LOOKUP, explain_idempotency_lookup
    from payment_systems.database.migrate import upgrade
    from payment_systems.infra import EmbeddedPostgres, create_engine

    with EmbeddedPostgres() as server:
        engine = create_engine(server.create_database("explain"))
        upgrade(engine)
        plan = explain_idempotency_lookup(engine)
        engine.dispose()
    return "```text\n" + f"EXPLAIN {LOOKUP};\n" + "\n".join(plan) + "\n```"


def _explain_webhook_block() -> str:
    """EXPLAIN the webhook's lookups (payment by intent, its refunds) on a real PostgreSQL."""
    from payment_systems.database.explain import explain_webhook_lookups
    from payment_systems.database.migrate import upgrade
    from payment_systems.infra import EmbeddedPostgres, create_engine

    with EmbeddedPostgres() as server:
        engine = create_engine(server.create_database("explain_webhooks"))
        upgrade(engine)
        plans = explain_webhook_lookups(engine)
        engine.dispose()
    text = "\n\n".join(f"EXPLAIN {query};\n" + "\n".join(plan) for query, plan in plans.items())
    return "```text\n" + text + "\n```"


IMPACT = re.compile(r"^<!-- impact: cases -->$", re.MULTILINE)


def _impact_table() -> str:
    """The business cases, computed now by payment_systems.business.impact."""
    from payment_systems.business.impact import cases

    lines = ["| Case | Inputs | Computed | Study plan says | Agrees |", "|---|---|---|---|---|"]
    shown = {True: "yes", False: "**no**", None: "n/a"}
    for case in cases():
        lines.append(
            f"| {case.name} | {case.inputs} | {case.computed} | {case.stated or 'not stated'} "
            f"| {shown[case.agrees]} |"
        )
    return "\n".join(lines)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if IMPACT.search(markdown):
        markdown = IMPACT.sub(lambda _m: _impact_table(), markdown)
    if EXPLAIN.search(markdown):
        markdown = EXPLAIN.sub(lambda _m: _explain_block(), markdown)
    if EXPLAIN_WEBHOOK.search(markdown):
        markdown = EXPLAIN_WEBHOOK.sub(lambda _m: _explain_webhook_block(), markdown)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        result = bench_render.load(name)
        return (
            f"{bench_render.table(name, result)}\n\n"
            f"{bench_render.provenance(result)} {result.get('notes', '')}"
        )

    return MARKER.sub(replace, markdown)
