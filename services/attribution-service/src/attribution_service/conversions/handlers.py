"""Use cases of conversions: accept one, decide it (conversions.decision), record what was
decided and publish it. The HTTP route, webhooks, the group commit (its reads and writes are
set-wise, see batch), the pending sweep and the review queue all record through `record`; every
function takes the caller's connection (the edge's transaction) and publishes through the
outbox."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from attribution_service.analytics import handlers as analytics
from attribution_service.analytics.domain import Purchase
from attribution_service.conversions import decision, domain, events, fraud, repository
from attribution_service.conversions.decision import Chosen, Decided, Referred
from attribution_service.conversions.domain import code_key
from attribution_service.conversions.events import conversion_refunded
from attribution_service.conversions.facts import Conversion, Evidence, RingRead, Screening
from attribution_service.conversions.schemas import ConversionIn
from attribution_service.metrics import FRAUD_DECISIONS
from attribution_service.programs import repository as programs
from attribution_service.programs.domain import BUILTIN_TYPES
from attribution_service.refunds import repository as refunds
from attribution_service.reviews import repository as reviews
from referral_events.outbox import OutboxRow, enqueue_rows
from referral_events.tracing import continued_from
from servicekit import audience, money
from servicekit.ids import new_id
from servicekit.keyedhash import KeyedHash
from servicekit.pagination import PageQuery
from servicekit.problems import Conflict, InvalidInput, NotFound


def request_hash(cmd: BaseModel) -> str:
    """SHA-256 of the request's canonical JSON: keys sorted, no spaces, non-ASCII escaped (the
    form stored hashes were made in). For ASCII without DEL, orjson writes byte for byte what
    `json.dumps(..., sort_keys=True, separators=(",", ":"))` writes (a unit test holds them
    equal) at a fraction of its cost; other documents take the stdlib's escaping."""
    data = cmd.model_dump(mode="json")
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    if not canonical.isascii() or b"\x7f" in canonical:  # the stdlib escapes DEL too
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class NewConversion:
    """A conversion request checked and shaped for the insert (everything that needs no I/O),
    and when it was received."""

    conversion: Conversion
    received_at: datetime

    @property
    def id(self) -> str:
        return self.conversion.id

    def too_old_for_lag(self, grace: timedelta) -> bool:
        """Whether evidence it names that is unknown now cannot be a late event any more."""
        return self.received_at - self.conversion.occurred_at > grace


# The dedupe key of a conversion that names neither an Idempotency-Key nor an order id: the
# customer's one conversion of that type (a retried signup is the same signup). HTTP header
# values cannot carry the unit separator, so no client key can take this form.
IMPLICIT_KEY = "\x1fonce:"


def dedupe_key(
    idempotency_key: str | None, type_: str, order_id: str | None, customer_id: str
) -> str | None:
    """Every conversion is deduplicated: by its Idempotency-Key, else by (type, order id) (the
    unique index), else by (type, customer) through an implicit key."""
    if idempotency_key is not None or order_id is not None:
        return idempotency_key
    return f"{IMPLICIT_KEY}{type_}:{customer_id}"


def prepare_conversion(
    tenant_id: str,
    cmd: ConversionIn,
    idempotency_key: str | None,
    *,
    hash_key: KeyedHash | str,
    now: datetime,
    source: str = "api",
) -> NewConversion:
    """Raises InvalidInput for an unknown currency, an amount it cannot hold, or an
    occurred_at further ahead of the server's clock than clock skew explains. `hash_key`: the
    settings' ip_hasher() (a bare key: no rotation)."""
    if cmd.occurred_at is not None and cmd.occurred_at > now + domain.CLOCK_SKEW:
        raise InvalidInput(
            f"occurred_at is in the future (more than {domain.CLOCK_SKEW.seconds // 60}"
            " minutes ahead of the server's clock)",
            field="/occurred_at",
        )
    hasher = hash_key if isinstance(hash_key, KeyedHash) else KeyedHash.of(hash_key)
    ip, device = str(cmd.ip) if cmd.ip else None, cmd.device_id
    prefix = fraud.network_prefix(ip)
    email_norm = fraud.normalize_email(cmd.email)
    currency = money.validate_currency(cmd.currency) if cmd.currency else None
    amount_minor = cmd.amount_minor
    if cmd.amount is not None and currency:
        amount_minor = money.to_minor(cmd.amount, currency)
    conv = Conversion(
        id=new_id("cnv"),
        tenant_id=tenant_id,
        type=cmd.type,
        # verified against the tenant's programs before the insert (check_custom_type)
        custom_type=None if cmd.type in BUILTIN_TYPES else cmd.type,
        customer_id=cmd.customer_id,
        email=cmd.email,
        email_norm=email_norm,
        order_id=cmd.order_id,
        amount_minor=amount_minor,
        currency=currency,
        occurred_at=cmd.occurred_at or now,
        click_id=cmd.click_id,
        code_key=code_key(cmd.code) if cmd.code else None,
        idempotency_key=dedupe_key(idempotency_key, cmd.type, cmd.order_id, cmd.customer_id),
        request_hash=request_hash(cmd),
        subscription_id=cmd.subscription_id,
        ip_hash=hasher(ip),
        device_hash=hasher(device),
        existing_customer=cmd.existing_customer,
        locale=cmd.locale,
        source=source,
        ip_hash_previous=hasher.under_previous(ip),
        device_hash_previous=hasher.under_previous(device),
        country=audience.country(cmd.country, "/country") if cmd.country else None,
        ip_prefix_hash=hasher(prefix),
        ua_network_hash=hasher(f"{cmd.user_agent}\x1f{prefix}")
        if cmd.user_agent and prefix
        else None,
        address_hash=hasher(fraud.normalize_address(cmd.shipping_address)),
        payment_hash=hasher(cmd.payment_fingerprint),
        email_stem_hash=hasher(fraud.email_stem(email_norm)),
        email_domain_hash=hasher(fraud.rare_domain(email_norm)),
        received_at=now,
    )
    return NewConversion(conv, now)


