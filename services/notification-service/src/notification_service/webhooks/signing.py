"""Signing of outgoing webhooks per Standard Webhooks. The HMAC construction is the maintained
`standardwebhooks` package's, so what we sign is what every receiver library verifies; this
module only decides which secrets sign and shapes the headers.

Every unexpired secret of an endpoint signs (space-separated `v1,` entries): during a rotation
receivers holding either the old or the new secret accept the message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook


def signature_headers(
    msg_id: str, timestamp: datetime, body: str, secrets: Sequence[str]
) -> dict[str, str]:
    if not secrets:
        raise ValueError("an endpoint needs at least one secret to sign with")
    at = timestamp.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, at, body) for s in secrets),
    }
