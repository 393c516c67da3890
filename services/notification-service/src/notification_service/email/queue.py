"""The email queue: how a mail is queued (for a consumed event or an invite), and the sender's
two transactions around each SMTP attempt: `prepare` addresses and renders a claimed mail (or
settles it: suppressed, no address yet, a template that cannot render), `record_smtp` settles
it after the attempt and publishes email.sent. Every function takes the caller's connection
(the edge owns the transaction)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from notification_service.email import domain, repository
from notification_service.email.repository import Settlement
from notification_service.events import EVENTS
from referral_events.contracts import notification as out
from servicekit.ids import new_id
from servicekit.problems import InvalidInput

T = TypeVar("T")


async def enqueue(conn: asyncpg.Connection, mail: repository.NewMail) -> str | None:
    """Queue one mail; the email id, or None when this (cause, recipient, template) has one."""
    email_id = new_id("eml")
    return email_id if await repository.insert_email(conn, email_id, mail) else None


@dataclass(frozen=True)
class Outgoing:
    """A claimed mail, rendered and addressed: ready for SMTP."""

    row: asyncpg.Record
    envelope: domain.Envelope


async def claim(
    conn: asyncpg.Connection, *, now: datetime, lease_until: datetime, limit: int
) -> list[asyncpg.Record]:
    return await repository.claim_due_emails(conn, now=now, lease_until=lease_until, limit=limit)


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A template's rendering (or check) in a thread, so the event loop never waits on a
    merchant's template; the renderer bounds its own time (domain.RENDER_SECONDS), and this
    waits a little longer at most."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(fn, *args, **kwargs), domain.RENDER_SECONDS * 5
        )
    except TimeoutError:
        raise InvalidInput("the template takes too long to render", field="/template") from None


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
    """Address and render a claimed mail; None when it was settled instead (suppressed,
    skipped for want of an address, a template that cannot render)."""
    spec = domain.template_spec(row["template"])
    context_facts: dict[str, Any] = _json(row["context"])
    consent = False
    name: str | None = None
    locale: str | None = None
    address: str | None = None
    contact: asyncpg.Record | None = None
    if row["recipient_kind"] == "invitee":
        address = row["to_address"]
        locale = context_facts.get("locale")
        consent = bool(context_facts.get("consent"))
    else:
        contact = await repository.get_contact(
            conn, row["tenant_id"], row["recipient_kind"], row["recipient_id"]
        )
        if contact is not None:
            address, name, locale = contact["email"], contact["name"], contact["locale"]
            consent = contact["marketing_consent"]
    if not address:
        known = contact is not None or row["recipient_kind"] == "invitee"
        status, next_at = domain.without_address(known, row["attempts"], retry_schedule, now)
        skipped: domain.SkipReason | None = "no_address" if status == "skipped" else None
        await _settle(
            conn,
            row,
            Settlement(
                status, next_at, "no address known for the recipient", skipped_reason=skipped
            ),
            now,
        )
        return None
    reason = domain.suppression(
        spec.category, await repository.suppressed_as(conn, row["tenant_id"], address), consent
    )
    if reason is not None:
        await _settle(conn, row, Settlement("suppressed", suppressed_reason=reason), now)
        await _emit(conn, row, domain.suppressed_event(row, reason))
        return None
    program = await repository.get_program(conn, row["tenant_id"], row["program_id"])
    if program is None and row["attempts"] <= len(retry_schedule):
        # Program and advocate events travel on different partitions: the program's copy
        # (its name, its default locale) may not be here yet. Wait for it like for an
        # address; after the last retry the mail goes out without it.
        _, next_at = domain.after_smtp(0, row["attempts"], retry_schedule, now)
        await _settle(conn, row, Settlement("queued", next_at, "program not known yet"), now)
        return None
    advocate = (
        await repository.get_contact(conn, row["tenant_id"], "advocate", row["advocate_id"])
        if row["advocate_id"]
        else None
    )
    overrides = await repository.template_overrides(
        conn, row["tenant_id"], row["program_id"], row["template"]
    )
    wording = domain.choose_wording(
        row["template"],
        domain.locale_chain(locale, program["default_locale"] if program else None),
        overrides,
    )
    link_url = domain.unsubscribe_url(
        base_url, domain.unsubscribe_token(row["id"], unsubscribe_key)
    )
    context = domain.build_context(
        row["template"],
        program_name=program["name"] if program else None,
        recipient=domain.Person(name=name),
        advocate=domain.Person(
            name=advocate["name"] if advocate else None,
            link_url=advocate["link_url"] if advocate else None,
            code=advocate["code"] if advocate else None,
        ),
        facts=context_facts,
        unsubscribe_url=link_url,
    )
    try:
        rendered = await off_loop(domain.render, wording, context)
    except Exception as exc:  # a merchant's template that fails at send time: say so, once
        await _settle(conn, row, Settlement("failed", error=f"template: {exc}"[:500]), now)
        return None
    envelope = domain.Envelope(
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
    outcome, next_at = domain.after_smtp(code, row["attempts"], retry_schedule, now)
    status = domain.status_after(outcome)
    if outcome == "sent":
        sent = Settlement(status, locale=envelope.rendered.locale, to_address=envelope.to)
        if await _settle(conn, row, sent, now):
            await _emit(conn, row, domain.sent_event(row, envelope.rendered.locale))
    elif outcome == "bounced":
        await _settle(conn, row, Settlement(status, error=error, to_address=envelope.to), now)
        await repository.suppress(conn, row["tenant_id"], envelope.to, "bounced", error)
    else:
        await _settle(conn, row, Settlement(status, next_at, error), now)
    return outcome


async def _settle(
    conn: asyncpg.Connection, row: asyncpg.Record, settlement: Settlement, now: datetime
) -> bool:
    """Settles the claim `row` is (its attempt): False when a newer claim took the mail over."""
    return await repository.settle_email(conn, row["id"], row["attempts"], settlement, now)


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