async def check_custom_type(conn: asyncpg.Connection, conv: Conversion) -> None:
    if conv.custom_type is not None and not await programs.tenant_names_type(
        conn, conv.tenant_id, conv.custom_type
    ):
        raise InvalidInput(
            f"'{conv.type}' is not signup, purchase, subscription_payment or a custom type"
            " one of your programs names",
            field="/type",
        )


async def submit_conversion(
    conn: asyncpg.Connection,
    tenant_id: str,
    cmd: ConversionIn,
    idempotency_key: str | None,
    *,
    grace: timedelta,
    hash_key: KeyedHash | str,
    now: datetime,
    source: str = "api",
) -> tuple[Mapping[str, Any], bool]:
    """Returns the conversion and whether this call created it. The same key with the same body
    returns the first result; with another body it is a conflict. The same (type, order id) is
    the same conversion."""
    new = prepare_conversion(
        tenant_id, cmd, idempotency_key, hash_key=hash_key, now=now, source=source
    )
    return await submit_prepared(conn, new, grace=grace)


async def submit_prepared(
    conn: asyncpg.Connection, new: NewConversion, *, grace: timedelta
) -> tuple[Mapping[str, Any], bool]:
    """submit_conversion after prepare_conversion (also the one-by-one path of a group commit,
    see batch)."""
    conv = new.conversion
    await check_custom_type(conn, conv)
    # The insert and the evidence read in one statement (one round trip on the hot path). A
    # refusal of the evidence takes the new row back out: a webhook catches the refusal and
    # records the order without that evidence in the same transaction.
    row, rec = await repository.insert_conversion(conn, conv)
    evidence = Evidence.of(rec)
    try:
        waits = decision.admit(conv, evidence, too_old_for_lag=new.too_old_for_lag(grace))
    except InvalidInput:
        if row is not None:
            await repository.delete_new_conversion(conn, conv.id)
        raise
    if row is None:
        return await existing_conversion(conn, conv), False
    if waits:
        return await wait_or_decide(conn, conv, row), True
    ahead = repository.read_ahead(rec, conv)
    ring = RingRead.of(rec)
    return await decide_conversion(conn, conv, evidence, ahead=ahead, ring=ring), True


async def existing_conversion(conn: asyncpg.Connection, conv: Conversion) -> asyncpg.Record:
    """The conversion a repeated request names (its key or its (type, order id)); Conflict when
    the key came with another body, or the order id with another amount."""
    if conv.idempotency_key:
        existing = await repository.conversion_by_key(conn, conv.tenant_id, conv.idempotency_key)
        if existing is not None:
            # The implicit key names the customer's conversion of that type whatever the body.
            implicit = conv.idempotency_key.startswith(IMPLICIT_KEY)
            if existing["request_hash"] != conv.request_hash and not implicit:
                raise Conflict(
                    "this Idempotency-Key was used with a different request body",
                    field="/Idempotency-Key",
                )
            return existing
    assert conv.order_id is not None  # only the key or (type, order id) can collide
    existing = await repository.conversion_by_order(conn, conv.tenant_id, conv.type, conv.order_id)
    assert existing is not None
    decision.repeat_of_order(conv, existing["amount_minor"], existing["currency"])
    return existing


