"""Use cases of conversions: accept one, decide it, record the decision and publish it. The
HTTP route, webhooks, the group commit's one-by-one path and the pending sweep all end here;
every function takes the caller's connection (the edge's transaction) and publishes through the
outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from attribution_service.conversions import domain, fraud, repository
from attribution_service.conversions.events import (
    attributed_events,
    flagged_event,
    outbox_entry,
    rejected_event,
)
from attribution_service.conversions.schemas import ConversionIn
from attribution_service.events import EVENTS
from attribution_service.metrics import FRAUD_DECISIONS
from attribution_service.programs import repository as programs
from attribution_service.programs.domain import BUILTIN_TYPES, settings_by_program
from attribution_service.refunds import repository as refunds
from attribution_service.reviews import repository as reviews
from referral_events.outbox import enqueue_rows
from servicekit import money
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput, NotFound


def request_hash(cmd: Any) -> str:
    canonical = json.dumps(cmd.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def keyed_hash(key: str, value: str | None) -> str | None:
    """The same keyed hash link-service applies to IP addresses, so the two compare."""
    if not value:
        return None
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


# --- conversions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewConversion:
    """A conversion request checked and shaped for the insert (everything that needs no I/O):
    amounts in minor units, the request hash, keyed hashes of IP and device. `columns` are
    repository.insert_conversion's keyword arguments."""

    tenant_id: str
    cmd: ConversionIn
    idempotency_key: str | None
    now: datetime
    columns: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.columns["id"])


def prepare_conversion(
    tenant_id: str,
    cmd: ConversionIn,
    idempotency_key: str | None,
    *,
    hash_key: str,
    now: datetime,
    source: str = "api",
) -> NewConversion:
    """Raises InvalidInput for an unknown currency or an amount it cannot hold."""
    currency = money.validate_currency(cmd.currency) if cmd.currency else None
    amount_minor = cmd.amount_minor
    if cmd.amount is not None and currency:
        amount_minor = money.to_minor(cmd.amount, currency)
    columns: dict[str, Any] = {
        "id": new_id("cnv"),
        "tenant_id": tenant_id,
        "type": cmd.type,
        # verified against the tenant's programs before the insert (custom_type_known)
        "custom_type": None if cmd.type in BUILTIN_TYPES else cmd.type,
        "customer_id": cmd.customer_id,
        "email": cmd.email,
        "email_norm": fraud.normalize_email(cmd.email),
        "order_id": cmd.order_id,
        "amount_minor": amount_minor,
        "currency": currency,
        "occurred_at": cmd.occurred_at or now,
        "click_id": cmd.click_id,
        "code_key": cmd.code.strip().upper() if cmd.code else None,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash(cmd),
        "subscription_id": cmd.subscription_id,
        "ip_hash": keyed_hash(hash_key, str(cmd.ip) if cmd.ip else None),
        "device_hash": keyed_hash(hash_key, cmd.device_id),
        "existing_customer": cmd.existing_customer,
        "locale": cmd.locale,
        "source": source,
    }
    return NewConversion(tenant_id, cmd, idempotency_key, now, columns)


async def check_custom_type(conn: asyncpg.Connection, new: NewConversion) -> None:
    cmd = new.cmd
    if cmd.type not in BUILTIN_TYPES and not await programs.tenant_names_type(
        conn, new.tenant_id, cmd.type
    ):
        raise InvalidInput(
            f"'{cmd.type}' is not signup, purchase, subscription_payment or a custom type"
            " one of your programs names",
            field="type",
        )


async def submit_conversion(
    conn: asyncpg.Connection,
    tenant_id: str,
    cmd: ConversionIn,
    idempotency_key: str | None,
    *,
    grace: timedelta,
    hash_key: str,
    now: datetime,
    source: str = "api",
) -> tuple[asyncpg.Record, bool]:
    """Returns the conversion and whether this call created it. The same key with the same body
    returns the first result; with another body it is a conflict. The same (type, order id) is
    the same conversion."""
    new = prepare_conversion(
        tenant_id, cmd, idempotency_key, hash_key=hash_key, now=now, source=source
    )
    return await submit_prepared(conn, new, grace=grace)


