"""HTTP routes of a program's attribution settings and fraud policy."""

from __future__ import annotations

from fastapi import APIRouter

from attribution_service.programs import handlers
from attribution_service.programs.domain import ProgramSettings
from attribution_service.programs.schemas import SettingsOut
from attribution_service.web import Auth, Rt
from servicekit.auth import requires

router = APIRouter(tags=["settings"])


@router.get(
    "/v1/programs/{program_id}/attribution-settings",
    dependencies=[requires("programs:read")],
    response_model=SettingsOut,
)
async def get_settings(program_id: str, who: Auth, rt: Rt) -> SettingsOut:
    async with rt.transaction() as conn:
        settings, updated = await handlers.get_settings(conn, who.tenant_id, program_id)
    return SettingsOut(program_id=program_id, settings=settings, updated_at=updated)


@router.put(
    "/v1/programs/{program_id}/attribution-settings",
    dependencies=[requires("programs:write")],
    response_model=SettingsOut,
)
async def put_settings(program_id: str, body: ProgramSettings, who: Auth, rt: Rt) -> SettingsOut:
    async with rt.transaction() as conn:
        updated = await handlers.put_settings(conn, who.tenant_id, program_id, body)
    return SettingsOut(program_id=program_id, settings=body, updated_at=updated)
