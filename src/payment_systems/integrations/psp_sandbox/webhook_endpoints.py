"""``/v1/webhook_endpoints``: where the sandbox sends events, and the secret it signs with."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.forms import get_metadata, get_str
from payment_systems.integrations.psp_sandbox.payment_intents import reject_unknown
from payment_systems.integrations.psp_sandbox.store import Obj


def create(ctx: Ctx, params: dict[str, Any]) -> Obj:
    """Register ``url`` for ``enabled_events`` (``["*"]`` for all); returns a ``whsec_`` secret."""
    reject_unknown(params, {"url", "enabled_events", "description", "metadata", "api_version"})
    url = get_str(params, "url", required=True)
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"Invalid URL: {url}; use http:// or https://", param="url")
    events = params.get("enabled_events")
    if isinstance(events, str):
        events = [events]
    if not events or not all(isinstance(e, str) for e in events):
        raise InvalidRequest("Missing required param: enabled_events.", param="enabled_events")
    endpoint: Obj = {
        "id": ctx.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": None,
        "created": ctx.now,
        "description": get_str(params, "description"),
        "enabled_events": list(events),
        "livemode": False,
        "metadata": get_metadata(params),
        # Stripe's secrets are opaque; ours are base64 so Standard Webhooks can reuse them.
        "secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "status": "enabled",
        "url": url,
    }
    return ctx.insert(endpoint)


def delete(ctx: Ctx, endpoint_id: str) -> Obj:
    """Disable an endpoint; queued deliveries to it stop with it."""
    endpoint = ctx.get("webhook_endpoint", endpoint_id)
    if endpoint is None:
        raise NotFound("webhook_endpoint", endpoint_id)
    endpoint["status"] = "disabled"
    ctx.save(endpoint)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}
