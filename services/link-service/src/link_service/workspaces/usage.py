"""last_used_at of workspace keys, kept cheap: the authenticator notes each use in memory and
this worker (servicekit.keys.KeyUsage) writes what it noted at most once per
KEY_USAGE_FLUSH_SECONDS, one statement for all keys. The other services note their own uses the
same way and publish them (`api_keys.used.v1`), which `on_keys_used` folds into the same
column: a key's last use is its last use at any service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from link_service.workspaces import repository
from referral_events.contracts import link as ev
from referral_events.envelope import CloudEvent
from servicekit.keys import KeyUsage as _KeyUsage
from servicekit.keys import Uses
from servicekit.runtime import Runtime

FLUSH_INTERVAL_SECONDS = 60.0


async def _record(conn: asyncpg.Connection, used: Uses) -> None:
    merged: dict[str, datetime] = {}
    for uses in used.values():
        merged.update(uses)
    await repository.record_use(conn, merged)


class KeyUsage(_KeyUsage):
    def __init__(self, rt: Runtime, interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        super().__init__(rt, _record, interval)


async def on_keys_used(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
    """Another service's uses of the workspace's keys (never moving last_used_at backwards)."""
    assert isinstance(payload, ev.ApiKeysUsed)
    await repository.record_use(conn, payload.uses, workspace_id=event.tenantid)
