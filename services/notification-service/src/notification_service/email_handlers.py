"""Use cases of email: keeping contact and program copies from link- and attribution-service
events, queuing mails for events and invites, template management and preview, suppressions
and unsubscribe, and the sender's two transactions around each SMTP attempt. Every function
takes the caller's connection (the edge owns the transaction)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from notification_service import email_domain as ed
from notification_service import email_repository as repo
from notification_service.email_schemas import InviteIn, PreviewIn, TemplateIn
from notification_service.events import EVENTS
from referral_events import CloudEvent
from referral_events.contracts import attribution, link, reward
from referral_events.contracts import notification as out
from servicekit.ids import new_id
from servicekit.problems import Conflict, DomainError, InvalidInput, NotFound

log = logging.getLogger(__name__)


class TooManyInvites(DomainError):
    status = 429
    title = "Too many requests"


# --- copies of other services' facts ----------------------------------------------------------


async def on_program(
    conn: asyncpg.Connection,
    event: CloudEvent,
    p: link.ProgramCreated | link.ProgramUpdated,
) -> None:
    await repo.upsert_program(
        conn,
        tenant_id=event.tenantid,
        program_id=p.program_id,
        name=p.name,
        default_locale=ed.normalize_locale(p.default_locale) or ed.DEFAULT_LOCALE,
        version=p.version,
    )


async def on_advocate(
    conn: asyncpg.Connection,
    event: CloudEvent,
    p: link.AdvocateEnrolled | link.AdvocateUpdated,
) -> None:
    email = _usable_address(p.email)
    row = await repo.upsert_advocate(
        conn,
        tenant_id=event.tenantid,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        email=email,
        name=p.name,
        locale=ed.normalize_locale(p.locale),
        marketing_consent=p.marketing_consent,
        blocked=p.blocked,
        code=p.code,
        link_url=p.link_url,
        version=p.version,
    )
    if row is not None:
        await _maybe_welcome(conn, event, row)


async def on_advocate_blocked(
    conn: asyncpg.Connection, event: CloudEvent, p: link.AdvocateBlocked
) -> None:
    await repo.set_advocate_blocked(conn, event.tenantid, p.advocate_id, True)


async def on_advocate_unblocked(
    conn: asyncpg.Connection, event: CloudEvent, p: link.AdvocateUnblocked
) -> None:
    await repo.set_advocate_blocked(conn, event.tenantid, p.advocate_id, False)


async def on_code(
    conn: asyncpg.Connection, event: CloudEvent, p: link.CodeCreated | link.CodeChanged
) -> None:
    row = await repo.set_advocate_link(
        conn,
        tenant_id=event.tenantid,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        code=p.code,
        link_url=p.link_url,
    )
    await _maybe_welcome(conn, event, row)


async def _maybe_welcome(
    conn: asyncpg.Connection, event: CloudEvent, contact: asyncpg.Record
) -> None:
    """The welcome needs the address (advocate events) and the link (advocate or code events),
    which may arrive in either order: whichever completes the pair queues it. Keyed on the
    advocate, so it goes out once however many events complete it."""
    if not contact["email"] or not contact["link_url"] or contact["blocked"]:
        return
    if _stale(event):
        return
    await enqueue(
        conn,
        tenant_id=event.tenantid,
        template="advocate_welcome",
        cause_key=f"welcome:{contact['contact_id']}",
        recipient_kind="advocate",
        recipient_id=contact["contact_id"],
        advocate_id=contact["contact_id"],
        program_id=contact["program_id"],
        facts={},
    )


async def on_referral(
    conn: asyncpg.Connection, event: CloudEvent, p: attribution.ReferralAttributed
) -> None:
    email = _usable_address(p.friend_email)
    if email is None:
        return
    await repo.upsert_friend(
        conn,
        tenant_id=event.tenantid,
        friend_id=p.friend_customer_id,
        program_id=p.program_id,
        email=email,
        locale=ed.normalize_locale(p.friend_locale),
    )


def _usable_address(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return ed.validate_address(value)
    except InvalidInput:
        log.warning("ignoring an address that is not one (not logged: personal data)")
        return None


# --- mails caused by reward events ------------------------------------------------------------


async def on_reward_pending(
    conn: asyncpg.Connection, event: CloudEvent, p: reward.RewardPending
) -> None:
    # A friend's reward is announced once, when it can be used.
    if p.role == "advocate":
        await _reward_mail(conn, event, "advocate_reward_pending", "advocate", p.advocate_id, p)


async def on_reward_available(
    conn: asyncpg.Connection, event: CloudEvent, p: reward.RewardAvailable
) -> None:
    if p.role == "advocate":
        await _reward_mail(conn, event, "advocate_reward_available", "advocate", p.advocate_id, p)
    elif p.kind != "coupon":
        # A friend's coupon reward is mailed from coupon.allocated, which carries the code.
        await _reward_mail(conn, event, "friend_reward", "friend", p.holder_id, p)


async def on_coupon_allocated(
    conn: asyncpg.Connection, event: CloudEvent, p: reward.CouponAllocated
) -> None:
    if p.role != "friend" or _stale(event):
        return
    await enqueue(
        conn,
        tenant_id=event.tenantid,
        template="friend_coupon",
        cause_key=event.id,
        recipient_kind="friend",
        recipient_id=p.holder_id,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        facts=ed.coupon_facts(p.model_dump(mode="json")),
    )


async def on_milestone(
    conn: asyncpg.Connection, event: CloudEvent, p: reward.MilestoneReached
) -> None:
    if p.role != "advocate" or _stale(event):
        return
    await enqueue(
        conn,
        tenant_id=event.tenantid,
        template="milestone_reached",
        cause_key=event.id,
        recipient_kind="advocate",
        recipient_id=p.advocate_id,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        facts=ed.milestone_facts(p.model_dump(mode="json")),
    )


async def _reward_mail(
    conn: asyncpg.Connection,
    event: CloudEvent,
    template: str,
    kind: str,
    recipient_id: str,
    p: reward.RewardPending | reward.RewardAvailable,
) -> None:
    if _stale(event):
        return
    await enqueue(
        conn,
        tenant_id=event.tenantid,
        template=template,
        cause_key=event.id,
        recipient_kind=kind,
        recipient_id=recipient_id,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        facts=ed.reward_facts(p.model_dump(mode="json")),
    )


# Mail about an event older than this is not sent (its contact facts are still copied). When
# the service first consumes a topic from its beginning (a new deployment, a new subscription)
# it must not mail people about enrollments and rewards of weeks ago.
MAX_EVENT_AGE = timedelta(days=3)


def _stale(event: CloudEvent) -> bool:
    at = event.time if event.time.tzinfo is not None else event.time.replace(tzinfo=UTC)
    if datetime.now(UTC) - at > MAX_EVENT_AGE:
        log.info("no mail for %s %s: older than %s", event.type, event.id, MAX_EVENT_AGE)
        return True
    return False


# Consumed event type -> email handler (the consumer adds webhook fan-out next to these).
EMAIL_HANDLERS: dict[str, Callable[[asyncpg.Connection, CloudEvent, Any], Awaitable[None]]] = {
    link.ProgramCreated.TYPE: on_program,
    link.ProgramUpdated.TYPE: on_program,
    link.AdvocateEnrolled.TYPE: on_advocate,
    link.AdvocateUpdated.TYPE: on_advocate,
    link.AdvocateBlocked.TYPE: on_advocate_blocked,
    link.AdvocateUnblocked.TYPE: on_advocate_unblocked,
    link.CodeCreated.TYPE: on_code,
    link.CodeChanged.TYPE: on_code,
    attribution.ReferralAttributed.TYPE: on_referral,
    reward.RewardPending.TYPE: on_reward_pending,
    reward.RewardAvailable.TYPE: on_reward_available,
    reward.CouponAllocated.TYPE: on_coupon_allocated,
    reward.MilestoneReached.TYPE: on_milestone,
}


async def enqueue(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    template: str,
    cause_key: str,
    recipient_kind: str,
    recipient_id: str,
    advocate_id: str | None,
    program_id: str,
    facts: dict[str, Any],
    to_address: str | None = None,
    due: datetime | None = None,
) -> str | None:
    """Queue one mail; the email id, or None when this (cause, recipient, template) has one."""
    email_id = new_id("eml")
    inserted = await repo.insert_email(
        conn,
        email_id=email_id,
        tenant_id=tenant_id,
        template=template,
        cause_key=cause_key,
        recipient_kind=recipient_kind,
        recipient_id=recipient_id,
        advocate_id=advocate_id,
        program_id=program_id,
        to_address=to_address,
        context=facts,
        due=due,
    )
    return email_id if inserted else None


# --- invites (HTTP) ---------------------------------------------------------------------------


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
            field="consent",
        )
    advocate = await repo.get_contact(conn, tenant_id, "advocate", cmd.advocate_id, lock=True)
    if advocate is None:
        raise NotFound(f"no advocate '{cmd.advocate_id}'", field="advocate_id")
    if advocate["blocked"]:
        raise Conflict("the advocate is blocked", field="advocate_id")
    if not advocate["link_url"]:
        raise Conflict("the advocate has no referral link yet", field="advocate_id")
    locale = ed.validate_locale(cmd.locale) if cmd.locale else advocate["locale"]
    addresses: list[str] = []
    for i, raw in enumerate(cmd.emails):
        address = ed.validate_address(raw, field=f"emails.{i}")
        if address not in addresses:
            addresses.append(address)

    results: list[InviteResult] = []
    fresh: list[str] = []
    for address in addresses:
        if address == advocate["email"]:
            results.append(InviteResult(address, "self"))
        elif await repo.suppressed_as(conn, tenant_id, address) is not None:
            results.append(InviteResult(address, "suppressed"))
        else:
            fresh.append(address)
    allowance = ed.invite_allowance(
        await repo.invites_since(conn, tenant_id, cmd.advocate_id, now - timedelta(days=1)),
        limit_per_day,
    )
    queued: list[InviteResult] = []
    for address in fresh:
        email_id = await enqueue(
            conn,
            tenant_id=tenant_id,
            template="invite",
            cause_key=f"invite:{cmd.advocate_id}",
            recipient_kind="invitee",
            recipient_id=ed.address_key(address),
            advocate_id=cmd.advocate_id,
            program_id=advocate["program_id"],
            facts={"invite": {"message": cmd.message}, "locale": locale, "consent": True},
            to_address=address,
            due=now,
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
            field="emails",
        )
    return results + queued


# --- templates (HTTP) -------------------------------------------------------------------------


async def put_template(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    template: str,
    locale: str,
    cmd: TemplateIn,
) -> asyncpg.Record:
    ed.template_spec(template)
    locale = ed.validate_locale(locale)
    ed.check_template(cmd.subject, cmd.html, cmd.text, template)
    return await repo.put_template(
        conn,
        tenant_id=tenant_id,
        program_id=program_id,
        template=template,
        locale=locale,
        subject=cmd.subject,
        html=cmd.html,
        text=cmd.text,
    )


async def get_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> asyncpg.Record:
    ed.template_spec(template)
    row = await repo.get_template(conn, tenant_id, program_id, template, ed.validate_locale(locale))
    if row is None:
        raise NotFound(
            f"program '{program_id}' has no own '{template}' wording in '{locale}' "
            "(the built-in one applies)",
            field="locale",
        )
    return row


async def delete_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> None:
    await get_template(conn, tenant_id, program_id, template, locale)
    await repo.delete_template(conn, tenant_id, program_id, template, ed.validate_locale(locale))


async def list_templates(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> list[asyncpg.Record]:
    return await repo.list_templates(conn, tenant_id, program_id)


async def preview(
    conn: asyncpg.Connection, tenant_id: str, template: str, cmd: PreviewIn
) -> tuple[ed.Rendered, str]:
    """Renders with sample data: the draft in the request if any, else the wording a real mail
    for this program and locale would get. Returns the rendering and where the wording came
    from ("draft", "program" or "builtin")."""
    ed.template_spec(template)
    locale = ed.validate_locale(cmd.locale) if cmd.locale else None
    context = ed.sample_context(template)
    program = await repo.get_program(conn, tenant_id, cmd.program_id) if cmd.program_id else None
    if program is not None:
        context["program"] = {"name": program["name"]}
    if cmd.subject is not None or cmd.html is not None or cmd.text is not None:
        if cmd.subject is None or cmd.html is None or cmd.text is None:
            raise InvalidInput(
                "a draft needs subject, html and text",
                field="subject" if not cmd.subject else "text",
            )
        wording = ed.Wording(cmd.subject, cmd.html, cmd.text, locale or "en", "program")
        source = "draft"
    else:
        overrides = (
            await repo.template_overrides(conn, tenant_id, cmd.program_id, template)
            if cmd.program_id
            else {}
        )
        chain = ed.locale_chain(locale, program["default_locale"] if program else None)
        wording = ed.choose_wording(template, chain, overrides)
        source = wording.source
    ed.check_template(wording.subject, wording.html, wording.text, template)
    return ed.render(wording, context, strict=True), source


# --- suppressions and unsubscribe -------------------------------------------------------------


async def add_suppression(
    conn: asyncpg.Connection, tenant_id: str, address: str, reason: str, detail: str | None
) -> asyncpg.Record:
    """Also the bounce and complaint hook: an ESP's webhook or a bounce processor posts here."""
    return await repo.suppress(conn, tenant_id, ed.validate_address(address), reason, detail)


