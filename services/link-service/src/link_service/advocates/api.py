"""HTTP routes of advocates, their codes, share links and QR codes: parse, authenticate, open
the transaction, call a handler, shape the answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from link_service import qr
from link_service.advocates import handlers
from link_service.advocates.repository import AdvocateFilter
from link_service.advocates.schemas import (
    AdvocateOut,
    AdvocatePatch,
    AttributeChangeIn,
    BlockIn,
    CodeOut,
    EnrollIn,
    ShareLinkOut,
    ShareLinksOut,
    VanityCodeIn,
)
from link_service.audience.domain import attributes_of
from link_service.domain import Channel, Links, code_key, share_link
from link_service.sightings.handlers import hashed
from link_service.web import Auth, Rt, link_state, links, settings
from servicekit.auth import requires
from servicekit.pagination import CreatedParams, Page, PageParams

router = APIRouter()


def _advocate_out(links: Links, view: handlers.AdvocateView) -> AdvocateOut:
    row = view.advocate
    return AdvocateOut(
        id=row["id"],
        program_id=row["program_id"],
        customer_id=row["customer_id"],
        email=row["email"],
        name=row["name"],
        locale=row["locale"],
        marketing_consent=row["marketing_consent"],
        attributes=attributes_of(row),
        blocked=row["blocked"],
        block_reason=row["block_reason"],
        code=view.code,
        aliases=view.aliases,
        link=links.link(view.code),
        version=row["version"],
        created_at=row["created_at"],
    )


# ---------------------------------------------------------------------------- advocates


@router.post(
    "/v1/programs/{program_id}/advocates",
    dependencies=[requires("advocates:write")],
    status_code=201,
    response_model=AdvocateOut,
    tags=["advocates"],
    responses={200: {"model": AdvocateOut, "description": "already enrolled"}},
)
async def enroll_advocate(
    program_id: str, body: EnrollIn, who: Auth, rt: Rt, response: Response
) -> AdvocateOut:
    key = settings(rt).ip_hash_key.encode()
    async with rt.transaction() as conn:
        result = await handlers.enroll_advocate(
            conn,
            who.tenant_id,
            program_id,
            body,
            links(rt),
            seen=(
                hashed(key, str(body.ip) if body.ip else None),
                hashed(key, body.device_id),
            ),
        )
    if not result.created:
        response.status_code = 200
    return _advocate_out(links(rt), result.view)


AdvocateStatus = Literal["active", "blocked"]


async def _advocate_page(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    program_id: str | None,
    customer_id: str | None,
    code: str | None,
    status: AdvocateStatus | None,
) -> Page[AdvocateOut]:
    f = AdvocateFilter(
        program_id=program_id,
        customer_id=customer_id,
        code_key=code_key(code) if code is not None else None,
        blocked=None if status is None else status == "blocked",
        created=created,
    )
    async with rt.transaction() as conn:
        views = await handlers.advocate_page(conn, who.tenant_id, f, page)
    return page.answer(views, lambda v: _advocate_out(links(rt), v), record=lambda v: v.advocate)


CustomerQ = Annotated[str | None, Query(max_length=200, description="the advocate's customer id")]
CodeQ = Annotated[
    str | None, Query(max_length=64, description="any of the advocate's codes, current or earlier")
]


@router.get(
    "/v1/advocates",
    dependencies=[requires("advocates:read")],
    response_model=Page[AdvocateOut],
    tags=["advocates"],
)
async def list_advocates(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    program_id: Annotated[str | None, Query(max_length=100)] = None,
    customer_id: CustomerQ = None,
    code: CodeQ = None,
    status: AdvocateStatus | None = None,
) -> Page[AdvocateOut]:
    """The workspace's advocates, oldest first; by customer id or code: the lookup."""
    return await _advocate_page(who, rt, page, created, program_id, customer_id, code, status)


@router.get(
    "/v1/programs/{program_id}/advocates",
    dependencies=[requires("advocates:read")],
    response_model=Page[AdvocateOut],
    tags=["advocates"],
)
async def list_program_advocates(
    program_id: str,
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    customer_id: CustomerQ = None,
    code: CodeQ = None,
    status: AdvocateStatus | None = None,
) -> Page[AdvocateOut]:
    """The program's advocates, oldest first (404 for a program the workspace does not have)."""
    return await _advocate_page(who, rt, page, created, program_id, customer_id, code, status)


@router.get(
    "/v1/advocates/{advocate_id}",
    dependencies=[requires("advocates:read")],
    response_model=AdvocateOut,
    tags=["advocates"],
)
async def get_advocate(advocate_id: str, who: Auth, rt: Rt) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.get_advocate(conn, who.tenant_id, advocate_id)
    return _advocate_out(links(rt), view)


@router.patch(
    "/v1/advocates/{advocate_id}",
    dependencies=[requires("advocates:write")],
    response_model=AdvocateOut,
    tags=["advocates"],
)
async def update_advocate(advocate_id: str, body: AdvocatePatch, who: Auth, rt: Rt) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.update_advocate(conn, who.tenant_id, advocate_id, body, links(rt))
    return _advocate_out(links(rt), view)


