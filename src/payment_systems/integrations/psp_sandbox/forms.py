"""Stripe's form encoding: nested brackets, as the official SDKs send them.

``metadata[order_id]=42&expand[0]=latest_charge&evidence[receipt]=r`` becomes
``{"metadata": {"order_id": "42"}, "expand": ["latest_charge"],
"evidence": {"receipt": "r"}}``. Values stay strings; each endpoint parses
the fields it knows, so a malformed integer is reported against its name.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from payment_systems.integrations.psp_sandbox.errors import InvalidRequest

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode(body: bytes | str) -> dict[str, Any]:
    """Decode a form body or query string into nested dicts and lists.

    Examples:
        >>> decode(b"amount=2000&metadata[order]=7&expand[0]=latest_charge")
        {'amount': '2000', 'metadata': {'order': '7'}, 'expand': ['latest_charge']}
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    result: dict[str, Any] = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(raw_key)
        if match is None:
            raise InvalidRequest(f"Invalid parameter name: {raw_key}", param=raw_key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        _assign(result, path, value, raw_key)
    decoded: dict[str, Any] = _lists(result)
    return decoded


def _assign(root: dict[str, Any], path: list[str], value: str, raw_key: str) -> None:
    node = root
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidRequest(f"Invalid parameter: {raw_key} mixes a value and a hash", raw_key)
        node = child
    last = path[-1]
    if last == "":  # "a[]=x" appends
        last = str(len(node))
    node[last] = value


def _lists(node: Any) -> Any:
    """Turn dicts whose keys are 0..n-1 into lists (``expand[0]``, ``items[1][price]``)."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    keys = list(converted)
    if keys and all(k.isdigit() for k in keys) and sorted(map(int, keys)) == list(range(len(keys))):
        return [converted[str(i)] for i in range(len(keys))]
    return converted


def get_int(params: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    """An integer parameter (Stripe amounts are integers of minor units)."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise InvalidRequest(f"Missing required param: {name}.", param=name)
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
        raise InvalidRequest(f"Invalid integer: {raw}", param=name)
    return int(raw)


def get_bool(params: dict[str, Any], name: str, default: bool = False) -> bool:
    """A boolean parameter: ``true``/``false`` as the SDK sends them."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw in ("true", "false"):
        return bool(raw == "true")
    raise InvalidRequest(f"Invalid boolean: {raw}", param=name)


def get_str(params: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise InvalidRequest(f"Missing required param: {name}.", param=name)
        return None
    if not isinstance(raw, str):
        raise InvalidRequest(f"Invalid string: {name}", param=name)
    return raw


def get_metadata(params: dict[str, Any]) -> dict[str, str]:
    """``metadata[...]``: string keys to string values, as Stripe stores it."""
    raw = params.get("metadata", {})
    if raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidRequest("Invalid metadata: pass metadata[key]=value pairs", param="metadata")
    return dict(raw)
