"""HTTP routes of email: invites, template management and preview, suppressions (the bounce
hook), the email log, and the public one-click unsubscribe."""

from __future__ import annotations

import html
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from notification_service.config import Settings
from notification_service.email import domain, handlers
from notification_service.email.domain import MailStatus
from notification_service.email.repository import SUPPRESSION_ORDER, TEMPLATE_ORDER, EmailLog
from notification_service.email.schemas import (
    EmailOut,
    InviteIn,
    InviteOut,
    InvitesOut,
    PreviewIn,
    PreviewOut,
    SuppressionIn,
    SuppressionOut,
    TemplateIn,
    TemplateOut,
    TemplateSpecList,
    TemplateSpecOut,
)
from notification_service.email.wording import BUILTIN
from notification_service.web import AppClock, Auth, Cfg, Rt
from servicekit.auth import public, requires
from servicekit.pagination import NEWEST, CreatedParams, Page, PageParams
from servicekit.problems import InvalidInput

router = APIRouter(tags=["email"])


# --- invites ----------------------------------------------------------------------------------


@router.post(
    "/v1/invites",
    dependencies=[requires("advocates:write")],
    status_code=202,
    response_model=InvitesOut,
)
async def invite(body: InviteIn, who: Auth, rt: Rt, settings: Cfg, clock: AppClock) -> InvitesOut:
    """Mail an advocate's invite to friends. Each (advocate, address) is invited at most once
    (`duplicate`), suppressed addresses get nothing, and an advocate may invite
    `INVITE_LIMIT_PER_DAY` addresses per 24 hours (429 beyond, and nothing of the request is
    sent)."""
    if len(body.emails) > settings.invite_max_recipients:
        raise InvalidInput(
            f"at most {settings.invite_max_recipients} addresses per request", field="/emails"
        )
    async with rt.transaction() as conn:
        results = await handlers.invite(
            conn,
            who.tenant_id,
            body,
            now=clock(),
            limit_per_day=settings.invite_limit_per_day,
        )
    return InvitesOut(
        data=[InviteOut(email=r.email, status=r.status, email_id=r.email_id) for r in results]
    )


# --- templates --------------------------------------------------------------------------------


@router.get(
    "/v1/email-templates",
    dependencies=[requires("webhooks:admin")],
    response_model=TemplateSpecList,
)
async def template_specs(who: Auth) -> TemplateSpecList:
    """Every template, whether it is transactional or marketing, and its built-in locales."""
    return TemplateSpecList(
        data=[
            TemplateSpecOut(
                template=s.key,
                category=s.category,
                recipient=s.recipient,
                description=s.description,
                builtin_locales=sorted(BUILTIN[s.key]),
            )
            for s in domain.TEMPLATES.values()
        ]
    )


def _template_out(row: asyncpg.Record) -> TemplateOut:
    return TemplateOut(
        program_id=row["program_id"],
        template=row["template"],
        locale=row["locale"],
        subject=row["subject"],
        html=row["html"],
        text=row["text_body"],
        updated_at=row["updated_at"],
    )


@router.get(
    "/v1/programs/{program_id}/email-templates",
    dependencies=[requires("webhooks:admin")],
    response_model=Page[TemplateOut],
)
async def list_templates(program_id: str, who: Auth, rt: Rt, page: PageParams) -> Page[TemplateOut]:
    """The program's own wordings, by template then locale."""
    async with rt.transaction() as conn:
        rows = await handlers.list_templates(conn, who.tenant_id, program_id, page)
    return page.answer(rows, _template_out, TEMPLATE_ORDER)


@router.put(
    "/v1/programs/{program_id}/email-templates/{template}/{locale}",
    dependencies=[requires("webhooks:admin")],
    response_model=TemplateOut,
)
async def put_template(
    program_id: str, template: str, locale: str, body: TemplateIn, who: Auth, rt: Rt
) -> TemplateOut:
    """The program's own wording of a template in one locale. It is rendered with sample data
    before it is saved: a syntax error or an unknown name is a 422 naming the part."""
    async with rt.transaction() as conn:
        row = await handlers.put_template(conn, who.tenant_id, program_id, template, locale, body)
    return _template_out(row)


@router.get(
    "/v1/programs/{program_id}/email-templates/{template}/{locale}",
    dependencies=[requires("webhooks:admin")],
    response_model=TemplateOut,
)
async def get_template(
    program_id: str, template: str, locale: str, who: Auth, rt: Rt
) -> TemplateOut:
    async with rt.transaction() as conn:
        row = await handlers.get_template(conn, who.tenant_id, program_id, template, locale)
    return _template_out(row)


@router.delete(
    "/v1/programs/{program_id}/email-templates/{template}/{locale}",
    dependencies=[requires("webhooks:admin")],
    status_code=204,
)
async def delete_template(
    program_id: str, template: str, locale: str, who: Auth, rt: Rt
) -> Response:
    async with rt.transaction() as conn:
        await handlers.delete_template(conn, who.tenant_id, program_id, template, locale)
    return Response(status_code=204)


