"""The key store's per-replica cache and the authenticator's one answer to a bad key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicekit.auth import (
    INVALID_KEY,
    ApiKeyAuthenticator,
    hash_key,
    validate_scopes,
)
from servicekit.keys import NEGATIVE_TTL, KeyStore
from servicekit.problems import InvalidInput, Unauthorized
from servicekit.settings import ApiKeyEntry


class Rows:
    """Stands in for the pool's fetchrow: the rows of the key table by hash, counting reads."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.reads = 0

    async def fetchrow(self, _sql: str, key_hash: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.rows.get(key_hash)


def _row(**over: Any) -> dict[str, Any]:
    return {
        "id": "key_1",
        "workspace_id": "ws_1",
        "scopes": ["programs:read"],
        "plan": "standard",
        "expires_at": None,
        "revoked_at": None,
        **over,
    }


async def test_cache_hits_within_ttl_and_negative_entries_are_short() -> None:
    rows, now = Rows(), [0.0]
    store = KeyStore(lambda: rows, ttl=1.0, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    assert await store.get("h") is None and rows.reads == 1
    assert await store.get("h") is None and rows.reads == 1
    rows.rows["h"] = _row()
    now[0] += NEGATIVE_TTL + 0.01
    assert (await store.get("h")) is not None and rows.reads == 2
    rows.rows["h"] = _row(revoked_at=datetime.now(UTC))
    now[0] += 0.5
    assert (await store.get("h")).revoked_at is None  # type: ignore[union-attr]
    now[0] += 0.6
    assert (await store.get("h")).revoked_at is not None  # type: ignore[union-attr]


async def test_bad_keys_get_one_answer() -> None:
    rows = Rows()
    live, revoked, expired = "rk_live_a", "rk_live_b", "rk_test_c"
    rows.rows[hash_key(live)] = _row()
    rows.rows[hash_key(revoked)] = _row(revoked_at=datetime.now(UTC))
    rows.rows[hash_key(expired)] = _row(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    boot = "rk_bootstrap"
    auth = ApiKeyAuthenticator(
        [ApiKeyEntry(tenant_id="t", key_sha256=hash_key(boot), name="ops")],
        KeyStore(lambda: rows),  # type: ignore[arg-type,return-value]
    )
    who = await auth.authenticate(live)
    assert (who.tenant_id, who.key_id, who.platform) == ("ws_1", "key_1", False)
    assert (await auth.authenticate(boot)).platform
    reads = rows.reads
    details = set()
    for bad in (revoked, expired, "rk_live_unknown", "malformed"):
        with pytest.raises(Unauthorized) as exc:
            await auth.authenticate(bad)
        details.add((exc.value.detail, exc.value.field))
    assert details == {(INVALID_KEY, None)}
    # a malformed key never reaches the table
    assert rows.reads == reads + 3


def test_unknown_scope_names_its_index() -> None:
    assert validate_scopes(["admin", "admin", "programs:read"]) == ["admin", "programs:read"]
    with pytest.raises(InvalidInput) as exc:
        validate_scopes(["admin", "codes:read"])
    assert exc.value.field == "/scopes/1"
