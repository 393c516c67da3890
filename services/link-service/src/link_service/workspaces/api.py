"""HTTP routes of workspaces (platform admins: the bootstrap keys), API keys and the audit log
(workspace admins: scope `admin`)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Request

from link_service.web import Rt
from link_service.workspaces import handlers
from link_service.workspaces.repository import AUDIT_ORDER
from link_service.workspaces.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPatch,
    AuditEntryOut,
    WorkspaceCreatedOut,
    WorkspaceIn,
    WorkspaceOut,
)
from servicekit.auth import Principal, requires
from servicekit.pagination import Page, PageParams
from servicekit.problems import Forbidden, NotFound

router = APIRouter(tags=["workspaces"])

Admin = Annotated[Principal, requires("admin")]


def _platform(who: Principal) -> Principal:
    if not who.platform:
        raise Forbidden("only a platform admin key (API_KEYS) manages workspaces")
    return who


def _workspace_of(who: Principal, asked: str | None) -> str:
    """The workspace a key acts on: its own; a platform admin may name another."""
    if asked is None or asked == who.tenant_id:
        return who.tenant_id
    if not who.platform:
        raise NotFound(f"no workspace {asked}", field="/workspace_id")
    return asked


def _key_out(row: asyncpg.Record) -> ApiKeyOut:
    return ApiKeyOut(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=list(row["scopes"]),
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        created_by=row["created_by"],
    )


def _new_key_out(new: handlers.NewKey) -> ApiKeyCreatedOut:
    return ApiKeyCreatedOut(**_key_out(new.row).model_dump(), key=new.secret)


def _workspace_out(row: asyncpg.Record) -> WorkspaceOut:
    return WorkspaceOut(
        id=row["id"],
        name=row["name"],
        plan=row["plan"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _forget(request: Request, row: asyncpg.Record) -> None:
    # This replica at once; the others within API_KEY_CACHE_TTL_SECONDS.
    store = getattr(request.app.state.authenticator, "store", None)
    if store is not None:
        store.forget(row["key_hash"])


@router.post("/v1/workspaces", status_code=201, response_model=WorkspaceCreatedOut)
async def create_workspace(body: WorkspaceIn, who: Admin, rt: Rt) -> WorkspaceCreatedOut:
    _platform(who)
    async with rt.transaction() as conn:
        workspace, admin = await handlers.create_workspace(conn, who.key_id, body)
    return WorkspaceCreatedOut(
        **_workspace_out(workspace).model_dump(), admin_key=_new_key_out(admin)
    )


@router.get("/v1/workspaces", response_model=Page[WorkspaceOut])
async def list_workspaces(who: Admin, rt: Rt, page: PageParams) -> Page[WorkspaceOut]:
    _platform(who)
    async with rt.transaction() as conn:
        rows = await handlers.workspace_page(conn, page)
    return page.answer(rows, _workspace_out)


@router.post("/v1/api-keys", status_code=201, response_model=ApiKeyCreatedOut)
async def create_key(body: ApiKeyIn, who: Admin, rt: Rt) -> ApiKeyCreatedOut:
    workspace = _workspace_of(who, body.workspace_id)
    async with rt.transaction() as conn:
        new = await handlers.create_key(conn, workspace, who.key_id, body)
    return _new_key_out(new)


@router.get("/v1/api-keys", response_model=Page[ApiKeyOut])
async def list_keys(who: Admin, rt: Rt, page: PageParams) -> Page[ApiKeyOut]:
    async with rt.transaction() as conn:
        rows = await handlers.key_page(conn, who.tenant_id, page)
    return page.answer(rows, _key_out)


@router.get("/v1/api-keys/{key_id}", response_model=ApiKeyOut)
async def get_key(key_id: str, who: Admin, rt: Rt) -> ApiKeyOut:
    async with rt.transaction() as conn:
        return _key_out(await handlers.get_key(conn, who.tenant_id, key_id))


@router.patch("/v1/api-keys/{key_id}", response_model=ApiKeyOut)
async def update_key(
    key_id: str, body: ApiKeyPatch, who: Admin, rt: Rt, request: Request
) -> ApiKeyOut:
    async with rt.transaction() as conn:
        row = await handlers.update_key(conn, who.tenant_id, who.key_id, key_id, body)
    _forget(request, row)
    return _key_out(row)


@router.delete("/v1/api-keys/{key_id}", response_model=ApiKeyOut)
async def revoke_key(key_id: str, who: Admin, rt: Rt, request: Request) -> ApiKeyOut:
    async with rt.transaction() as conn:
        row = await handlers.revoke_key(conn, who.tenant_id, who.key_id, key_id)
    _forget(request, row)
    return _key_out(row)


@router.post("/v1/api-keys/{key_id}/rotate", status_code=201, response_model=ApiKeyCreatedOut)
async def rotate_key(key_id: str, who: Admin, rt: Rt) -> ApiKeyCreatedOut:
    async with rt.transaction() as conn:
        new = await handlers.rotate_key(conn, who.tenant_id, who.key_id, key_id)
    return _new_key_out(new)


def _audit_out(r: asyncpg.Record) -> AuditEntryOut:
    return AuditEntryOut(
        id=f"aud_{r['seq']}",
        workspace_id=r["workspace_id"],
        actor_key_id=r["actor_key_id"],
        action=r["action"],
        target_id=r["target_id"],
        details=r["details"],
        at=r["at"],
    )


@router.get("/v1/audit-log", response_model=Page[AuditEntryOut])
async def audit_log(who: Admin, rt: Rt, page: PageParams) -> Page[AuditEntryOut]:
    async with rt.transaction() as conn:
        rows = await handlers.audit_page(conn, who.tenant_id, page)
    return page.answer(rows, _audit_out, AUDIT_ORDER)
