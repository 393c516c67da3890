"""HTTP bodies of workspaces, API keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from referral_events.contracts.link import WorkspacePlan


class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    plan: WorkspacePlan = "standard"


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    # Validated against servicekit.auth.SCOPES (422 naming /scopes/N).
    scopes: list[str] = Field(min_length=1, max_length=20)
    expires_at: AwareDatetime | None = None
    # rk_test_ instead of rk_live_: the same rights, told apart by people and scanners.
    test: bool = False
    # Platform admins only: the workspace the key is for (default: the caller's).
    workspace_id: str | None = Field(default=None, min_length=1, max_length=100)


class ApiKeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    scopes: list[str] | None = Field(default=None, min_length=1, max_length=20)
    expires_at: AwareDatetime | None = None


class ApiKeyOut(BaseModel):
    id: str
    workspace_id: str
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    created_by: str


class ApiKeyCreatedOut(ApiKeyOut):
    # The secret: in this answer only, never again.
    key: str


class WorkspaceOut(BaseModel):
    id: str
    name: str
    plan: str
    created_at: datetime
    created_by: str


class WorkspaceCreatedOut(WorkspaceOut):
    # The workspace's first key (scope `admin`), to create the others with.
    admin_key: ApiKeyCreatedOut


class AuditEntryOut(BaseModel):
    id: str
    workspace_id: str
    actor_key_id: str
    action: str
    target_id: str | None
    details: dict[str, Any]
    at: datetime