async def remove_suppression(conn: asyncpg.Connection, tenant_id: str, address: str) -> None:
    if not await repo.delete_suppression(conn, tenant_id, ed.normalize_address(address)):
        raise NotFound("that address is not suppressed", field="email")


async def list_suppressions(
    conn: asyncpg.Connection, tenant_id: str, *, limit: int, after: str | None
) -> list[asyncpg.Record]:
    return await repo.list_suppressions(
        conn, tenant_id, limit=limit, after=ed.normalize_address(after) if after else None
    )


async def unsubscribe(conn: asyncpg.Connection, email_id: str) -> asyncpg.Record | None:
    """Suppresses the address the mail went to, for its tenant. None for an unknown mail (or
    one whose address was already erased): nothing to do, and the page says so."""
    email = await repo.get_email(conn, email_id)
    if email is None or not email["to_address"]:
        return None
    await repo.suppress(
        conn, email["tenant_id"], email["to_address"], "unsubscribed", f"one-click: {email_id}"
    )
    return await repo.get_program(conn, email["tenant_id"], email["program_id"])


async def list_emails(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    recipient_kind: str | None,
    recipient_id: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await repo.list_emails(
        conn,
        tenant_id,
        recipient_kind=recipient_kind,
        recipient_id=recipient_id,
        limit=limit,
    )


# --- the sender's transactions ----------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A claimed mail, rendered and addressed: ready for SMTP."""

    row: asyncpg.Record
    envelope: ed.Envelope


async def claim(
    conn: asyncpg.Connection, *, now: datetime, lease_until: datetime, limit: int
) -> list[asyncpg.Record]:
    return await repo.claim_due_emails(conn, now=now, lease_until=lease_until, limit=limit)


async def prepare(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    *,
    now: datetime,
    sender: str,
    base_url: str,
    unsubscribe_key: str,
    retry_schedule: list[float],
) -> Outgoing | None:
    """Address and render a claimed mail; None when it was settled instead (suppressed, no
    address after the last retry, a template that cannot render)."""
    spec = ed.template_spec(row["template"])
    context_facts: dict[str, Any] = _json(row["context"])
    consent = False
    name: str | None = None
    locale: str | None = None
    address: str | None = None
    if row["recipient_kind"] == "invitee":
        address = row["to_address"]
        locale = context_facts.get("locale")
        consent = bool(context_facts.get("consent"))
    else:
        contact = await repo.get_contact(
            conn, row["tenant_id"], row["recipient_kind"], row["recipient_id"]
        )
        if contact is not None:
            address, name, locale = contact["email"], contact["name"], contact["locale"]
            consent = contact["marketing_consent"]
    if not address:
        # The contact copy may still be on its way (another topic): wait for it, on the
        # retry schedule, then give up.
        outcome, next_at = ed.after_smtp(0, row["attempts"], retry_schedule, now)
        await _settle(
            conn,
            row,
            "queued" if outcome == "retry" else "failed",
            next_at,
            error="no address known for the recipient",
            now=now,
        )
        return None
    reason = ed.suppression(
        spec.category, await repo.suppressed_as(conn, row["tenant_id"], address), consent
    )
    if reason is not None:
        await _settle(conn, row, "suppressed", None, suppressed_reason=reason, now=now)
        await _emit(
            conn,
            row,
            out.EmailSuppressed(
                email_id=row["id"],
                template=row["template"],
                recipient_kind=row["recipient_kind"],
                recipient_id=row["recipient_id"],
                reason=reason,
                program_id=row["program_id"],
                cause_event_id=row["cause_key"],
            ),
        )
        return None
    program = await repo.get_program(conn, row["tenant_id"], row["program_id"])
    if program is None and row["attempts"] <= len(retry_schedule):
        # Program and advocate events travel on different partitions: the program's copy
        # (its name, its default locale) may not be here yet. Wait for it like for an
        # address; after the last retry the mail goes out without it.
        _, next_at = ed.after_smtp(0, row["attempts"], retry_schedule, now)
        await _settle(conn, row, "queued", next_at, error="program not known yet", now=now)
        return None
    advocate = (
        await repo.get_contact(conn, row["tenant_id"], "advocate", row["advocate_id"])
        if row["advocate_id"]
        else None
    )
    overrides = await repo.template_overrides(
        conn, row["tenant_id"], row["program_id"], row["template"]
    )
    wording = ed.choose_wording(
        row["template"],
        ed.locale_chain(locale, program["default_locale"] if program else None),
        overrides,
    )
    link_url = ed.unsubscribe_url(base_url, ed.unsubscribe_token(row["id"], unsubscribe_key))
    context = ed.build_context(
        row["template"],
        program_name=program["name"] if program else None,
        recipient=ed.Person(name=name),
        advocate=ed.Person(
            name=advocate["name"] if advocate else None,
            link_url=advocate["link_url"] if advocate else None,
            code=advocate["code"] if advocate else None,
        ),
        facts=context_facts,
        unsubscribe_url=link_url,
    )
    try:
        rendered = ed.render(wording, context)
    except Exception as exc:  # a merchant's template that fails at send time: say so, once
        await _settle(conn, row, "failed", None, error=f"template: {exc}"[:500], now=now)
        return None
    envelope = ed.Envelope(
        email_id=row["id"],
        sender=sender,
        to=address,
        rendered=rendered,
        unsubscribe=link_url,
        sent_at=now,
    )
    return Outgoing(row, envelope)


async def record_smtp(
    conn: asyncpg.Connection,
    outgoing: Outgoing,
    code: int | None,
    error: str | None,
    *,
    now: datetime,
    retry_schedule: list[float],
) -> str:
    """Settle after the SMTP attempt; returns the outcome."""
    row, envelope = outgoing.row, outgoing.envelope
    outcome, next_at = ed.after_smtp(code, row["attempts"], retry_schedule, now)
    if outcome == "sent":
        settled = await _settle(
            conn, row, "sent", None, now=now, locale=envelope.rendered.locale, to=envelope.to
        )
        if settled:
            await _emit(
                conn,
                row,
                out.EmailSent(
                    email_id=row["id"],
                    template=row["template"],
                    recipient_kind=row["recipient_kind"],
                    recipient_id=row["recipient_id"],
                    program_id=row["program_id"],
                    locale=envelope.rendered.locale,
                    cause_event_id=row["cause_key"],
                ),
            )
    elif outcome == "bounced":
        await _settle(conn, row, "failed", None, error=error, now=now, to=envelope.to)
        await repo.suppress(conn, row["tenant_id"], envelope.to, "bounced", error)
    else:
        await _settle(
            conn, row, "queued" if outcome == "retry" else "failed", next_at, error=error, now=now
        )
    return outcome


async def _settle(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    status: str,
    next_at: datetime | None,
    *,
    now: datetime,
    error: str | None = None,
    suppressed_reason: str | None = None,
    locale: str | None = None,
    to: str | None = None,
) -> bool:
    return await repo.settle_email(
        conn,
        email_id=row["id"],
        attempt=row["attempts"],
        status=status,
        next_attempt_at=next_at,
        error=error,
        suppressed_reason=suppressed_reason,
        locale=locale,
        to_address=to,
        at=now,
    )


async def _emit(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: out.EmailSent | out.EmailSuppressed
) -> None:
    await EVENTS.emit(
        conn,
        payload,
        tenant_id=row["tenant_id"],
        key=row["recipient_id"],
        subject=row["id"],
        event_id=f"{row['id']}.{payload.TYPE}",
    )


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value or {})
