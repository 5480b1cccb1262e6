"""Subscribing our webhook route to the PSP: one place for everything that starts a PSP.

The PSP only sends events to URLs registered with it, and signs them with the
secret it returns at registration. Whatever starts the sandbox for us (``serve``,
`payment_systems.api.local.local_stack`, the load-test system) registers our
``POST /v1/webhooks/psp`` this way and hands that secret to the API, so events
arrive and verify with no manual step.
"""

from __future__ import annotations

from payment_systems.integrations.stripe_client import PSPClient

WEBHOOK_PATH = "/v1/webhooks/psp"


def webhook_url(host: str, port: int) -> str:
    """Where the PSP reaches an API bound to ``host``: a wildcard bind is reached on loopback.

    Examples:
        >>> webhook_url("0.0.0.0", 8000), webhook_url("::1", 8000)
        ('http://127.0.0.1:8000/v1/webhooks/psp', 'http://[::1]:8000/v1/webhooks/psp')
    """
    reachable = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in reachable:  # an IPv6 literal goes in brackets
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}{WEBHOOK_PATH}"


def register_webhook_endpoint(psp: PSPClient, url: str) -> tuple[str, str]:
    """Subscribe ``url`` to every event of ``psp``'s account: returns (endpoint id, secret).

    The secret (``whsec_…``) is what the API verifies deliveries with
    (``PSP_WEBHOOK_SECRETS``); never log it.
    """
    endpoint = psp.stripe.v1.webhook_endpoints.create(params={"url": url, "enabled_events": ["*"]})
    return str(endpoint.id), str(endpoint.secret)