async def wait_or_decide(
    conn: asyncpg.Connection, conv: Conversion, row: asyncpg.Record
) -> asyncpg.Record:
    """A new conversion naming evidence not seen yet. The consumer recording this click or code
    may have committed after our insert's snapshot was taken, and its resolve_pending cannot
    see our uncommitted row. Both sides take the evidence lock and read again after it, so
    whichever commits second sees the other's row and no conversion waits for evidence that
    already arrived."""
    await repository.lock_evidence(conn, [(conv.tenant_id, conv.click_id, conv.code_key)])
    evidence = await repository.evidence_context(conn, conv)
    if evidence.unseen(conv):
        return row  # waits for the click/code event; see pending.resolve_pending
    return await decide_conversion(conn, conv, evidence)


async def decide_conversion(
    conn: asyncpg.Connection,
    conv: Conversion,
    evidence: Evidence,
    *,
    ahead: Screening | None = None,
    ring: RingRead | None = None,
    note: str | None = None,
) -> asyncpg.Record:
    """Decide a stored conversion with the evidence known now (`ahead`, `ring`: screening
    facts and the ring rule's read taken with it, used where they answer what its candidate
    asks), record why, and publish."""
    chosen = decision.choose(conv, evidence)
    screening = await screening_for(conn, chosen, ahead)
    [screening] = await with_neighbours(conn, [chosen], [screening], [ring])
    decided = decision.decide(chosen, screening, note=note)
    row: asyncpg.Record = (await record(conn, [decided], stored=True))[0]
    return row


async def screening_for(
    conn: asyncpg.Connection, chosen: Chosen, ahead: Screening | None
) -> Screening | None:
    """The screening facts of the chosen candidate, but for the ring rule's (with_neighbours):
    those read ahead if they are its, else read now (None: no candidate)."""
    ask = chosen.ask()
    if ask is None:
        return None
    if ahead is not None and ahead.answers(ask):
        return ahead
    return await repository.screening_context(conn, ask)


async def with_neighbours(
    conn: asyncpg.Connection,
    chosen: Sequence[Chosen],
    screenings: Sequence[Screening | None],
    rings: Sequence[RingRead | None],
) -> list[Screening | None]:
    """Each screening with its conversion's neighbours for the ring rule (the single path's
    and the batch's): from the read taken ahead where it covers the window asked, the others
    read in one statement."""
    asks = [
        c.ring_ask() if s is not None else None for c, s in zip(chosen, screenings, strict=True)
    ]
    reads = list(rings)
    missing = [
        (i, ask)
        for i, (ask, read) in enumerate(zip(asks, reads, strict=True))
        if ask is not None and (read is None or not read.answers(ask))
    ]
    for (i, _), read in zip(
        missing, await repository.ring_reads(conn, [a for _, a in missing]), strict=True
    ):
        reads[i] = read
    return [
        replace(s, neighbours=read.neighbours(ask))
        if s is not None and ask is not None and read is not None
        else s
        for s, ask, read in zip(screenings, asks, reads, strict=True)
    ]


async def record(
    conn: asyncpg.Connection,
    decided: Sequence[Decided],
    *,
    stored: bool,
    traces: Sequence[Mapping[str, str]] | None = None,
) -> list[Mapping[str, Any]]:
    """Write decisions, each table in one statement for all of them, and publish their events
    (each built in its request's trace context, `traces`). `stored`: the conversions are rows
    already (pending, or waiting for review) and are updated; else they are inserted as decided
    (raises Raced when another transaction took a key or (type, order id) meanwhile). Returns
    the conversions as stored, in order."""
    links = [link for d in decided if (link := d.click_link()) is not None]
    if links:
        await repository.link_customer_clicks(conn, links)
    new_refs = [(i, ref) for i, d in enumerate(decided) if (ref := d.referral()) is not None]
    written = await repository.upsert_referrals(conn, [r for _, r in new_refs]) if new_refs else []
    referred: dict[int, Referred] = {i: w for (i, _), w in zip(new_refs, written, strict=True)}
    rows: Sequence[Mapping[str, Any]]
    if stored:
        rows = [
            await repository.update_decided(conn, d.conversion, d.row(referred.get(i)))
            for i, d in enumerate(decided)
        ]
    else:
        inserted = await repository.insert_decided(
            conn,
            [d.conversion for d in decided],
            [d.row(referred.get(i)) for i, d in enumerate(decided)],
        )
        if inserted is None:
            raise Raced
        rows = inserted
    new_reviews = [review for d in decided if (review := d.review()) is not None]
    if new_reviews:
        await reviews.insert_reviews(conn, new_reviews)
    entries: list[OutboxRow] = []
    for i, (d, row) in enumerate(zip(decided, rows, strict=True)):
        if d.screened:
            assert d.verdict is not None
            FRAUD_DECISIONS.labels(d.verdict).inc()
        with continued_from(traces[i]) if traces else nullcontext():
            entries.extend(
                d.events(
                    referred.get(i),
                    sequence=row["sequence"],
                    is_first_purchase=row["is_first_purchase"],
                )
            )
            if stored and row["status"] == "attributed" and row["refunded_minor"]:
                # Refunded while it waited: those refunds were not published (no reward hung
                # on it yet); published now, after the attribution, so rewards follow the net.
                entries.extend(
                    conversion_refunded(row, r) for r in await refunds.list_refunds(conn, row["id"])
                )
    entries.extend(await _advocate_risk(conn, decided))
    await enqueue_rows(conn, entries)
    # Growth analytics sees every purchase, referred or not (a non-referred one publishes no
    # event), once: when its decision is final (not waiting, not in review).
    await analytics.record_purchases(
        conn,
        [
            Purchase(c.tenant_id, c.customer_id, c.currency, c.amount_minor, c.occurred_at,
                     d.candidate.program_id if d.status == "attributed" and d.candidate else None)
            for d in decided
            if d.status not in ("pending", "review")
            and (c := d.conversion).amount_minor is not None and c.currency is not None
        ],
    )  # fmt: skip
    return list(rows)


