"""The Payments API over real HTTP: idempotency per the IETF draft, problem+json errors."""

from __future__ import annotations

import pytest

from tests.conftest import ApiUnderTest

BODY = {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa"}


def test_create_returns_201_with_the_payment(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", BODY)
    assert response.status_code == 201
    payment = response.json()
    assert payment["status"] == "succeeded"
    assert payment["id"].startswith("pay_")
    assert (payment["amount"], payment["currency"]) == (2000, "usd")


def test_replay_returns_the_stored_response_byte_for_byte(api: ApiUnderTest) -> None:
    first = api.post("/v1/payments", BODY)
    again = api.post("/v1/payments", BODY)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


def test_a_missing_idempotency_key_is_a_400(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", BODY, key=None)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_idempotency_key"


def test_an_overlong_idempotency_key_is_a_400(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", BODY, key="k" * 256)
    assert response.status_code == 400
    assert "limit is 255" in response.json()["detail"]


def test_the_same_key_with_a_different_body_is_a_422(api: ApiUnderTest) -> None:
    api.post("/v1/payments", BODY)
    response = api.post("/v1/payments", {**BODY, "amount": 2001})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (
            b'{"amount": 10.5, "currency": "usd", "payment_method": "pm_card_visa"}',
            "integer number of minor units",
        ),
        (b'{"amount": 0, "currency": "usd", "payment_method": "pm_card_visa"}', "amount"),
        (b'{"amount": -5, "currency": "usd", "payment_method": "pm_card_visa"}', "amount"),
        (b'{"amount": "100", "currency": "usd", "payment_method": "pm_card_visa"}', "amount"),
        (b'{"amount": 100, "currency": "usd"}', "payment_method"),
        (b'{"amount": 100, "currency": "usd", "payment_method": "x", "colour": "red"}', "colour"),
        (b"[1, 2]", "JSON object"),
    ],
    ids=[
        "bad-json",
        "float",
        "zero",
        "negative",
        "string-amount",
        "missing-field",
        "unknown-field",
        "array",
    ],
)
def test_bad_input_is_a_clear_400_never_a_500(api: ApiUnderTest, raw: bytes, fragment: str) -> None:
    response = api.post("/v1/payments", None, raw=raw)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.json()["detail"]


def test_an_unknown_currency_is_a_400_that_names_it(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", {**BODY, "currency": "xyz"})
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_currency"
    assert "'xyz'" in response.json()["detail"]


def test_an_oversized_body_is_a_413(api: ApiUnderTest) -> None:
    huge = {**BODY, "description": "x" * 20_000}
    response = api.post("/v1/payments", huge)
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_a_validation_error_stores_nothing_so_the_key_works_after_fixing(api: ApiUnderTest) -> None:
    assert api.post("/v1/payments", {**BODY, "currency": "xyz"}).status_code == 400
    assert api.post("/v1/payments", BODY).status_code == 201


def test_a_missing_or_wrong_api_key_is_a_401(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", BODY, api_key="sk_test_wrong")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]


def test_another_merchant_cannot_read_the_payment(api: ApiUnderTest) -> None:
    payment = api.post("/v1/payments", BODY).json()
    assert api.get(f"/v1/payments/{payment['id']}").status_code == 200
    other = api.get(f"/v1/payments/{payment['id']}", api_key=api.key_b)
    assert other.status_code == 404


def test_another_merchant_reusing_the_key_gets_nothing_of_the_first(api: ApiUnderTest) -> None:
    first = api.post("/v1/payments", BODY, key="shared")
    second = api.post("/v1/payments", BODY, key="shared", api_key=api.key_b)
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


def test_manual_capture_then_partial_refund(api: ApiUnderTest) -> None:
    payment = api.post("/v1/payments", {**BODY, "capture_method": "manual"}).json()
    assert payment["status"] == "requires_capture"
    captured = api.post(f"/v1/payments/{payment['id']}/capture", {"amount": 1500}, key="cap-1")
    assert captured.json()["status"] == "succeeded"
    assert captured.json()["amount_captured"] == 1500
    refund = api.post("/v1/refunds", {"payment": payment["id"], "amount": 500}, key="ref-1")
    assert refund.status_code == 201
    assert refund.json()["payment"]["status"] == "partially_refunded"


def test_refunding_too_much_is_a_400_and_not_stored(api: ApiUnderTest) -> None:
    payment = api.post("/v1/payments", BODY).json()
    too_much = api.post("/v1/refunds", {"payment": payment["id"], "amount": 2001}, key="r")
    assert too_much.status_code == 400
    assert too_much.json()["code"] == "refund_exceeds_captured"
    assert (
        api.post("/v1/refunds", {"payment": payment["id"], "amount": 2001}, key="r").status_code
        == 400
    )


def test_capturing_a_succeeded_payment_is_a_409(api: ApiUnderTest) -> None:
    payment = api.post("/v1/payments", BODY).json()
    response = api.post(f"/v1/payments/{payment['id']}/capture", {}, key="cap")
    assert response.status_code == 409
    assert response.json()["code"] == "payment_unexpected_state"


def test_a_declined_card_is_a_created_payment_with_status_failed(api: ApiUnderTest) -> None:
    response = api.post("/v1/payments", {**BODY, "payment_method": "pm_card_chargeDeclined"})
    assert response.status_code == 201
    assert response.json()["status"] == "failed"
    assert response.json()["failure_code"] == "card_declined"


def test_health_reports_ok(api: ApiUnderTest) -> None:
    import httpx

    body = httpx.get(f"{api.url}/healthz").json()
    assert body["status"] == "ok"
    assert body["redis"] == "ok"


def test_cancel_voids_an_authorization_and_its_replay_is_byte_for_byte(api: ApiUnderTest) -> None:
    body = {"amount": 2500, "currency": "usd", "payment_method": "pm_card_visa",
            "capture_method": "manual"}  # fmt: skip
    payment = api.post("/v1/payments", body, key="auth-1").json()
    first = api.post(f"/v1/payments/{payment['id']}/cancel", {}, key="cancel-1")
    again = api.post(f"/v1/payments/{payment['id']}/cancel", {}, key="cancel-1")
    assert first.status_code == 200 and first.json()["status"] == "canceled"
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"


def test_balance_is_scoped_by_api_key_and_read_from_the_books(api: ApiUnderTest) -> None:
    body = {"amount": 10_000, "currency": "usd", "payment_method": "pm_card_visa"}
    payment = api.post("/v1/payments", body, key="pay-a").json()
    api.post("/v1/refunds", {"payment": payment["id"], "amount": 3000}, key="refund-a")
    mine = api.get("/v1/balance").json()
    theirs = api.get("/v1/balance", api_key=api.key_b).json()
    assert mine["object"] == "balance"
    total = sum(b["amount"] for b in mine["available"] + mine["pending"])
    assert (
        total
        == 10_000 - 3000 - payment["fee"]
        == api.get(f"/v1/payments/{payment['id']}").json()["net"]
    )
    assert theirs["available"] == [] and theirs["pending"] == []


def test_a_key_reused_after_redis_expired_it_with_another_body_is_422_not_the_old_payment(
    api: ApiUnderTest,
) -> None:
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
    assert api.post("/v1/payments", body, key="reused").status_code == 201
    api.runtime.redis.flushdb()  # the 24 h record is gone; the payment row is not
    other = api.post("/v1/payments", {**body, "amount": 9900}, key="reused")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
