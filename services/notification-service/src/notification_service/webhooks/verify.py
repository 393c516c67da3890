"""Verification for receivers of this platform's webhooks (Standard Webhooks).

It imports nothing of the platform, only `standardwebhooks` and the standard library, so a
receiver can depend on this package or copy the file. It reuses the package's `sign` (the
HMAC construction the spec fixes) rather than calling `Webhook.verify` as is, for two reasons:
`verify` reads the wall clock, so a receiver cannot check a recorded message or the spec's
published test vector against its own notion of now; and a malformed signature entry makes it
raise ValueError or binascii.Error instead of a verification error, which a receiver would
otherwise have to catch separately to answer 400 rather than 500.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

DEFAULT_TOLERANCE = timedelta(minutes=5)

__all__ = ["WebhookVerificationError", "verify"]


def verify(
    secret: str | bytes,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> Any:
    """The parsed JSON body when one `v1` signature matches and the timestamp is within
    `tolerance` of `now` (default: the current time); WebhookVerificationError otherwise.
    Several signatures may be present (a secret rotation): any one matching is enough."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError("Missing required headers")
    try:
        sent_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookVerificationError("Invalid Signature Headers") from None
    current = now or datetime.now(UTC)
    if sent_at < current - tolerance:
        raise WebhookVerificationError("Message timestamp too old")
    if sent_at > current + tolerance:
        raise WebhookVerificationError("Message timestamp too new")

    try:
        text = body if isinstance(body, str) else body.decode()
    except UnicodeDecodeError:
        raise WebhookVerificationError("Body is not UTF-8") from None
    expected = base64.b64decode(Webhook(secret).sign(msg_id, sent_at, text).split(",", 1)[1])
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, candidate):
            return json.loads(text)
    raise WebhookVerificationError("No matching signature found")
