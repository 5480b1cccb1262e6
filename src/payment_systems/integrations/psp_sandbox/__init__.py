"""A Stripe-compatible PSP sandbox: the payment processor our system talks to.

It speaks a faithful subset of Stripe's API (form-encoded requests, Stripe's
object shapes, error types and idempotency semantics), so the official
``stripe`` SDK works against it unchanged: only the base address and the key
differ. Run it with ``payment-systems sandbox``, or in-process with
`SandboxServer`.
"""

from payment_systems.integrations.psp_sandbox.app import Sandbox, create_app
from payment_systems.integrations.psp_sandbox.server import SandboxServer, run_sandbox

__all__ = ["Sandbox", "SandboxServer", "create_app", "run_sandbox"]
