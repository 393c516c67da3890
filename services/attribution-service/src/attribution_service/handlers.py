"""Use cases of attribution-service: accept a conversion, decide it, review it, refund or cancel
it, and keep local copies of link-service's facts. HTTP routes, webhooks and Kafka consumers all
end here; every function takes the caller's connection (the edge's transaction) and publishes
through the outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from attribution_service import domain, fraud, repository
from attribution_service.events import EVENTS
from attribution_service.metrics import FRAUD_DECISIONS
from attribution_service.schemas import CancellationIn, ConversionIn, RefundIn
from referral_events import CloudEvent, EventPayload
from referral_events.contracts import attribution as out
from referral_events.contracts import link as ev
from referral_events.outbox import OutboxRow, enqueue_rows
from servicekit import money
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput, NotFound

RECEIPT_RETENTION = timedelta(days=7)


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
        "custom_type": None if cmd.type in domain.BUILTIN_TYPES else cmd.type,
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
    if cmd.type not in domain.BUILTIN_TYPES and not await repository.tenant_names_type(
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
    see conversion_batch)."""
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


def _click(k: Mapping[str, Any]) -> domain.Click:
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
    settings = _program_settings(ctx["settings"])
    c = ctx["code"]
    code = domain.Code(c["code"], c["program_id"], c["advocate_id"]) if c else None
    clicks = [_click(k) for k in ctx["clicks"]]
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


# A tenant's program settings parsed, by the JSON text Postgres gives (jsonb prints its keys
# in one order): every conversion reads them, and parsing and validating the same documents
# again for each one costs more than the rest of choosing.
_SETTINGS_CACHE: dict[str, dict[str, domain.ProgramSettings]] = {}