@router.post(
    "/v1/advocates/{advocate_id}/attribute-changes",
    dependencies=[requires("advocates:write")],
    response_model=AdvocateOut,
    tags=["advocates"],
)
async def change_attributes(
    advocate_id: str, body: AttributeChangeIn, who: Auth, rt: Rt
) -> AdvocateOut:
    """The merchant's event: attributes that changed at a time (a plan change when it
    happened), applied by its effective time."""
    async with rt.transaction() as conn:
        await handlers.change_attributes(
            conn, who.tenant_id, advocate_id, body.changes, body.effective_at
        )
        view = await handlers.get_advocate(conn, who.tenant_id, advocate_id)
    return _advocate_out(links(rt), view)


@router.post(
    "/v1/advocates/{advocate_id}/block",
    dependencies=[requires("advocates:write")],
    response_model=AdvocateOut,
    tags=["advocates"],
)
async def block_advocate(
    advocate_id: str, who: Auth, rt: Rt, request: Request, body: BlockIn | None = None
) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.set_blocked(
            conn, who.tenant_id, advocate_id, blocked=True, reason=body.reason if body else None
        )
    link_state(request).cache.invalidate_advocate(advocate_id)
    return _advocate_out(links(rt), view)


@router.post(
    "/v1/advocates/{advocate_id}/unblock",
    dependencies=[requires("advocates:write")],
    response_model=AdvocateOut,
    tags=["advocates"],
)
async def unblock_advocate(advocate_id: str, who: Auth, rt: Rt, request: Request) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.set_blocked(conn, who.tenant_id, advocate_id, blocked=False)
    link_state(request).cache.invalidate_advocate(advocate_id)
    return _advocate_out(links(rt), view)


# ---------------------------------------------------------------------------- codes and links


@router.put(
    "/v1/advocates/{advocate_id}/code",
    dependencies=[requires("advocates:write")],
    response_model=AdvocateOut,
    tags=["codes"],
)
async def set_vanity_code(
    advocate_id: str, body: VanityCodeIn, who: Auth, rt: Rt, request: Request
) -> AdvocateOut:
    """Sets a vanity code (when the program allows them); the previous code keeps redirecting."""
    s = settings(rt)
    limits = handlers.CodeLimits(s.vanity_changes_max, timedelta(days=s.vanity_changes_window_days))
    async with rt.transaction() as conn:
        view, previous = await handlers.set_vanity_code(
            conn, who.tenant_id, advocate_id, body.code, links(rt), limits
        )
    if previous is not None:
        link_state(request).cache.invalidate_codes([view.code, previous])
    return _advocate_out(links(rt), view)


@router.get(
    "/v1/advocates/{advocate_id}/share-links",
    dependencies=[requires("advocates:read")],
    response_model=ShareLinksOut,
    tags=["codes"],
)
async def share_links(advocate_id: str, who: Auth, rt: Rt) -> ShareLinksOut:
    async with rt.transaction() as conn:
        view, channels = await handlers.share_links(conn, who.tenant_id, advocate_id, links(rt))
    return ShareLinksOut(
        advocate_id=advocate_id,
        code=view.code,
        link=links(rt).link(view.code),
        channels=[
            ShareLinkOut(
                channel=c.channel,
                url=c.url,
                message=c.message,
                intent_url=c.intent_url,
            )
            for c in channels
        ],
    )


@router.get(
    "/v1/advocates/{advocate_id}/qr",
    dependencies=[requires("advocates:read")],
    tags=["codes"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
async def qr_code(
    advocate_id: str,
    who: Auth,
    rt: Rt,
    format: Literal["png", "svg"] = "png",
    channel: Channel | None = None,
    scale: Annotated[int, Query(ge=1, le=40)] = 8,
) -> Response:
    """A QR code of the advocate's link (or of one channel's link)."""
    async with rt.transaction() as conn:
        view = await handlers.get_advocate(conn, who.tenant_id, advocate_id)
    link = share_link(links(rt).base_url, view.code, channel, view.advocate["program_id"])

    body = await qr.render(link, format, scale)
    return Response(
        body,
        media_type=qr.MEDIA_TYPES[format],
        headers={"Cache-Control": "private, max-age=300", "X-Link": link},
    )


@router.get(
    "/v1/codes/{code}",
    dependencies=[requires("programs:read")],
    response_model=CodeOut,
    tags=["codes"],
)
async def get_code(code: str, who: Auth, rt: Rt) -> CodeOut:
    """For checkouts where a friend types a code: whose it is and whether it can earn."""
    async with rt.transaction() as conn:
        found = await handlers.lookup_code(conn, who.tenant_id, code)
    row = found.row
    return CodeOut(
        code=row["current_code"],
        matched=row["code"],
        alias=not row["current"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        can_earn=found.can_earn,
        reason=found.reason,
    )