@dataclass
class _Risk:
    tenant_id: str
    program_id: str
    denied: int = 0
    flagged: int = 0
    max_score: int = 0
    after_denied: int | None = None


async def _advocate_risk(conn: asyncpg.Connection, decided: Sequence[Decided]) -> list[OutboxRow]:
    """Fold the decisions into their advocates' risk (denied and flagged referrals, the
    riskiest score; one statement for all, only when something was denied or flagged), and
    block the advocates whose denied referrals reached their program's auto_block setting:
    advocate.auto_blocked.v1 for each."""
    per: dict[str, _Risk] = {}
    for d in decided:
        cand = d.candidate
        denied = fraud.counts_against_advocate(d.status, d.reasons)
        if cand is None or not (denied or d.status == "review"):
            continue
        r = per.setdefault(cand.advocate_id, _Risk(d.conversion.tenant_id, cand.program_id))
        r.denied += denied
        r.flagged += d.status == "review"
        r.max_score = max(r.max_score, d.risk_score)
        r.after_denied = d.auto_block_after
    if not per:
        return []
    folded = await repository.fold_advocate_risk(
        conn,
        [(a, r.tenant_id, r.denied, r.flagged, r.max_score) for a, r in per.items()],
    )
    due = {
        rec["advocate_id"]: rec
        for rec in folded
        if rec["blocked_at"] is None
        and (after := per[rec["advocate_id"]].after_denied) is not None
        and rec["denied"] >= after
    }
    if not due:
        return []
    now = datetime.now(UTC)
    return [
        events.advocate_auto_blocked(
            per[a].tenant_id,
            a,
            per[a].program_id,
            denied=due[a]["denied"],
            after_denied=per[a].after_denied or 0,
            risk_score=fraud.advocate_score(
                denied=due[a]["denied"], flagged=due[a]["flagged"], max_score=due[a]["max_score"]
            ),
            blocked_at=now,
        )
        for a in await repository.auto_block(conn, list(due))
    ]


class Raced(Exception):
    """Another transaction took an idempotency key or (type, order id) after it was read that
    none was: the batch is rolled back and run one by one."""


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    row = await repository.get_conversion(conn, tenant_id, conversion_id)
    if row is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="/conversion_id")
    return row, await refunds.list_refunds(conn, conversion_id)


# ---------------------------------------------------------------------------- lists and lookups


async def own_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    """404 for a program this service has not seen for the tenant."""
    program = await programs.get_program(conn, program_id)
    if program is None or program["tenant_id"] != tenant_id:
        raise NotFound(f"no program '{program_id}'", field="/program_id")


async def conversion_page(
    conn: asyncpg.Connection, tenant_id: str, f: repository.ConversionFilter, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.conversion_page(conn, tenant_id, f, page)


async def referral_page(
    conn: asyncpg.Connection, tenant_id: str, f: repository.ReferralFilter, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.referral_page(conn, tenant_id, f, page)


async def refund_page(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    if await repository.get_conversion(conn, tenant_id, conversion_id) is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="/conversion_id")
    return await refunds.refund_page(conn, conversion_id, page)


@dataclass(frozen=True)
class CustomerView:
    referral: asyncpg.Record | None
    advocate_ids: list[str]
    conversions: list[asyncpg.Record]


async def customer_view(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, customer_id: str, first: PageQuery
) -> CustomerView:
    """What this service knows of one customer in one program: who referred them, whether they
    are an advocate, and the first page of their conversions."""
    await own_program(conn, tenant_id, program_id)
    f = repository.ConversionFilter(program_id=program_id, customer_id=customer_id)
    return CustomerView(
        await repository.customer_referral(conn, tenant_id, program_id, customer_id),
        await repository.customer_advocacies(conn, tenant_id, program_id, customer_id),
        await repository.conversion_page(conn, tenant_id, f, first),
    )