async def submit_prepared(
    conn: asyncpg.Connection, new: NewConversion, *, grace: timedelta
) -> tuple[asyncpg.Record, bool]:
    """submit_conversion after prepare_conversion (also the one-by-one path of a group commit,
    see conversions.batch)."""
    await check_custom_type(conn, new)
    # The insert and the evidence read in one statement (one round trip on the hot path). A
    # refusal of the evidence takes the new row back out: a webhook catches the refusal and
    # records the order without that evidence in the same transaction.
    row, ctx = await repository.insert_conversion(conn, **new.columns)
    outcome = await accept_evidence(conn, new, row, ctx, grace=grace)
    if outcome is not None:
        return outcome
    assert row is not None
    return await decide_conversion(conn, row, ctx=ctx), True


async def accept_evidence(
    conn: asyncpg.Connection,
    new: NewConversion,
    row: asyncpg.Record | None,
    ctx: asyncpg.Record,
    *,
    grace: timedelta,
) -> tuple[asyncpg.Record, bool] | None:
    """After the insert: refuse evidence that cannot be used (the new row taken back out), answer
    a repeat with the first conversion, or see whether the conversion must wait for its
    evidence. None: decide it now with `ctx`."""
    try:
        missing = evidence_missing(new, ctx, grace=grace)
    except InvalidInput:
        if row is not None:
            await repository.delete_new_conversion(conn, new.id)
        raise
    if row is None:
        return await existing_conversion(conn, new), False
    if missing:
        return await wait_or_decide(conn, row)
    return None


def evidence_missing(new: NewConversion, ctx: Mapping[str, Any], *, grace: timedelta) -> bool:
    """See _check_evidence."""
    c = new.columns
    return _check_evidence(
        ctx, new.tenant_id, c["code_key"], c["click_id"], new.now - c["occurred_at"] > grace
    )


async def existing_conversion(conn: asyncpg.Connection, new: NewConversion) -> asyncpg.Record:
    """The conversion a repeated request names (its key or its (type, order id)); Conflict when
    the key came with another body."""
    return await _existing(
        conn, new.tenant_id, new.cmd, new.idempotency_key, new.columns["request_hash"]
    )


async def wait_or_decide(
    conn: asyncpg.Connection, row: asyncpg.Record
) -> tuple[asyncpg.Record, bool]:
    """A new conversion naming evidence not seen yet. The consumer recording this click or code
    may have committed after our insert's snapshot was taken, and its resolve_pending cannot
    see our uncommitted row. Both sides take the evidence lock and read again after it, so
    whichever commits second sees the other's row and no conversion waits for evidence that
    already arrived."""
    await repository.lock_evidence(
        conn, row["tenant_id"], click_id=row["click_id"], code_key=row["code_key"]
    )
    ctx = await evidence_context(conn, row)
    if awaits_evidence(row, ctx):
        return row, True  # waits for the click/code event; see resolve_pending
    return await decide_conversion(conn, row, ctx=ctx), True


async def _existing(
    conn: asyncpg.Connection, tenant_id: str, cmd: ConversionIn, key: str | None, digest: str
) -> asyncpg.Record:
    if key:
        existing = await repository.conversion_by_key(conn, tenant_id, key)
        if existing is not None:
            if existing["request_hash"] != digest:
                raise Conflict(
                    "this Idempotency-Key was used with a different request body",
                    field="Idempotency-Key",
                )
            return existing
    assert cmd.order_id is not None  # only the key or (type, order id) can collide
    existing = await repository.conversion_by_order(conn, tenant_id, cmd.type, cmd.order_id)
    assert existing is not None
    return existing


def _check_evidence(
    ctx: Mapping[str, Any],
    tenant_id: str,
    code_key: str | None,
    click_id: str | None,
    too_old_for_lag: bool,
) -> bool:
    """Refuses evidence of another tenant, and unknown evidence that cannot be a late event:
    awaited before without arriving, or named by a conversion older than the grace period.
    Returns whether the conversion must wait for it (unknown, but it may still arrive)."""
    expired = set(ctx["expired"] or [])
    missing = False
    for kind, value, owner, field in (
        ("code", code_key, ctx["code_tenant"], "code"),
        ("click", click_id, ctx["click_tenant"], "click_id"),
    ):
        if value is None:
            continue
        label = "referral code" if kind == "code" else "click id"
        if owner is not None and owner != tenant_id:
            raise InvalidInput(f"unknown {label} '{value}'", field=field)
        if owner is None:
            if f"{kind}:{tenant_id}" in expired or too_old_for_lag:
                raise InvalidInput(f"unknown {label} '{value}'", field=field)
            missing = True
    return missing


