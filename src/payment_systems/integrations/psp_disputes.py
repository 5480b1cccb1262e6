"""The PSP's dispute endpoints, through the same breaker, limiter and retries as payments.

Kept apart from `payment_systems.integrations.stripe_client` because disputes
are a different conversation with the PSP: no money is created, a request is
a statement to the card network, and the one that matters (submitting
evidence) is accepted exactly once. Its idempotency key is therefore derived
from the dispute id alone, so a retry after a timeout cannot submit twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payment_systems.integrations.stripe_client import PSPClient


class DisputeGateway:
    """Read, answer and accept disputes at the PSP with the official SDK."""

    def __init__(self, psp: PSPClient) -> None:
        self.psp = psp

    def retrieve(self, dispute_id: str) -> dict[str, Any]:
        """The dispute as the PSP sees it now (the source of truth for its status)."""
        dispute = self.psp.call(
            "retrieve_dispute",
            dispute_id,
            "",
            lambda _o: self.psp.stripe.v1.disputes.retrieve(dispute_id),
        )
        as_dict: dict[str, Any] = dispute.to_dict()
        return as_dict

    def submit_evidence(self, dispute_id: str, evidence: Mapping[str, str]) -> dict[str, Any]:
        """Send ``evidence`` and submit it: the network reads it once, so this runs once."""
        params: dict[str, Any] = {"evidence": dict(evidence), "submit": True}
        dispute = self.psp.call(
            "submit_dispute_evidence",
            dispute_id,
            f"dispute:{dispute_id}:submit",
            lambda o: self.psp.stripe.v1.disputes.update(dispute_id, params=params, options=o),  # type: ignore[arg-type]
        )
        as_dict: dict[str, Any] = dispute.to_dict()
        return as_dict

    def accept(self, dispute_id: str) -> dict[str, Any]:
        """Accept the loss (or drop an inquiry): cheaper than fighting a case we would lose."""
        dispute = self.psp.call(
            "close_dispute",
            dispute_id,
            f"dispute:{dispute_id}:close",
            lambda o: self.psp.stripe.v1.disputes.close(dispute_id, options=o),
        )
        as_dict: dict[str, Any] = dispute.to_dict()
        return as_dict
