"""Lists, search and ``expand``: the read side of Stripe's API.

Lists are newest first, ``limit`` 1-100 (default 10), paginated with
``starting_after=<id>``, which is how the SDK's ``auto_paging_iter`` walks
them. Search supports the clauses the PSP client needs to resolve an unknown
outcome: ``metadata['key']:'value'``, ``status:'succeeded'``, joined by ``AND``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.forms import get_int, get_str
from payment_systems.integrations.psp_sandbox.store import Obj

PREFIX_TYPES = {
    "pi": "payment_intent",
    "ch": "charge",
    "txn": "balance_transaction",
    "re": "refund",
    "po": "payout",
    "dp": "dispute",
    "evt": "event",
    "we": "webhook_endpoint",
}
_CHUNK = 500


def page(
    ctx: Ctx,
    kind: str,
    params: dict[str, Any],
    url: str,
    *,
    parent: str | None = None,
    payout: str | None = None,
    keep: Callable[[Obj], bool] = lambda _: True,
) -> Obj:
    """One page of a list, filtered in SQL where possible and by ``keep`` otherwise."""
    limit = get_int(params, "limit") or 10
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100", param="limit")
    before: int | None = None
    after = get_str(params, "starting_after")
    if after:
        before = ctx.store.seq_of(ctx.conn, ctx.account, after)
        if before is None:
            raise NotFound(kind, after, "starting_after")
    found: list[Obj] = []
    while len(found) <= limit:
        chunk = ctx.store.find(
            ctx.conn,
            ctx.account,
            kind,
            parent=parent,
            payout=payout,
            limit=_CHUNK,
            before_seq=before,
        )
        found += [obj for _, obj in chunk if keep(obj)]
        if len(chunk) < _CHUNK:
            break
        before = chunk[-1][0]
    data = [expand(ctx, obj, params) for obj in found[:limit]]
    return {"object": "list", "data": data, "has_more": len(found) > limit, "url": url}


_CLAUSE = re.compile(r"""^\s*(metadata\['([^']+)'\]|[a-z_]+)\s*:\s*'([^']*)'\s*$""")


def search(ctx: Ctx, kind: str, params: dict[str, Any], url: str) -> Obj:
    """``GET /v1/<kind>s/search?query=…`` over this account's objects."""
    query = get_str(params, "query", required=True)
    assert query is not None
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        match = _CLAUSE.match(part)
        if match is None:
            raise InvalidRequest(
                f"Unsupported search clause: {part!r}; use field:'value' or "
                "metadata['key']:'value', joined by AND",
                param="query",
            )
        clauses.append((match.group(2), match.group(1), match.group(3)))

    def matches(obj: Obj) -> bool:
        for meta_key, field, value in clauses:
            actual = obj["metadata"].get(meta_key) if meta_key else obj.get(field)
            if str(actual) != value:
                return False
        return True

    limit = get_int(params, "limit") or 10
    hits = [obj for _, obj in ctx.store.find(ctx.conn, ctx.account, kind) if matches(obj)]
    return {
        "object": "search_result",
        "data": [expand(ctx, o, params) for o in hits[:limit]],
        "has_more": len(hits) > limit,
        "next_page": None,
        "url": url,
    }


def expand(ctx: Ctx, obj: Obj, params: dict[str, Any]) -> Obj:
    """Replace ids with objects for each ``expand[]`` path.

    ``latest_charge.balance_transaction`` expands the charge, then its transaction.
    """
    paths = params.get("expand") or []
    if isinstance(paths, str):
        paths = [paths]
    for path in paths:
        if isinstance(path, str):
            obj = _expand_path(ctx, obj, path.removeprefix("data.").split("."))
    return obj


def _expand_path(ctx: Ctx, obj: Obj, parts: list[str]) -> Obj:
    head, rest = parts[0], parts[1:]
    value = obj.get(head)
    if isinstance(value, str) and "_" in value:
        kind = PREFIX_TYPES.get(value.split("_", 1)[0])
        found = ctx.get(kind, value) if kind else None
        if found is not None:
            value = found
    if isinstance(value, dict) and rest:
        value = _expand_path(ctx, value, rest)
    return {**obj, head: value}