def click_of(k: Mapping[str, Any]) -> domain.Click:
    return domain.Click(
        k["id"],
        k["program_id"],
        k["advocate_id"],
        _dt(k["clicked_at"]),
        is_bot=k["is_bot"],
        counts=k["counts"],
        ip_hash=k.get("ip_hash"),
        device_class=k.get("device_class"),
        inactive_reason=k.get("inactive_reason"),
    )


def _dt(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else _dt(value)


async def evidence_context(conn: asyncpg.Connection, conv: asyncpg.Record) -> asyncpg.Record:
    return await repository.evidence_context(
        conn,
        tenant_id=conv["tenant_id"],
        customer_id=conv["customer_id"],
        type_=conv["type"],
        code_key=conv["code_key"],
        click_id=conv["click_id"],
        conversion_id=conv["id"],
    )


def choose_evidence(conv: Mapping[str, Any], ctx: Mapping[str, Any]) -> tuple[domain.Choice, bool]:
    """The evidence chosen for `conv` from its evidence context, and whether the click it names
    is known (then the customer is linked to it)."""
    settings = settings_by_program(ctx["settings"])
    c = ctx["code"]
    code = domain.Code(c["code"], c["program_id"], c["advocate_id"]) if c else None
    clicks = [click_of(k) for k in ctx["clicks"]]
    referrals = [
        domain.Referral(
            r["id"], r["program_id"], r["advocate_id"], _dt(r["created_at"]), r["prior"]
        )
        for r in ctx["referrals"]
    ]
    named = bool(conv["click_id"]) and any(k.click_id == conv["click_id"] for k in clicks)
    choice = domain.choose(
        conversion_type=conv["type"],
        occurred_at=conv["occurred_at"],
        code=code,
        clicks=clicks,
        referrals=referrals,
        settings_by_program=settings,
    )
    return choice, named


def screening_read_ahead(choice: domain.Choice, ahead: Mapping[str, Any]) -> bool:
    """Whether the screening facts insert_conversion read ahead (those of the named code's
    advocate, anchored at the conversion) are this candidate's: the code won and no click
    anchors the screening."""
    cand = choice.candidate
    assert cand is not None
    return (
        cand.click is None
        and ahead.get("code_advocate_id") == cand.advocate_id
        and ahead.get("code_program_id") == cand.program_id
    )


def screening_anchor(conv: Mapping[str, Any], choice: domain.Choice) -> datetime:
    cand = choice.candidate
    assert cand is not None
    anchor: datetime = cand.click.clicked_at if cand.click else conv["occurred_at"]
    return anchor


def screening_window(choice: domain.Choice) -> timedelta:
    return timedelta(hours=choice.settings.fraud.self_referral.network_window_hours)


def fraud_facts(
    conv: Mapping[str, Any], choice: domain.Choice, ctx: Mapping[str, Any]
) -> fraud.Facts:
    """The screening facts of the chosen candidate from a screening context (see
    repository.screening_context)."""
    cand = choice.candidate
    assert cand is not None
    click = cand.click
    p = ctx["program"]
    a = ctx["advocate"]
    return fraud.Facts(
        conversion_type=conv["type"],
        occurred_at=conv["occurred_at"],
        customer_id=conv["customer_id"],
        email=conv["email"],
        ip_hash=conv["ip_hash"],
        device_hash=conv["device_hash"],
        click=fraud.ClickFacts(click.clicked_at, click.is_bot, click.ip_hash, click.inactive_reason)
        if click
        else None,
        advocate_customer_id=a["customer_id"] if a else None,
        advocate_email=a["email"] if a else None,
        advocate_blocked=a["blocked"] if a else None,
        advocate_sightings=tuple(
            fraud.Sighting(_dt(s["seen_at"]), s["ip_hash"], s["device_hash"])
            for s in ctx["sightings"]
        ),
        marked_existing=conv["existing_customer"],
        converted_before=ctx["converted_before"],
        program_status=p["status"] if p else None,
        program_starts_at=_opt_dt(p["starts_at"]) if p else None,
        program_ends_at=_opt_dt(p["ends_at"]) if p else None,
        advocate_conversions_hour=ctx["adv_hour"],
        advocate_conversions_day=ctx["adv_day"],
        signups_same_ip_day=ctx["ip_signups"],
        signups_same_device_day=ctx["device_signups"],
    )


async def decide_conversion(
    conn: asyncpg.Connection,
    conv: asyncpg.Record,
    note: str | None = None,
    ctx: asyncpg.Record | None = None,
) -> asyncpg.Record:
    """Decide a conversion with the evidence known now, record why, and publish."""
    if ctx is None:
        ctx = await evidence_context(conn, conv)
    choice, named_click = choose_evidence(conv, ctx)
    if named_click:
        await repository.link_customer_click(
            conn, conv["tenant_id"], conv["customer_id"], conv["click_id"]
        )
    facts = await _facts(conn, conv, choice, ctx) if choice.candidate is not None else None
    decision = domain.decide(choice, facts)
    explanation = domain.explanation(decision, note=note)
    cand = decision.candidate
    if decision.fraud_decision is not None:
        FRAUD_DECISIONS.labels(decision.fraud_decision).inc()

    if decision.status == "attributed" and cand is not None:
        return await attribute(conn, conv, cand, explanation)
    row = await repository.record_decision(
        conn,
        conv["id"],
        status=decision.status,
        decision=decision.fraud_decision,
        program_id=cand.program_id if cand else None,
        advocate_id=cand.advocate_id if cand else None,
        referral_id=None,
        evidence=cand.evidence if cand else None,
        is_first_purchase=False,
        sequence=None,
        explanation=explanation,
    )
    if decision.status == "rejected" and cand is not None:
        payload, event_id = rejected_event(row, cand, decision.reasons)
        await EVENTS.emit(
            conn, payload, tenant_id=row["tenant_id"], key=cand.advocate_id, event_id=event_id
        )
    elif decision.status == "review" and cand is not None:
        review = await reviews.insert_review(
            conn,
            id=new_id("rev"),
            tenant_id=row["tenant_id"],
            conversion_id=row["id"],
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            reasons=decision.reasons,
        )
        payload, event_id = flagged_event(row, cand, review["id"], decision.reasons)
        await EVENTS.emit(
            conn, payload, tenant_id=row["tenant_id"], key=cand.advocate_id, event_id=event_id
        )
    return row


async def _facts(
    conn: asyncpg.Connection, conv: asyncpg.Record, choice: domain.Choice, ahead: asyncpg.Record
) -> fraud.Facts:
    # insert_conversion read the facts of the code's advocate ahead, anchored at the conversion:
    # they are this candidate's when the code won and no click anchors the screening.
    if screening_read_ahead(choice, ahead):
        return fraud_facts(conv, choice, ahead)
    cand = choice.candidate
    assert cand is not None
    ctx = await repository.screening_context(
        conn,
        conv,
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        anchor=screening_anchor(conv, choice),
        network_window=screening_window(choice),
    )
    return fraud_facts(conv, choice, ctx)


async def attribute(
    conn: asyncpg.Connection,
    conv: asyncpg.Record,
    cand: domain.Candidate,
    explanation: dict[str, Any] | None,
    review_id: str | None = None,
    review: dict[str, Any] | None = None,
) -> asyncpg.Record:
    """Attach the friend to the advocate (creating the referral on first attribution) and
    publish the attribution. Also the path of an approved review."""
    row = await repository.attribute(
        conn,
        conv,
        referral_id=new_id("ref"),
        program_id=cand.program_id,
        advocate_id=cand.advocate_id,
        evidence=cand.evidence,
        click_id=cand.click.click_id if cand.click else None,
        explanation=explanation,
        review=review,
    )
    events = attributed_events(
        row,
        cand,
        referral_created=row["referral_created"],
        referral_click_id=row["referral_click_id"],
        review_id=review_id,
    )
    # one statement for both rows (and one wake-up of the relay)
    await enqueue_rows(conn, [outbox_entry(row["tenant_id"], cand, p, e) for p, e in events])
    return row


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    row = await repository.get_conversion(conn, tenant_id, conversion_id)
    if row is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="conversion_id")
    return row, await refunds.list_refunds(conn, conversion_id)


def awaits_evidence(conv: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    """Whether a piece of evidence the conversion names has still not been seen."""
    return bool(
        (conv["code_key"] and ctx["code_tenant"] is None)
        or (conv["click_id"] and ctx["click_tenant"] is None)
    )