@router.post(
    "/v1/email-templates/{template}/preview",
    dependencies=[requires("webhooks:admin")],
    response_model=PreviewOut,
)
async def preview(template: str, body: PreviewIn, who: Auth, rt: Rt) -> PreviewOut:
    async with rt.transaction() as conn:
        rendered, source = await handlers.preview(conn, who.tenant_id, template, body)
    return PreviewOut(
        template=template,
        locale=rendered.locale,
        source=source,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
    )


# --- suppressions and the email log -----------------------------------------------------------


def _suppression_out(row: asyncpg.Record) -> SuppressionOut:
    return SuppressionOut(
        email=row["address"],
        reason=row["reason"],
        detail=row["detail"],
        created_at=row["created_at"],
    )


@router.post(
    "/v1/email-suppressions",
    dependencies=[requires("privacy:admin")],
    status_code=201,
    response_model=SuppressionOut,
)
async def add_suppression(body: SuppressionIn, who: Auth, rt: Rt) -> SuppressionOut:
    """Record an unsubscribe, a hard bounce or a complaint (e.g. from the mail provider's
    bounce webhook). Idempotent: an address already suppressed keeps its first reason."""
    async with rt.transaction() as conn:
        row = await handlers.add_suppression(
            conn, who.tenant_id, body.email, body.reason, body.detail
        )
    return _suppression_out(row)


@router.get(
    "/v1/email-suppressions",
    dependencies=[requires("privacy:admin")],
    response_model=Page[SuppressionOut],
)
async def list_suppressions(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    reason: Literal["unsubscribed", "bounced", "complained", "manual"] | None = None,
) -> Page[SuppressionOut]:
    """Suppressed addresses, oldest first."""
    async with rt.transaction() as conn:
        rows = await handlers.suppression_page(conn, who.tenant_id, reason, created, page)
    return page.answer(rows, _suppression_out, SUPPRESSION_ORDER)


@router.delete(
    "/v1/email-suppressions/{email}", dependencies=[requires("privacy:admin")], status_code=204
)
async def remove_suppression(email: str, who: Auth, rt: Rt) -> Response:
    async with rt.transaction() as conn:
        await handlers.remove_suppression(conn, who.tenant_id, email)
    return Response(status_code=204)


@router.get("/v1/emails", dependencies=[requires("webhooks:admin")], response_model=Page[EmailOut])
async def list_emails(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    recipient_kind: Annotated[str | None, Query(pattern="^(advocate|friend|invitee)$")] = None,
    recipient_id: Annotated[str | None, Query(max_length=100)] = None,
    program_id: Annotated[str | None, Query(max_length=100)] = None,
    template: Annotated[str | None, Query(max_length=100)] = None,
    status: MailStatus | None = None,
) -> Page[EmailOut]:
    """Mails newest first, with status and why one was suppressed; no addresses or bodies."""
    log = EmailLog(recipient_kind, recipient_id, program_id, template, status, created)
    async with rt.transaction() as conn:
        rows = await handlers.email_page(conn, who.tenant_id, log, page)
    return page.answer(rows, lambda r: EmailOut.model_validate(dict(r)), NEWEST)


# --- one-click unsubscribe (public: the link in the mail) -------------------------------------

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def _email_id(token: str, settings: Settings) -> str | None:
    return domain.read_unsubscribe_token(token, [settings.email_unsubscribe_key])


@router.get(
    "/v1/unsubscribe/{token}",
    dependencies=[public("the signed unsubscribe token is the credential")],
    response_class=HTMLResponse,
    include_in_schema=False,
)
async def unsubscribe_page(token: str, settings: Cfg) -> HTMLResponse:
    """A page with a button, not the unsubscribe itself: mail scanners follow GET links, and
    RFC 8058 makes the one-click action a POST."""
    if _email_id(token, settings) is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    action = html.escape(f"/v1/unsubscribe/{token}")
    return _page(
        "Unsubscribe",
        "<p>Stop all emails from this referral program to your address?</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post(
    "/v1/unsubscribe/{token}",
    dependencies=[public("the signed unsubscribe token is the credential")],
    response_class=HTMLResponse,
    include_in_schema=False,
)
async def unsubscribe(token: str, rt: Rt, settings: Cfg) -> HTMLResponse:
    """RFC 8058 one-click: the mailbox provider POSTs `List-Unsubscribe=One-Click` here; the
    button of the page above does the same. Idempotent."""
    email_id = _email_id(token, settings)
    if email_id is None:
        return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)
    async with rt.transaction() as conn:
        program = await handlers.unsubscribe(conn, email_id)
    name = html.escape(program["name"]) if program is not None else "this program"
    return _page("Unsubscribed", f"<p>You will get no more emails from {name}.</p>")
