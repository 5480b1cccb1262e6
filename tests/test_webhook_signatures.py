"""Webhook signatures interoperate with Stripe's SDK and the Standard Webhooks library."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe

from payment_systems.integrations.webhook_signatures import (
    SignatureVerificationError,
    sign_standard,
    sign_stripe,
    verify_standard,
    verify_stripe,
)

PAYLOAD = b'{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}'
STRIPE_SECRET = "whsec_test_secret_for_signatures"
NOW = 1_800_000_000


# -- Stripe-Signature ---------------------------------------------------------------


def test_our_stripe_signature_is_accepted_by_the_stripe_sdk() -> None:
    header = sign_stripe(STRIPE_SECRET, PAYLOAD, int(datetime.now(UTC).timestamp()))
    event = stripe.Webhook.construct_event(PAYLOAD, header, STRIPE_SECRET)
    assert event.id == "evt_1"


def test_we_accept_a_signature_made_by_the_stripe_sdk() -> None:
    header = stripe.WebhookSignature.generate_signature_header(PAYLOAD.decode(), STRIPE_SECRET, NOW)
    assert verify_stripe(STRIPE_SECRET, PAYLOAD, header, now=NOW) == NOW


def test_a_tampered_payload_is_rejected() -> None:
    header = sign_stripe(STRIPE_SECRET, PAYLOAD, NOW)
    with pytest.raises(SignatureVerificationError, match="no v1 signature matches"):
        verify_stripe(STRIPE_SECRET, PAYLOAD.replace(b"evt_1", b"evt_2"), header, now=NOW)


def test_a_replayed_old_signature_is_rejected() -> None:
    header = sign_stripe(STRIPE_SECRET, PAYLOAD, NOW)
    with pytest.raises(SignatureVerificationError, match="outside the 300s tolerance"):
        verify_stripe(STRIPE_SECRET, PAYLOAD, header, now=NOW + 301)


def test_a_timestamp_too_far_in_the_future_is_rejected() -> None:
    header = sign_stripe(STRIPE_SECRET, PAYLOAD, NOW + 301)
    with pytest.raises(SignatureVerificationError, match="tolerance"):
        verify_stripe(STRIPE_SECRET, PAYLOAD, header, now=NOW)


def test_only_v1_counts_so_a_v0_signature_cannot_downgrade() -> None:
    v1 = sign_stripe(STRIPE_SECRET, PAYLOAD, NOW).split("v1=")[1]
    with pytest.raises(SignatureVerificationError):
        verify_stripe(STRIPE_SECRET, PAYLOAD, f"t={NOW},v0={v1}", now=NOW)


def test_during_key_rotation_either_secret_verifies() -> None:
    old, new = "whsec_old_old_old", "whsec_new_new_new"
    header = sign_stripe(new, PAYLOAD, NOW)
    assert verify_stripe([old, new], PAYLOAD, header, now=NOW) == NOW


def test_a_header_with_several_signatures_passes_if_one_matches() -> None:
    good = sign_stripe(STRIPE_SECRET, PAYLOAD, NOW).split("v1=")[1]
    assert verify_stripe(STRIPE_SECRET, PAYLOAD, f"t={NOW},v1={'0' * 64},v1={good}", now=NOW)


# -- Standard Webhooks --------------------------------------------------------------

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TS, SPEC_PAYLOAD = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'


def test_sign_standard_reproduces_the_specs_published_test_vector() -> None:
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_PAYLOAD) == expected


def test_we_accept_a_signature_made_by_the_standardwebhooks_library() -> None:
    library = standardwebhooks.Webhook(SPEC_SECRET)
    stamp = datetime.fromtimestamp(NOW, UTC)
    signature = library.sign(SPEC_ID, stamp, SPEC_PAYLOAD.decode())
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert verify_standard(SPEC_SECRET, headers, SPEC_PAYLOAD, now=NOW) == SPEC_ID


def test_the_standardwebhooks_library_accepts_our_signature() -> None:
    stamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard(SPEC_SECRET, SPEC_ID, stamp, SPEC_PAYLOAD),
    }
    assert standardwebhooks.Webhook(SPEC_SECRET).verify(SPEC_PAYLOAD, headers) == {
        "test": 2432232314
    }


def test_standard_rotation_with_space_separated_signatures() -> None:
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
    old = sign_standard(other, SPEC_ID, NOW, SPEC_PAYLOAD)
    both = f"{old} {sign_standard(SPEC_SECRET, SPEC_ID, NOW, SPEC_PAYLOAD)}"
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(NOW), "webhook-signature": both}
    assert verify_standard(SPEC_SECRET, headers, SPEC_PAYLOAD, now=NOW) == SPEC_ID


def test_standard_rejects_a_stale_timestamp_and_missing_headers() -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(NOW - 400),
        "webhook-signature": sign_standard(SPEC_SECRET, SPEC_ID, NOW - 400, SPEC_PAYLOAD),
    }
    with pytest.raises(SignatureVerificationError, match="tolerance"):
        verify_standard(SPEC_SECRET, headers, SPEC_PAYLOAD, now=NOW)
    with pytest.raises(SignatureVerificationError, match="missing"):
        verify_standard(SPEC_SECRET, {}, SPEC_PAYLOAD, now=NOW)


def test_a_malformed_standard_secret_fails_at_once() -> None:
    with pytest.raises(ValueError, match="base64"):
        sign_standard("whsec_***not base64***", "m", 1, b"{}")