def _program_settings(text: str) -> dict[str, domain.ProgramSettings]:
    parsed = _SETTINGS_CACHE.get(text)
    if parsed is None:
        if len(_SETTINGS_CACHE) > 1_000:
            _SETTINGS_CACHE.clear()
        parsed = _SETTINGS_CACHE[text] = {
            pid: domain.ProgramSettings.model_validate(s) for pid, s in json.loads(text).items()
        }
    return parsed


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
        return await _attribute(conn, conv, cand, explanation)
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
        review = await repository.insert_review(
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


def rejected_event(
    row: Mapping[str, Any], cand: domain.Candidate, reasons: list[str]
) -> tuple[EventPayload, str]:
    return (
        out.ConversionRejected(
            conversion_id=row["id"],
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            conversion_type=_type(row),
            custom_type=row["custom_type"],
            friend_customer_id=row["customer_id"],
            order_id=row["order_id"],
            reasons=reasons,
            occurred_at=row["occurred_at"],
        ),
        f"{row['id']}:rejected",
    )


def flagged_event(
    row: Mapping[str, Any], cand: domain.Candidate, review_id: str, reasons: list[str]
) -> tuple[EventPayload, str]:
    return (
        out.ConversionFlagged(
            conversion_id=row["id"],
            review_id=review_id,
            program_id=cand.program_id,
            advocate_id=cand.advocate_id,
            friend_customer_id=row["customer_id"],
            conversion_type=_type(row),
            custom_type=row["custom_type"],
            reasons=reasons,
            occurred_at=row["occurred_at"],
        ),
        f"{row['id']}:flagged",
    )


def _type(row: Mapping[str, Any]) -> str:
    return "custom" if row["custom_type"] else str(row["type"])


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


async def _attribute(
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


def outbox_entry(
    tenant_id: str, cand: domain.Candidate, payload: EventPayload, event_id: str
) -> OutboxRow:
    """The outbox row of a conversion's event: keyed by the advocate, as every event of
    attribution.events."""
    return EVENTS.row(payload, tenant_id=tenant_id, key=cand.advocate_id, event_id=event_id)


def attributed_events(
    row: Mapping[str, Any],
    cand: domain.Candidate,
    *,
    referral_created: bool,
    referral_click_id: str | None,
    review_id: str | None = None,
) -> list[tuple[EventPayload, str]]:
    """referral.attributed (the friend's first attribution in the program) and
    conversion.attributed, with their event ids."""
    events: list[tuple[EventPayload, str]] = []
    if referral_created:
        events.append(
            (
                out.ReferralAttributed(
                    referral_id=row["referral_id"],
                    program_id=cand.program_id,
                    advocate_id=cand.advocate_id,
                    friend_customer_id=row["customer_id"],
                    conversion_id=row["id"],
                    evidence=cand.evidence,
                    click_id=referral_click_id,
                    attributed_at=datetime.now(UTC),
                    friend_email=row["email"],
                    friend_locale=row["locale"],
                ),
                f"{row['referral_id']}:attributed",
            )
        )
    events.append(
        (
            out.ConversionAttributed(
                conversion_id=row["id"],
                referral_id=row["referral_id"],
                program_id=cand.program_id,
                advocate_id=cand.advocate_id,
                friend_customer_id=row["customer_id"],
                conversion_type=_type(row),
                custom_type=row["custom_type"],
                order_id=row["order_id"],
                subscription_id=row["subscription_id"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
                is_first_purchase=row["is_first_purchase"],
                sequence=row["sequence"],
                occurred_at=row["occurred_at"],
                evidence=cand.evidence,
                review_id=review_id,
            ),
            f"{row['id']}:attributed",
        )
    )
    return events


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    row = await repository.get_conversion(conn, tenant_id, conversion_id)
    if row is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="conversion_id")
    return row, await repository.list_refunds(conn, conversion_id)


async def resolve_pending(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> int:
    """Decide conversions that were waiting for this click or code (the other piece of
    evidence they name may still be missing)."""
    decided = 0
    for conv in await repository.pending_waiting_for(
        conn, tenant_id, click_id=click_id, code_key=code_key
    ):
        ctx = await evidence_context(conn, conv)
        if awaits_evidence(conv, ctx):
            continue
        await decide_conversion(conn, conv, ctx=ctx)
        decided += 1
    return decided


def awaits_evidence(conv: Mapping[str, Any], ctx: Mapping[str, Any]) -> bool:
    """Whether a piece of evidence the conversion names has still not been seen."""
    return bool(
        (conv["code_key"] and ctx["code_tenant"] is None)
        or (conv["click_id"] and ctx["click_tenant"] is None)
    )


async def decide_overdue(
    conn: asyncpg.Connection, grace: timedelta, now: datetime, limit: int = 100
) -> int:
    """Conversions whose evidence never arrived within the grace period are decided without
    it; the evidence is remembered as expired, so later conversions naming it are refused."""
    overdue = await repository.pending_overdue(conn, now - grace, limit)
    for conv in overdue:
        row = await evidence_context(conn, conv)
        missing = []
        if conv["code_key"] and row["code_tenant"] is None:
            await repository.mark_expired_evidence(
                conn, conv["tenant_id"], "code", conv["code_key"]
            )
            missing.append(f"code {conv['code_key']}")
        if conv["click_id"] and row["click_tenant"] is None:
            await repository.mark_expired_evidence(
                conn, conv["tenant_id"], "click", conv["click_id"]
            )
            missing.append(f"click {conv['click_id']}")
        note = f"not seen within the {int(grace.total_seconds())}s grace period: " + ", ".join(
            missing
        )
        await decide_conversion(conn, conv, note=note)
    return len(overdue)


async def prune_receipts(conn: asyncpg.Connection, now: datetime) -> int:
    """Webhook receipts outlive every replay window (Stripe's timestamp tolerance, Shopify's
    retry span) by far after a week; older deliveries are refused as stale anyway."""
    return await repository.prune_receipts(conn, now - RECEIPT_RETENTION)


# --- reviews -------------------------------------------------------------------------------


async def decide_review(
    conn: asyncpg.Connection,
    tenant_id: str,
    review_id: str,
    *,
    approve: bool,
    reason: str,
    decided_by: str | None,
) -> asyncpg.Record:
    """Approve (the conversion is attributed and earns) or deny (it never earns). Repeating the
    same decision returns the review; the opposite decision on a closed review is a conflict."""
    review = await repository.get_review(conn, tenant_id, review_id, lock=True)
    if review is None:
        raise NotFound(f"no review '{review_id}'", field="review_id")
    wanted = "approved" if approve else "denied"
    if review["status"] == wanted:
        return review
    if review["status"] != "open":
        raise Conflict(f"review '{review_id}' is already {review['status']}", field="review_id")
    review = await repository.close_review(conn, review_id, wanted, reason, decided_by)
    conv = await repository.get_conversion(conn, tenant_id, review["conversion_id"], lock=True)
    assert conv is not None
    decided_at = review["decided_at"]
    note = {
        "status": wanted,
        "reason": reason,
        "decided_by": decided_by,
        "decided_at": decided_at.isoformat(),
    }
    await EVENTS.emit(
        conn,
        tenant_id=tenant_id,
        payload=out.ReviewDecided(
            review_id=review_id,
            conversion_id=conv["id"],
            program_id=review["program_id"],
            advocate_id=review["advocate_id"],
            decision="approve" if approve else "deny",
            reason=reason,
            decided_at=decided_at,
            decided_by=decided_by,
        ),
        key=review["advocate_id"],
        event_id=f"{review_id}:decided",
    )
    if approve:
        click = None
        if conv["evidence"] == "click" and conv["click_id"]:
            k = await repository.get_click(conn, conv["click_id"])
            click = _click(k) if k else None
        cand = domain.Candidate(
            conv["evidence"], review["program_id"], review["advocate_id"], click=click
        )
        await _attribute(conn, conv, cand, None, review_id=review_id, review=note)
    else:
        await repository.set_conversion_status(
            conn, conv["id"], "rejected", "deny", None, False, None, note
        )
        await EVENTS.emit(
            conn,
            tenant_id=tenant_id,
            payload=out.ConversionRejected(
                conversion_id=conv["id"],
                program_id=review["program_id"],
                advocate_id=review["advocate_id"],
                conversion_type=_type(conv),
                custom_type=conv["custom_type"],
                friend_customer_id=conv["customer_id"],
                order_id=conv["order_id"],
                reasons=[*review["reasons"], "review_denied"],
                occurred_at=conv["occurred_at"],
                review_id=review_id,
            ),
            key=review["advocate_id"],
            event_id=f"{conv['id']}:rejected",
        )
    return review


async def list_reviews(
    conn: asyncpg.Connection, tenant_id: str, status: str, limit: int, after: str | None
) -> list[asyncpg.Record]:
    return await repository.list_reviews(conn, tenant_id, status, limit, after)


async def get_review(conn: asyncpg.Connection, tenant_id: str, review_id: str) -> asyncpg.Record:
    review = await repository.get_review(conn, tenant_id, review_id)
    if review is None:
        raise NotFound(f"no review '{review_id}'", field="review_id")
    return review


# --- refunds and cancellations ---------------------------------------------------------------


async def refund(
    conn: asyncpg.Connection,
    tenant_id: str,
    conversion_id: str,
    cmd: RefundIn,
    idempotency_key: str | None,
    *,
    conv: asyncpg.Record | None = None,
) -> tuple[asyncpg.Record, bool]:
    """Record one refund (full when no amount is given: the rest). Idempotent on the merchant's
    refund id or the Idempotency-Key; published only for attributed conversions, which are the
    only ones a reward can hang on."""
    external = cmd.refund_id or (f"key:{idempotency_key}" if idempotency_key else None)
    if external is None:
        raise InvalidInput("send refund_id or an Idempotency-Key header", field="refund_id")
    conv = conv or await repository.get_conversion(conn, tenant_id, conversion_id, lock=True)
    if conv is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="conversion_id")
    digest = request_hash(cmd)
    existing = await repository.get_refund(conn, tenant_id, conv["id"], external)
    if existing is not None:
        if existing["request_hash"] != digest:
            raise Conflict(
                "this refund id was used with a different request body", field="refund_id"
            )
        return existing, False
    if conv["amount_minor"] is None or conv["currency"] is None:
        raise InvalidInput("this conversion has no amount to refund", field="conversion_id")
    currency = conv["currency"]
    if cmd.currency and money.validate_currency(cmd.currency) != currency:
        raise InvalidInput(f"the conversion was paid in {currency}", field="currency")
    remaining = conv["amount_minor"] - conv["refunded_minor"]
    if cmd.amount is not None:
        amount = money.to_minor(cmd.amount, currency)
    elif cmd.amount_minor is not None:
        amount = cmd.amount_minor
    else:
        amount = remaining
    if amount <= 0:
        raise InvalidInput("the conversion is already refunded in full", field="amount")
    if amount > remaining:
        raise InvalidInput(
            f"only {money.format_minor(remaining, currency)} {currency} is left to refund",
            field="amount",
        )
    total = conv["refunded_minor"] + amount
    row = await repository.insert_refund(
        conn,
        id=new_id("rfd"),
        tenant_id=tenant_id,
        conversion_id=conv["id"],
        external_id=external,
        amount_minor=amount,
        currency=currency,
        total_minor=total,
        full_refund=total == conv["amount_minor"],
        request_hash=digest,
        refunded_at=cmd.refunded_at or datetime.now(UTC),
    )
    await repository.add_refunded(conn, conv["id"], amount)
    if conv["status"] == "attributed":
        await EVENTS.emit(
            conn,
            tenant_id=tenant_id,
            payload=out.ConversionRefunded(
                conversion_id=conv["id"],
                refund_id=row["id"],
                program_id=conv["program_id"],
                advocate_id=conv["advocate_id"],
                friend_customer_id=conv["customer_id"],
                conversion_type=_type(conv),
                order_id=conv["order_id"],
                amount_minor=amount,
                currency=currency,
                refunded_total_minor=total,
                full=row["full_refund"],
                refunded_at=row["refunded_at"],
            ),
            key=conv["advocate_id"],
            event_id=f"{row['id']}:refunded",
        )
    return row, True


async def cancel_subscription(
    conn: asyncpg.Connection, tenant_id: str, subscription_id: str, cmd: CancellationIn
) -> tuple[asyncpg.Record, asyncpg.Record | None, bool]:
    """Record the end of a subscription (idempotent); published when a referred friend's
    subscription it is, so recurring rewards stop."""
    row = await repository.insert_cancellation(
        conn, tenant_id, subscription_id, cmd.customer_id, cmd.cancelled_at or datetime.now(UTC)
    )
    created = row is not None
    if row is None:
        row = await repository.get_cancellation(conn, tenant_id, subscription_id)
        assert row is not None
    latest = await repository.latest_subscription_conversion(conn, tenant_id, subscription_id)
    if created and latest is not None:
        await EVENTS.emit(
            conn,
            tenant_id=tenant_id,
            payload=out.SubscriptionCancelled(
                subscription_id=subscription_id,
                program_id=latest["program_id"],
                advocate_id=latest["advocate_id"],
                friend_customer_id=latest["customer_id"],
                cancelled_at=row["cancelled_at"],
                conversion_id=latest["id"],
            ),
            key=latest["advocate_id"],
            event_id=f"{tenant_id}:{subscription_id}:cancelled",
        )
    return row, latest, created


# --- program settings ----------------------------------------------------------------------


async def _own_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    program = await repository.get_program(conn, program_id)
    stored = await repository.get_settings(conn, program_id)
    owner = program["tenant_id"] if program else stored["tenant_id"] if stored else None
    if owner is not None and owner != tenant_id:
        raise NotFound(f"no program '{program_id}'", field="program_id")


async def get_settings(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> tuple[domain.ProgramSettings, datetime | None]:
    await _own_program(conn, tenant_id, program_id)
    row = await repository.get_settings(conn, program_id)
    if row is None:
        return domain.DEFAULT_SETTINGS, None
    return domain.ProgramSettings.model_validate(row["settings"]), row["updated_at"]


async def put_settings(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, settings: domain.ProgramSettings
) -> datetime:
    await _own_program(conn, tenant_id, program_id)
    row = await repository.put_settings(
        conn, program_id, tenant_id, settings.model_dump(mode="json")
    )
    updated: datetime = row["updated_at"]
    return updated


# --- event handlers: keep the local copies of link-service's facts -------------------------


async def on_program(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    await repository.upsert_program(
        conn,
        program_id=payload.program_id,
        tenant_id=event.tenantid,
        status=payload.status,
        name=payload.name,
        starts_at=payload.starts_at,
        ends_at=payload.ends_at,
        version=payload.version,
    )


async def on_advocate(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ev.AdvocateEnrolled | ev.AdvocateUpdated,
) -> None:
    await repository.upsert_advocate(
        conn,
        advocate_id=payload.advocate_id,
        tenant_id=event.tenantid,
        program_id=payload.program_id,
        customer_id=payload.customer_id,
        email=payload.email,
        email_norm=fraud.normalize_email(payload.email),
        blocked=payload.blocked,
        version=payload.version,
    )
    if payload.code:
        await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)


async def on_advocate_blocked(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.AdvocateBlocked | ev.AdvocateUnblocked
) -> None:
    blocked = isinstance(payload, ev.AdvocateBlocked)
    await repository.set_advocate_blocked(conn, payload.advocate_id, blocked, payload.version)


async def _code(
    conn: asyncpg.Connection,
    tenant_id: str,
    code: str,
    program_id: str,
    advocate_id: str,
    alias_of: str | None = None,
) -> None:
    key = code.upper()
    await repository.lock_evidence(conn, tenant_id, code_key=key)  # see submit_conversion
    await repository.upsert_code(
        conn,
        code_key=key,
        code=code,
        tenant_id=tenant_id,
        program_id=program_id,
        advocate_id=advocate_id,
        alias_of=alias_of,
    )
    await resolve_pending(conn, tenant_id, code_key=key)


async def on_code_created(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.CodeCreated
) -> None:
    await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)


async def on_code_changed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.CodeChanged
) -> None:
    # The previous code stays an alias of the same advocate (it keeps attributing); recorded
    # too in case its own code.created was never seen here.
    await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)
    await _code(
        conn,
        event.tenantid,
        payload.previous_code,
        payload.program_id,
        payload.advocate_id,
        alias_of=payload.code.upper(),
    )


async def on_link_clicked(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.LinkClicked
) -> None:
    await repository.lock_evidence(conn, event.tenantid, click_id=payload.click_id)
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
        device_class=payload.device_class,
        inactive_reason=payload.inactive_reason,
    )
    await resolve_pending(conn, event.tenantid, click_id=payload.click_id)
