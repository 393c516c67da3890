from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from notification_service.webhooks.signing import signature_headers
from notification_service.webhooks.verify import WebhookVerificationError, verify

# The Standard Webhooks specification's published test vector.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = '{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SENT_AT = datetime.fromtimestamp(TIMESTAMP, tz=UTC)


def vector_headers() -> dict[str, str]:
    return {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }


def test_signing_reproduces_the_published_vector() -> None:
    assert signature_headers(MSG_ID, SENT_AT, BODY, [SECRET]) == vector_headers()


def test_verify_accepts_the_published_vector() -> None:
    assert verify(SECRET, BODY.encode(), vector_headers(), now=SENT_AT) == {"test": 2432232314}
    # header names are case-insensitive, as HTTP's are
    upper = {k.title(): v for k, v in vector_headers().items()}
    assert verify(SECRET, BODY, upper, now=SENT_AT + timedelta(minutes=4)) == {"test": 2432232314}


def test_verify_refuses_an_old_or_future_message() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, BODY, vector_headers())  # the wall clock is years past the vector
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(SECRET, BODY, vector_headers(), now=SENT_AT - timedelta(minutes=6))


@pytest.mark.parametrize(
    ("body", "secret", "signature"),
    [
        ('{"test": 2432232315}', SECRET, SIGNATURE),
        (BODY, "whsec_" + "A" * 32, SIGNATURE),
        (BODY, SECRET, "v2," + SIGNATURE[3:]),
        (BODY, SECRET, "v1,not-base64!"),
        (BODY, SECRET, "garbage"),
        (BODY, SECRET, "v1,"),
    ],
)
def test_verify_refuses_anything_else(body: str, secret: str, signature: str) -> None:
    headers = {**vector_headers(), "webhook-signature": signature}
    with pytest.raises(WebhookVerificationError):
        verify(secret, body, headers, now=SENT_AT)


def test_verify_needs_every_header() -> None:
    for missing in vector_headers():
        headers = {k: v for k, v in vector_headers().items() if k != missing}
        with pytest.raises(WebhookVerificationError, match="Missing"):
            verify(SECRET, BODY, headers, now=SENT_AT)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, BODY, {**vector_headers(), "webhook-timestamp": "soon"}, now=SENT_AT)


def test_every_active_secret_signs_so_a_rotation_verifies_either_way() -> None:
    old, new = SECRET, "whsec_" + "c2VjcmV0LWtleS1udW1iZXItdHdvLWZvci10ZXN0cw=="
    now = datetime.now(UTC)
    body = json.dumps({"type": "reward.available.v1"})
    headers = signature_headers("evt_1", now, body, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(old, body, headers) == verify(new, body, headers)
    with pytest.raises(ValueError, match="secret"):
        signature_headers("evt_1", now, body, [])
