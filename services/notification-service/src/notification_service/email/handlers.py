"""Use cases of the email API: invites, template management and preview, suppressions and
unsubscribe, the email log. Every function takes the caller's connection (the edge owns the
transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from notification_service.email import domain, queue, repository
from notification_service.email.schemas import InviteIn, PreviewIn, TemplateIn
from servicekit.pagination import CreatedRange, PageQuery
from servicekit.problems import Conflict, DomainError, InvalidInput, NotFound


class TooManyInvites(DomainError):
    status = 429
    title = "Too many requests"
    type = "rate-limited"


# --- invites ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InviteResult:
    email: str
    status: str  # queued, duplicate, suppressed, self
    email_id: str | None = None


async def invite(
    conn: asyncpg.Connection,
    tenant_id: str,
    cmd: InviteIn,
    *,
    now: datetime,
    limit_per_day: int,
) -> list[InviteResult]:
    """Invites from one advocate to the friends named. The advocate's row is locked, so two
    requests at once cannot both use the last of the day's allowance."""
    if not cmd.consent:
        raise InvalidInput(
            "invites are marketing mail: send consent: true once the advocate has confirmed "
            "the friends agreed to hear from the program",
            field="/consent",
        )
    advocate = await repository.get_contact(conn, tenant_id, "advocate", cmd.advocate_id, lock=True)
    if advocate is None:
        raise NotFound(f"no advocate '{cmd.advocate_id}'", field="/advocate_id")
    if advocate["blocked"]:
        raise Conflict("the advocate is blocked", field="/advocate_id")
    if not advocate["link_url"]:
        raise Conflict("the advocate has no referral link yet", field="/advocate_id")
    locale = domain.validate_locale(cmd.locale) if cmd.locale else advocate["locale"]
    addresses: list[str] = []
    for i, raw in enumerate(cmd.emails):
        address = domain.validate_address(raw, field=f"/emails/{i}")
        if address not in addresses:
            addresses.append(address)

    results: list[InviteResult] = []
    fresh: list[str] = []
    for address in addresses:
        if address == advocate["email"]:
            results.append(InviteResult(address, "self"))
        elif await repository.suppressed_as(conn, tenant_id, address) is not None:
            results.append(InviteResult(address, "suppressed"))
        else:
            fresh.append(address)
    allowance = domain.invite_allowance(
        await repository.invites_since(conn, tenant_id, cmd.advocate_id, now - timedelta(days=1)),
        limit_per_day,
    )
    queued: list[InviteResult] = []
    for address in fresh:
        email_id = await queue.enqueue(
            conn,
            repository.NewMail(
                tenant_id=tenant_id,
                template="invite",
                cause_key=f"invite:{cmd.advocate_id}",
                recipient_kind="invitee",
                recipient_id=domain.address_key(address),
                advocate_id=cmd.advocate_id,
                program_id=advocate["program_id"],
                facts={"invite": {"message": cmd.message}, "locale": locale, "consent": True},
                to_address=address,
                due=now,
            ),
        )
        if email_id is None:
            results.append(InviteResult(address, "duplicate"))
        else:
            queued.append(InviteResult(address, "queued", email_id))
    if len(queued) > allowance:
        # Nothing of this request is kept: the edge rolls the transaction back.
        raise TooManyInvites(
            f"this advocate may send {allowance} more invite(s) in the next 24 hours; "
            f"the request has {len(queued)} new address(es)",
            field="/emails",
        )
    return results + queued


# --- templates --------------------------------------------------------------------------------


async def put_template(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    template: str,
    locale: str,
    cmd: TemplateIn,
) -> asyncpg.Record:
    domain.template_spec(template)
    locale = domain.validate_locale(locale)
    await queue.off_loop(domain.check_template, cmd.subject, cmd.html, cmd.text, template)
    wording = domain.Wording(cmd.subject, cmd.html, cmd.text, locale, "program")
    return await repository.put_template(conn, tenant_id, program_id, template, wording)


