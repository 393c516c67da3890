"""The integrations webhooks name, cached per replica so a delivery's signature is checked
against the secret before the request takes a database connection: a flood of forged or
unknown-integration deliveries costs HMACs, not connections. Unknown ids are remembered too
(shorter). A change on this replica is seen at once (`forget`); other replicas see a rotated or
deleted secret within INTEGRATION_CACHE_SECONDS (a delivery refused meanwhile is retried by
Shopify and Stripe)."""

from __future__ import annotations

import time
from typing import Any

from attribution_service.commerce import domain as commerce
from attribution_service.commerce import handlers
from servicekit.runtime import Runtime
from servicekit.secretbox import SealedColumn, SecretBox

# The columns holding secrets, sealed (servicekit.secretbox; the Resealer keeps them under the
# newest SECRETS_KEY).
SEALED = [SealedColumn("integrations", "id", "secret")]

NEGATIVE_SECONDS = 2.0
MAX_CACHED = 10_000


class IntegrationCache:
    def __init__(self, ttl: float, sealer: SecretBox) -> None:
        self._ttl = ttl
        self._box = sealer
        self._rows: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def get(self, rt: Runtime, provider: str, integration_id: str) -> dict[str, Any]:
        """The integration, or Unverified as handlers.integration answers an unknown one."""
        now = time.monotonic()
        hit = self._rows.get(integration_id)
        if hit is None or hit[0] <= now:
            try:
                async with rt.transaction() as conn:
                    row: dict[str, Any] | None = await handlers.integration(
                        conn, provider, integration_id, self._box
                    )
            except commerce.Unverified:
                row = None
            if len(self._rows) >= MAX_CACHED:
                self._rows.clear()
            ttl = self._ttl if row is not None else NEGATIVE_SECONDS
            hit = self._rows[integration_id] = (now + ttl, row)
        row = hit[1]
        if row is None or row["provider"] != provider:
            raise commerce.Unverified("unknown integration", field="/integration_id")
        return row

    def forget(self) -> None:
        self._rows.clear()
