"""Use cases of attribution-service: accept a conversion, decide it, and keep local copies of
link-service's facts. HTTP routes and Kafka consumers both end here; every function takes the
caller's connection (the edge's transaction) and publishes through the outbox."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from attribution_service import domain, repository
from attribution_service.schemas import ConversionIn
from referral_events import CloudEvent, topics
from referral_events.contracts import attribution as out
from referral_events.contracts import link as ev
from referral_events.outbox import emit
from servicekit import money
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput, NotFound

SOURCE = "/services/attribution-service"


def request_hash(cmd: ConversionIn) -> str:
    canonical = json.dumps(cmd.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def submit_conversion(
    conn: asyncpg.Connection, tenant_id: str, cmd: ConversionIn, idempotency_key: str | None
) -> tuple[asyncpg.Record, bool]:
    """Returns the conversion and whether this call created it. The same key with the same body
    returns the first result; with another body it is a conflict. The same (type, order id) is
    the same conversion."""
    digest = request_hash(cmd)
    if idempotency_key:
        existing = await repository.conversion_by_key(conn, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False

    currency = money.validate_currency(cmd.currency) if cmd.currency else None
    amount_minor = (
        money.to_minor(cmd.amount, currency) if cmd.amount is not None and currency else None
    )
    code_key = cmd.code.strip().upper() if cmd.code else None
    if code_key:
        code = await repository.get_code(conn, code_key)
        if code is not None and code["tenant_id"] != tenant_id:
            raise InvalidInput(f"unknown referral code '{cmd.code}'", field="code")
    if cmd.click_id:
        click = await repository.get_click(conn, cmd.click_id)
        if click is not None and click["tenant_id"] != tenant_id:
            raise InvalidInput(f"unknown click id '{cmd.click_id}'", field="click_id")

    row = await repository.insert_conversion(
        conn,
        id=new_id("cnv"),
        tenant_id=tenant_id,
        type=cmd.type,
        customer_id=cmd.customer_id,
        email=cmd.email,
        order_id=cmd.order_id,
        amount_minor=amount_minor,
        currency=currency,
        occurred_at=cmd.occurred_at or datetime.now(UTC),
        click_id=cmd.click_id,
        code_key=code_key,
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    if row is None:
        existing = None
        if idempotency_key:
            existing = await repository.conversion_by_key(conn, tenant_id, idempotency_key)
        if existing is None and cmd.order_id:
            existing = await repository.conversion_by_order(conn, tenant_id, cmd.type, cmd.order_id)
        assert existing is not None
        return (_replay(existing, digest) if idempotency_key else existing), False

    if await _evidence_missing(conn, row):
        return row, True  # waits for the click/code event; see resolve_pending
    return await decide_conversion(conn, row), True


def _replay(existing: asyncpg.Record, digest: str) -> asyncpg.Record:
    if existing["request_hash"] != digest:
        raise Conflict(
            "this Idempotency-Key was used with a different request body", field="Idempotency-Key"
        )
    return existing


async def _evidence_missing(conn: asyncpg.Connection, conversion: asyncpg.Record) -> bool:
    if conversion["code_key"] and await repository.get_code(conn, conversion["code_key"]) is None:
        return True
    return (
        bool(conversion["click_id"])
        and await repository.get_click(conn, conversion["click_id"]) is None
    )


async def decide_conversion(
    conn: asyncpg.Connection, conv: asyncpg.Record, ignore_missing: bool = False
) -> asyncpg.Record:
    """Decide a pending conversion with the evidence known now, record why, and publish."""
    tenant_id = conv["tenant_id"]
    code = click = None
    if conv["code_key"]:
        c = await repository.get_code(conn, conv["code_key"])
        if c is not None and c["tenant_id"] == tenant_id:
            code = domain.Code(c["code"], c["program_id"], c["advocate_id"])
    if conv["click_id"]:
        k = await repository.get_click(conn, conv["click_id"])
        if k is not None and k["tenant_id"] == tenant_id:
            click = domain.Click(
                k["id"],
                k["program_id"],
                k["advocate_id"],
                k["clicked_at"],
                k["is_bot"],
                k["counts"],
            )
    ref = await repository.latest_referral(conn, tenant_id, conv["customer_id"])
    referral = domain.Referral(ref["id"], ref["program_id"], ref["advocate_id"]) if ref else None

    candidate = domain.pick_evidence(code, click, referral)
    program = advocate = None
    if candidate is not None:
        p = await repository.get_program(conn, candidate.program_id)
        program = domain.Program(p["status"], p["attribution_window_days"]) if p else None
        a = await repository.get_advocate(conn, candidate.advocate_id)
        advocate = domain.Advocate(a["customer_id"], a["blocked"]) if a else None
    decision = domain.decide(
        customer_id=conv["customer_id"],
        occurred_at=conv["occurred_at"],
        candidate=candidate,
        program=program,
        advocate=advocate,
    )
    explanation = domain.explanation(decision, program.window_days if program else None)
    if ignore_missing:
        explanation["note"] = "evidence named in the request was not seen within the grace period"

    if decision.status != "attributed" or decision.candidate is None:
        row = await repository.record_decision(
            conn,
            conv["id"],
            status=decision.status,
            program_id=candidate.program_id if candidate else None,
            advocate_id=candidate.advocate_id if candidate else None,
            referral_id=None,
            evidence=candidate.evidence if candidate else None,
            is_first_purchase=False,
            explanation=explanation,
        )
        if decision.status == "rejected":
            await emit(
                conn,
                out.ConversionRejected(
                    conversion_id=row["id"],
                    program_id=row["program_id"],
                    advocate_id=row["advocate_id"],
                    conversion_type=row["type"],
                    reasons=decision.reasons,
                    occurred_at=row["occurred_at"],
                ),
                source=SOURCE,
                tenant_id=tenant_id,
                topic=topics.ATTRIBUTION_EVENTS,
                key=row["advocate_id"] or row["id"],
                event_id=f"{row['id']}:rejected",
            )
        return row

    cand = decision.candidate
    referral_row, created = await repository.insert_referral_or_get(
        conn,
        referral_id=new_id("ref"),
        tenant_id=tenant_id,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        friend_customer_id=conv["customer_id"],
        evidence=cand.evidence,
        click_id=cand.click.click_id if cand.click else None,
    )
    first_purchase = (
        conv["type"] == "purchase"
        and await repository.count_attributed_purchases(conn, referral_row["id"], conv["id"]) == 0
    )
    row = await repository.record_decision(
        conn,
        conv["id"],
        status="attributed",
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        referral_id=referral_row["id"],
        evidence=cand.evidence,
        is_first_purchase=first_purchase,
        explanation=explanation,
    )
    if created:
        await emit(
            conn,
            out.ReferralAttributed(
                referral_id=referral_row["id"],
                program_id=cand.program_id,
                advocate_id=cand.advocate_id,
                friend_customer_id=conv["customer_id"],
                conversion_id=row["id"],
                evidence=cand.evidence,
                click_id=referral_row["click_id"],
                attributed_at=datetime.now(UTC),
            ),
            source=SOURCE,
            tenant_id=tenant_id,
            topic=topics.ATTRIBUTION_EVENTS,
            key=cand.advocate_id,
            event_id=f"{referral_row['id']}:attributed",
        )
    await emit(
        conn,
        out.ConversionAttributed(
            conversion_id=row["id"],
            referral_id=referral_row["id"],
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            friend_customer_id=conv["customer_id"],
            conversion_type=row["type"],
            order_id=row["order_id"],
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            is_first_purchase=first_purchase,
            occurred_at=row["occurred_at"],
            evidence=cand.evidence,
        ),
        source=SOURCE,
        tenant_id=tenant_id,
        topic=topics.ATTRIBUTION_EVENTS,
        key=cand.advocate_id,
        event_id=f"{row['id']}:attributed",
    )
    return row


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> asyncpg.Record:
    row = await repository.get_conversion(conn, tenant_id, conversion_id)
    if row is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="conversion_id")
    return row


async def resolve_pending(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> int:
    """Decide conversions that were waiting for this click or code."""
    waiting = await repository.pending_waiting_for(
        conn, tenant_id, click_id=click_id, code_key=code_key
    )
    decided = 0
    for conv in waiting:
        if not await _evidence_missing(conn, conv):
            await decide_conversion(conn, conv)
            decided += 1
    return decided


async def decide_overdue(
    conn: asyncpg.Connection, grace: timedelta, now: datetime, limit: int = 100
) -> int:
    """Conversions whose evidence never arrived are decided without it."""
    overdue = await repository.pending_overdue(conn, now - grace, limit)
    for conv in overdue:
        await decide_conversion(conn, conv, ignore_missing=True)
    return len(overdue)


# --- event handlers: keep the local copies of link-service's facts -------------------------


async def on_program(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    await repository.upsert_program(conn, payload.program_id, event.tenantid, payload.status)


async def on_advocate_enrolled(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.AdvocateEnrolled
) -> None:
    await repository.upsert_advocate(
        conn, payload.advocate_id, event.tenantid, payload.program_id, payload.customer_id
    )


async def on_code_created(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.CodeCreated
) -> None:
    key = payload.code.upper()
    await repository.upsert_code(
        conn, key, payload.code, event.tenantid, payload.program_id, payload.advocate_id
    )
    await resolve_pending(conn, event.tenantid, code_key=key)


async def on_link_clicked(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.LinkClicked
) -> None:
    await repository.insert_click(
        conn,
        click_id=payload.click_id,
        tenant_id=event.tenantid,
        code=payload.code,
        program_id=payload.program_id,
        advocate_id=payload.advocate_id,
        clicked_at=payload.clicked_at,
        ip_hash=payload.ip_hash,
        is_bot=payload.is_bot,
        counts=payload.counts,
    )
    await resolve_pending(conn, event.tenantid, click_id=payload.click_id)