async def get_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> asyncpg.Record:
    domain.template_spec(template)
    row = await repository.get_template(
        conn, tenant_id, program_id, template, domain.validate_locale(locale)
    )
    if row is None:
        raise NotFound(
            f"program '{program_id}' has no own '{template}' wording in '{locale}' "
            "(the built-in one applies)",
            field="/locale",
        )
    return row


async def delete_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> None:
    await get_template(conn, tenant_id, program_id, template, locale)
    await repository.delete_template(
        conn, tenant_id, program_id, template, domain.validate_locale(locale)
    )


async def list_templates(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    """404 for a program of which this service has neither heard (link.events) nor been given
    a template: another workspace's, or none. (A template may be written for a program whose
    event has not arrived yet: README, "Programs learnt by events".)"""
    rows = await repository.template_page(conn, tenant_id, program_id, page)
    if not rows and await repository.get_program(conn, tenant_id, program_id) is None:
        raise NotFound(f"no program '{program_id}'", field="/program_id")
    return rows


async def preview(
    conn: asyncpg.Connection, tenant_id: str, template: str, cmd: PreviewIn
) -> tuple[domain.Rendered, str]:
    """Renders with sample data: the draft in the request if any, else the wording a real mail
    for this program and locale would get. Returns the rendering and where the wording came
    from ("draft", "program" or "builtin")."""
    domain.template_spec(template)
    locale = domain.validate_locale(cmd.locale) if cmd.locale else None
    context = domain.sample_context(template)
    program = (
        await repository.get_program(conn, tenant_id, cmd.program_id) if cmd.program_id else None
    )
    if program is not None:
        context["program"] = {"name": program["name"]}
    if cmd.subject is not None or cmd.html is not None or cmd.text is not None:
        if cmd.subject is None or cmd.html is None or cmd.text is None:
            raise InvalidInput(
                "a draft needs subject, html and text",
                field="/subject" if not cmd.subject else "text",
            )
        wording = domain.Wording(cmd.subject, cmd.html, cmd.text, locale or "en", "program")
        source = "draft"
    else:
        overrides = (
            await repository.template_overrides(conn, tenant_id, cmd.program_id, template)
            if cmd.program_id
            else {}
        )
        chain = domain.locale_chain(locale, program["default_locale"] if program else None)
        wording = domain.choose_wording(template, chain, overrides)
        source = wording.source
    await queue.off_loop(
        domain.check_template, wording.subject, wording.html, wording.text, template
    )
    return await queue.off_loop(domain.render, wording, context, strict=True), source


# --- suppressions and unsubscribe -------------------------------------------------------------


async def add_suppression(
    conn: asyncpg.Connection, tenant_id: str, address: str, reason: str, detail: str | None
) -> asyncpg.Record:
    """Also the bounce and complaint hook: an ESP's webhook or a bounce processor posts here."""
    return await repository.suppress(
        conn, tenant_id, domain.validate_address(address), reason, detail
    )


async def remove_suppression(conn: asyncpg.Connection, tenant_id: str, address: str) -> None:
    if not await repository.delete_suppression(conn, tenant_id, domain.normalize_address(address)):
        raise NotFound("that address is not suppressed", field="/email")


async def suppression_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    reason: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    return await repository.suppression_page(conn, tenant_id, reason, created, page)


async def unsubscribe(conn: asyncpg.Connection, email_id: str) -> asyncpg.Record | None:
    """Suppresses the address the mail went to, for its tenant. None for an unknown mail (or
    one whose address was already erased): nothing to do, and the page says so."""
    email = await repository.get_email(conn, email_id)
    if email is None or not email["to_address"]:
        return None
    await repository.suppress(
        conn, email["tenant_id"], email["to_address"], "unsubscribed", f"one-click: {email_id}"
    )
    return await repository.get_program(conn, email["tenant_id"], email["program_id"])


async def email_page(
    conn: asyncpg.Connection, tenant_id: str, log: repository.EmailLog, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.email_page(conn, tenant_id, log, page)
