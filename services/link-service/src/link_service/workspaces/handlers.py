"""Use cases of workspaces, keys and the audit log. Each takes the caller's connection (the
edge's transaction), changes state through the repository, writes the audit entry and emits
the key's new state, so every service's copy follows. The API and the `keys` CLI call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from link_service.workspaces import domain, events, repository
from link_service.workspaces.schemas import ApiKeyIn, ApiKeyPatch, WorkspaceIn
from referral_events.contracts import link as ev
from servicekit.auth import validate_scopes
from servicekit.ids import new_id
from servicekit.pagination import PageQuery
from servicekit.problems import NotFound

DEFAULT_PLAN = "standard"


@dataclass(frozen=True)
class NewKey:
    row: asyncpg.Record
    secret: str


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


async def create_workspace(
    conn: asyncpg.Connection, actor: str, cmd: WorkspaceIn
) -> tuple[asyncpg.Record, NewKey]:
    """The workspace and its first key (scope `admin`), to create the others with."""
    workspace = await repository.insert_workspace(
        conn, new_id("ws"), cmd.name, cmd.plan, created_by=actor
    )
    await repository.insert_audit(
        conn,
        workspace_id=workspace["id"],
        actor_key_id=actor,
        action="workspace.created",
        target_id=workspace["id"],
        details={"name": cmd.name, "plan": cmd.plan},
    )
    await events.publish(conn, events.workspace_created(workspace))
    admin = await create_key(
        conn,
        workspace["id"],
        actor,
        ApiKeyIn(name="workspace admin", scopes=["admin"]),
    )
    return workspace, admin


async def workspace_page(conn: asyncpg.Connection, page: PageQuery) -> list[asyncpg.Record]:
    return await repository.workspace_page(conn, page)


async def create_key(
    conn: asyncpg.Connection, workspace_id: str, actor: str, cmd: ApiKeyIn
) -> NewKey:
    scopes = validate_scopes(cmd.scopes)
    domain.check_expiry(cmd.expires_at, datetime.now(UTC))
    secret, key_hash, prefix = domain.new_secret(cmd.test)
    plan = await repository.workspace_plan(conn, workspace_id) or DEFAULT_PLAN
    row = await repository.insert_key(
        conn,
        key_id=new_id("key"),
        key_hash=key_hash,
        workspace_id=workspace_id,
        name=cmd.name,
        prefix=prefix,
        scopes=scopes,
        plan=plan,
        expires_at=cmd.expires_at,
        created_by=actor,
    )
    await repository.insert_audit(
        conn,
        workspace_id=workspace_id,
        actor_key_id=actor,
        action="api_key.created",
        target_id=row["id"],
        details={"name": cmd.name, "scopes": scopes, "expires_at": _iso(cmd.expires_at)},
    )
    await events.publish(conn, events.key_state(ev.ApiKeyCreated, row))
    return NewKey(row, secret)


async def get_key(
    conn: asyncpg.Connection, workspace_id: str, key_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    row = await repository.get_key(conn, workspace_id, key_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no API key {key_id}", field="/key_id")
    return row


async def list_keys(conn: asyncpg.Connection, workspace_id: str) -> list[asyncpg.Record]:
    return await repository.list_keys(conn, workspace_id)


async def key_page(
    conn: asyncpg.Connection, workspace_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.key_page(conn, workspace_id, page)


async def update_key(
    conn: asyncpg.Connection, workspace_id: str, actor: str, key_id: str, cmd: ApiKeyPatch
) -> asyncpg.Record:
    old = await get_key(conn, workspace_id, key_id, for_update=True)
    scopes = validate_scopes(cmd.scopes) if cmd.scopes is not None else list(old["scopes"])
    changes: dict[str, Any] = {}
    if "expires_at" in cmd.model_fields_set:
        domain.check_expiry(cmd.expires_at, datetime.now(UTC))
        expires_at = cmd.expires_at
        changes["expires_at"] = [_iso(old["expires_at"]), _iso(expires_at)]
    else:
        expires_at = old["expires_at"]
    name = cmd.name if cmd.name is not None else old["name"]
    if name != old["name"]:
        changes["name"] = [old["name"], name]
    if scopes != list(old["scopes"]):
        changes["scopes"] = [list(old["scopes"]), scopes]
    if not changes or old["revoked_at"] is not None:
        return old
    row = await repository.update_key(conn, key_id, name=name, scopes=scopes, expires_at=expires_at)
    await repository.insert_audit(
        conn,
        workspace_id=workspace_id,
        actor_key_id=actor,
        action="api_key.updated",
        target_id=key_id,
        details=changes,
    )
    await events.publish(conn, events.key_state(ev.ApiKeyUpdated, row))
    return row


async def revoke_key(
    conn: asyncpg.Connection, workspace_id: str, actor: str, key_id: str
) -> asyncpg.Record:
    """Revoking a revoked key changes nothing (DELETE is idempotent)."""
    old = await get_key(conn, workspace_id, key_id, for_update=True)
    if old["revoked_at"] is not None:
        return old
    row = await repository.revoke_key(conn, key_id)
    await repository.insert_audit(
        conn,
        workspace_id=workspace_id,
        actor_key_id=actor,
        action="api_key.revoked",
        target_id=key_id,
        details={},
    )
    await events.publish(conn, events.key_state(ev.ApiKeyRevoked, row))
    return row


async def rotate_key(
    conn: asyncpg.Connection, workspace_id: str, actor: str, key_id: str
) -> NewKey:
    """A new key with the old one's name, scopes and expiry; the old one keeps working until it
    is revoked (the caller switches over in between)."""
    old = await get_key(conn, workspace_id, key_id)
    if old["revoked_at"] is not None:
        raise NotFound(f"no API key {key_id}", field="/key_id")
    new = await create_key(
        conn,
        workspace_id,
        actor,
        ApiKeyIn(
            name=old["name"],
            scopes=list(old["scopes"]),
            expires_at=old["expires_at"],
            test=old["prefix"].startswith("rk_test_"),
        ),
    )
    await repository.insert_audit(
        conn,
        workspace_id=workspace_id,
        actor_key_id=actor,
        action="api_key.rotated",
        target_id=key_id,
        details={"new_key_id": new.row["id"]},
    )
    return new


async def audit_page(
    conn: asyncpg.Connection, workspace_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.audit_page(conn, workspace_id, page)
