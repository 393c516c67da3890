"""HTTP routes of a program's audience: attribute definitions, segments, eligibility, and
segment previews."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from link_service.audience import handlers
from link_service.audience.domain import Audience
from link_service.audience.schemas import AudienceIn, AudienceOut, PreviewIn, PreviewOut
from link_service.web import Auth, Rt
from servicekit import audience
from servicekit.auth import requires

router = APIRouter(tags=["audience"])


def _out(program_id: str, aud: Audience) -> AudienceOut:
    doc = aud.to_json()
    return AudienceOut(
        program_id=program_id,
        attributes=doc["attributes"],
        builtin_attributes=dict(audience.BUILTIN),
        segments=doc["segments"],
        eligibility=doc["eligibility"],
        version=aud.version,
    )


@router.put(
    "/v1/programs/{program_id}/audience",
    dependencies=[requires("programs:write")],
    response_model=AudienceOut,
)
async def put_audience(program_id: str, body: AudienceIn, who: Auth, rt: Rt) -> AudienceOut:
    new = Audience.parse(body.attributes, body.segments, body.eligibility)
    async with rt.transaction() as conn:
        stored = await handlers.put_audience(conn, who.tenant_id, program_id, new)
    return _out(program_id, stored)


@router.get(
    "/v1/programs/{program_id}/audience",
    dependencies=[requires("programs:read")],
    response_model=AudienceOut,
)
async def get_audience(program_id: str, who: Auth, rt: Rt) -> AudienceOut:
    async with rt.transaction() as conn:
        return _out(program_id, await handlers.get_audience(conn, who.tenant_id, program_id))


@router.post(
    "/v1/programs/{program_id}/segments/preview",
    dependencies=[requires("programs:read")],
    response_model=PreviewOut,
)
async def preview_condition(program_id: str, body: PreviewIn, who: Auth, rt: Rt) -> PreviewOut:
    async with rt.transaction() as conn:
        p = await handlers.preview(conn, who.tenant_id, program_id, condition=body.condition)
    return PreviewOut(matching=p.matching, total=p.total, at=datetime.now(UTC))


@router.get(
    "/v1/programs/{program_id}/segments/{segment}/preview",
    dependencies=[requires("programs:read")],
    response_model=PreviewOut,
)
async def preview_segment(program_id: str, segment: str, who: Auth, rt: Rt) -> PreviewOut:
    async with rt.transaction() as conn:
        p = await handlers.preview(conn, who.tenant_id, program_id, segment=segment)
    return PreviewOut(matching=p.matching, total=p.total, at=datetime.now(UTC))
