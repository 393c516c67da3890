"""The workspace.* and api_key.* events: one builder per type, from the stored row, keyed by
the workspace (its keys' changes stay in order)."""

from __future__ import annotations

from typing import TypeVar

import asyncpg

from link_service.events import EVENTS
from referral_events.contracts import link as ev

_State = TypeVar("_State", ev.ApiKeyCreated, ev.ApiKeyUpdated, ev.ApiKeyRevoked)


def key_state(kind: type[_State], key: asyncpg.Record) -> _State:
    """The key's whole state (never its secret): a copy never needs an earlier event."""
    return kind(
        key_id=key["id"],
        key_hash=key["key_hash"],
        workspace_id=key["workspace_id"],
        name=key["name"],
        scopes=list(key["scopes"]),
        plan=key["plan"],
        expires_at=key["expires_at"],
        revoked_at=key["revoked_at"],
        version=key["version"],
    )


def workspace_created(workspace: asyncpg.Record) -> ev.WorkspaceCreated:
    return ev.WorkspaceCreated(
        workspace_id=workspace["id"],
        name=workspace["name"],
        plan=workspace["plan"],
        created_at=workspace["created_at"],
    )


async def publish(
    conn: asyncpg.Connection,
    payload: ev.WorkspaceCreated | ev.ApiKeyCreated | ev.ApiKeyUpdated | ev.ApiKeyRevoked,
) -> None:
    await EVENTS.emit(conn, payload, tenant_id=payload.workspace_id, key=payload.workspace_id)
