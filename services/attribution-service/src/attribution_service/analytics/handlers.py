"""Analytics use cases: the folds of consumed events into the read models (each on the inbox's
connection, so a redelivered event folds nothing twice), and the queries the routes answer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from attribution_service.analytics import domain, repository
from attribution_service.analytics.domain import DEFAULT_TIME_ZONE, KFactor, Range
from attribution_service.analytics.folds import Folds
from attribution_service.analytics.schemas import (
    AdvocateFiguresOut,
    Bucket,
    ChannelFigures,
    ClvOut,
    Cohort,
    CohortsOut,
    CohortValueOut,
    CostFigures,
    CurrencyValue,
    CustomerValueOut,
    ExactGroupsOut,
    ExactValueOut,
    Figures,
    FunnelOut,
    LeaderboardEntry,
    LeaderboardOut,
    Rates,
    RevenueFigures,
    ViralBucket,
    ViralOut,
)
from referral_events import CloudEvent, topics
from referral_events.contracts import attribution as at
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw
from referral_events.registry import payload_type
from servicekit.problems import NotFound

# The counters and sets the folds keep (analytics_counters.metric, analytics_members.kind).
ENROLLED, CLICKS, BOT_CLICKS, SIGNUPS = "enrolled", "clicks", "bot_clicks", "signups"
FIRST_PURCHASES, PURCHASES, REVENUE, REFUNDED = (
    "first_purchases",
    "purchases",
    "revenue",
    "refunded",
)
ISSUED, VOIDED, CLAWED_BACK, REFERRALS = "issued", "voided", "clawed_back", "referrals"
EARNED = "earned"
VISITOR, SHARER = "visitor", "sharer"

# --- folds of link.events and link.clicks ----------------------------------------------------
# Each fold adds what one event changes to `f` (folds.Folds); the caller writes a whole run's
# changes at once (repository.apply_folds).


def fold_program(
    f: Folds, event: CloudEvent, payload: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    f.program(event.tenantid, payload.program_id)


def fold_advocate_enrolled(f: Folds, event: CloudEvent, payload: ev.AdvocateEnrolled) -> None:
    t, p = event.tenantid, payload.program_id
    f.advocate(
        t,
        p,
        payload.advocate_id,
        display_name=domain.masked_name(payload.name, payload.advocate_id),
        enrolled_at=event.time,
    )
    f.add(t, p, domain.day_of(event.time), ENROLLED, 1)


def fold_advocate_updated(f: Folds, event: CloudEvent, payload: ev.AdvocateUpdated) -> None:
    f.advocate(
        event.tenantid,
        payload.program_id,
        payload.advocate_id,
        display_name=domain.masked_name(payload.name, payload.advocate_id),
    )


def fold_link_clicked(f: Folds, event: CloudEvent, payload: ev.LinkClicked) -> None:
    t, p = event.tenantid, payload.program_id
    day, channel = domain.day_of(payload.clicked_at), payload.channel or ""
    if payload.is_bot:
        f.add(t, p, day, BOT_CLICKS, 1, channel=channel)
        return
    f.add(t, p, day, CLICKS, 1, channel=channel)
    f.add_for_advocate(p, payload.advocate_id, day, CLICKS, 1)
    # A visitor is their IP hash; without one, each click is its own visitor.
    visitor = payload.ip_hash or f"click:{payload.click_id}"
    f.add_member(p, VISITOR, day, channel, visitor)
    f.add_member(p, SHARER, day, channel, payload.advocate_id)


# --- folds of attribution.events -------------------------------------------------------------


def fold_referral_attributed(f: Folds, event: CloudEvent, payload: at.ReferralAttributed) -> None:
    p = payload.program_id
    f.referral(
        p, payload.friend_customer_id, payload.advocate_id, referred_at=payload.attributed_at
    )
    f.advocate(event.tenantid, p, payload.advocate_id, first_referral_at=payload.attributed_at)
    day = domain.day_of(payload.attributed_at)
    f.add(event.tenantid, p, day, REFERRALS, 1)
    f.add_for_advocate(p, payload.advocate_id, day, REFERRALS, 1)
    f.score(p, "referrals", domain.period_keys(payload.attributed_at), payload.advocate_id, 1)


def fold_conversion_attributed(
    f: Folds, event: CloudEvent, payload: at.ConversionAttributed
) -> None:
    t, p, day = event.tenantid, payload.program_id, domain.day_of(payload.occurred_at)
    adv = payload.advocate_id
    if payload.conversion_type == "signup":
        f.add(t, p, day, SIGNUPS, 1)
        f.add_for_advocate(p, adv, day, SIGNUPS, 1)
    if payload.amount_minor is not None and payload.currency:
        cur, amount = payload.currency, payload.amount_minor
        f.add(t, p, day, PURCHASES, 1, unit=cur)
        f.add(t, p, day, REVENUE, amount, unit=cur)
        f.add_for_advocate(p, adv, day, REVENUE, amount, unit=cur)
    if payload.is_first_purchase:
        f.add(t, p, day, FIRST_PURCHASES, 1)
        f.add_for_advocate(p, adv, day, FIRST_PURCHASES, 1)
        f.referral(
            p,
            payload.friend_customer_id,
            payload.advocate_id,
            first_purchase_at=payload.occurred_at,
        )


def fold_conversion_refunded(f: Folds, event: CloudEvent, payload: at.ConversionRefunded) -> None:
    day = domain.day_of(payload.refunded_at)
    f.add(
        event.tenantid,
        payload.program_id,
        day,
        REFUNDED,
        payload.amount_minor,
        unit=payload.currency,
    )


# --- folds of reward.events ------------------------------------------------------------------


async def fold_reward_issued(
    conn: asyncpg.Connection,
    f: Folds,
    event: CloudEvent,
    payload: rw.RewardPending | rw.RewardAvailable,
) -> None:
    """reward.pending, or reward.available of a reward that was never pending: the reward's cost
    is issued once, on the earliest day seen, at the largest amount seen."""
    t, p, unit = event.tenantid, payload.program_id, payload.unit
    old_day, old, day, new = await repository.issue_reward(
        conn, payload.reward_id, p, unit, domain.day_of(event.time), payload.amount
    )
    if old_day is not None and (old_day, old) != (day, new):
        f.add(t, p, old_day, ISSUED, -old, unit=unit)
    if (old_day, old) != (day, new):
        f.add(t, p, day, ISSUED, new, unit=unit)
    if isinstance(payload, rw.RewardAvailable) and payload.role == "advocate":
        _earned(f, payload, event.time, payload.amount)


def fold_reward_voided(f: Folds, event: CloudEvent, payload: rw.RewardVoided) -> None:
    day = domain.day_of(payload.voided_at or event.time)
    f.add(event.tenantid, payload.program_id, day, VOIDED, payload.amount, unit=payload.unit)


def fold_reward_clawed_back(f: Folds, event: CloudEvent, payload: rw.RewardClawedBack) -> None:
    at_ = payload.clawed_back_at or event.time
    f.add(
        event.tenantid,
        payload.program_id,
        domain.day_of(at_),
        CLAWED_BACK,
        payload.amount,
        unit=payload.unit,
    )
    if payload.role == "advocate":
        _earned(f, payload, at_, -payload.amount)


def _earned(
    f: Folds,
    payload: rw.RewardAvailable | rw.RewardClawedBack,
    when: datetime,
    delta: int,
) -> None:
    day = domain.day_of(when)
    f.add_for_advocate(
        payload.program_id, payload.advocate_id, day, EARNED, delta, unit=payload.unit
    )
    f.score(
        payload.program_id,
        domain.metric_key("earned", payload.unit),
        domain.period_keys(when),
        payload.advocate_id,
        delta,
    )


# --- the consumers' handlers: one event, or a run of clicks, folded and written ----------------

Fold = Callable[[Folds, CloudEvent, Any], None]


def _one(fold: Fold) -> Callable[[asyncpg.Connection, CloudEvent, Any], Awaitable[None]]:
    async def handle(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        f = Folds()
        fold(f, event, payload)
        await repository.apply_folds(conn, f)

    return handle


on_program = _one(fold_program)
on_advocate_enrolled = _one(fold_advocate_enrolled)
on_advocate_updated = _one(fold_advocate_updated)


async def on_rewards(conn: asyncpg.Connection, run: Sequence[tuple[CloudEvent, Any]]) -> None:
    """A consumed run of reward.events (inbox.Batched), folded in order and written with one
    statement per read model: rows in key order once per run, where a transaction per event
    took the shared counter rows once per reward."""
    f = Folds()
    for event, payload in run:
        if isinstance(payload, rw.RewardPending | rw.RewardAvailable):
            await fold_reward_issued(conn, f, event, payload)
        elif isinstance(payload, rw.RewardVoided):
            fold_reward_voided(f, event, payload)
        elif isinstance(payload, rw.RewardClawedBack):
            fold_reward_clawed_back(f, event, payload)
    await repository.apply_folds(conn, f)


async def on_clicks(
    conn: asyncpg.Connection, clicks: Sequence[tuple[CloudEvent, ev.LinkClicked]]
) -> None:
    """A consumed run of clicks (inbox.Batched), folded with one statement per read model."""
    f = Folds()
    for event, payload in clicks:
        fold_link_clicked(f, event, payload)
    await repository.apply_folds(conn, f)


# --- this service's own events, folded from its outbox -----------------------------------------

# attribution.events this service publishes and analytics folds. This service does not consume
# its own topic: the worker reads them from the outbox, in commit order, moving a cursor in the
# transaction that folds them (repository.take_outboxed), so each is folded once and the
# conversions' transactions never wait for the shared counter rows, nor write anything more.
OWN_EVENTS: dict[str, Fold] = {
    at.ReferralAttributed.TYPE: fold_referral_attributed,
    at.ConversionAttributed.TYPE: fold_conversion_attributed,
    at.ConversionRefunded.TYPE: fold_conversion_refunded,
}
OWN_TOPIC = topics.ATTRIBUTION_EVENTS


async def fold_events(conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> None:
    """Folds events this service emitted (OWN_EVENTS; others are ignored), with the payloads a
    consumer would parse from them, written together."""
    f = Folds()
    for event in events:
        fold = OWN_EVENTS.get(event.type)
        if fold is not None:
            fold(f, event, payload_type(event.type).model_validate(event.data))
    await repository.apply_folds(conn, f)


async def fold_outboxed(conn: asyncpg.Connection, limit: int = 500) -> int:
    """Folds up to `limit` outbox rows past the cursor (and what still waits from before the
    folds read the outbox) in the caller's transaction; how many rows were read."""
    legacy = await repository.take_emitted(conn, limit)
    payloads = await repository.take_outboxed(conn, OWN_TOPIC, limit)
    events = [CloudEvent.from_json(p) for p in legacy]
    events += [CloudEvent.from_json(p) for p in payloads]
    await fold_events(conn, events)
    return len(legacy) + len(payloads)


# --- every purchase, referred or not (called where conversions are decided) -------------------


async def record_purchases(conn: asyncpg.Connection, purchases: list[domain.Purchase]) -> None:
    """Folds decided purchases into the customers' read model, in the deciding transaction (a
    non-referred purchase publishes no event). Each decided conversion comes here once."""
    if not purchases:
        return
    customers: dict[tuple[str, str], tuple[str | None, datetime, datetime]] = {}
    days: dict[tuple[str, str, str, date], tuple[int, int]] = {}
    for p in purchases:
        key = (p.tenant_id, p.customer_id)
        prog, first, last = customers.get(key, (p.program_id, p.occurred_at, p.occurred_at))
        progs = [x for x in (prog, p.program_id) if x is not None]
        customers[key] = (
            min(progs) if progs else None,
            min(first, p.occurred_at),
            max(last, p.occurred_at),
        )
        dkey = (p.tenant_id, p.customer_id, p.currency, domain.day_of(p.occurred_at))
        n, revenue = days.get(dkey, (0, 0))
        days[dkey] = (n + 1, revenue + p.amount_minor)
    await repository.record_purchases(
        conn,
        [(*k, *v) for k, v in customers.items()],
        [(*k, *v) for k, v in days.items()],
    )


# --- queries ---------------------------------------------------------------------------------


async def own_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> str:
    """The program's time zone; 404 for an unknown program or another tenant's."""
    if await repository.program_tenant(conn, program_id) != tenant_id:
        raise NotFound(f"no program '{program_id}'", field="/program_id")
    return DEFAULT_TIME_ZONE


def today() -> date:
    return datetime.now(UTC).date()


Sums = dict[tuple[str, str], int]


def _figures(sums: Sums, distinct: dict[str, int], by_channel: bool) -> Figures:
    def one(metric: str) -> int:
        return sums.get((metric, ""), 0)

    def units(*metrics: str) -> list[str]:
        return sorted({u for (m, u) in sums if m in metrics})

    enrolled, shared = one(ENROLLED), distinct.get(SHARER, 0)
    visitors, signups, first = distinct.get(VISITOR, 0), one(SIGNUPS), one(FIRST_PURCHASES)
    revenue = [
        RevenueFigures.of(
            currency=c,
            purchases=sums.get((PURCHASES, c), 0),
            gross_minor=sums.get((REVENUE, c), 0),
            refunded_minor=sums.get((REFUNDED, c), 0),
        )
        for c in units(REVENUE, REFUNDED)
    ]
    cost = [
        CostFigures.of(
            unit=u,
            issued=sums.get((ISSUED, u), 0),
            voided=sums.get((VOIDED, u), 0),
            clawed_back=sums.get((CLAWED_BACK, u), 0),
            acquired=first,
            net_revenue={r.currency: r.net_minor for r in revenue},
        )
        for u in units(ISSUED, VOIDED, CLAWED_BACK)
    ]
    # Facts without a channel (enrollment, conversions, rewards) have no per-channel figure.
    program_wide = None if by_channel else True
    return Figures(
        advocates_enrolled=enrolled if program_wide else None,
        advocates_shared=shared,
        clicks=one(CLICKS),
        bot_clicks=one(BOT_CLICKS),
        unique_visitors=visitors,
        signups=signups if program_wide else None,
        first_purchases=first if program_wide else None,
        rates=Rates(
            shared=domain.rate(shared, enrolled) if program_wide else None,
            visitor_to_signup=domain.rate(signups, visitors) if program_wide else None,
            signup_to_first_purchase=domain.rate(first, signups) if program_wide else None,
            visitor_to_first_purchase=domain.rate(first, visitors) if program_wide else None,
        ),
        revenue=revenue if program_wide else [],
        reward_cost=cost if program_wide else [],
    )


async def funnel(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, r: Range, channel: str | None
) -> FunnelOut:
    tz = await own_program(conn, tenant_id, program_id)
    sums: dict[date | None, Sums] = defaultdict(dict)
    for row in await repository.counters(
        conn, tenant_id, program_id, r.start, r.end, r.interval, channel
    ):
        sums[row["bucket"]][(row["metric"], row["unit"])] = row["value"]
    distinct: dict[date | None, dict[str, int]] = defaultdict(dict)
    for row in await repository.members(conn, program_id, r.start, r.end, r.interval, channel):
        distinct[row["bucket"]][row["kind"]] = row["value"]
    per_channel: dict[str, dict[str, int]] = defaultdict(dict)
    if channel is None:
        for row in await repository.channels(conn, tenant_id, program_id, r.start, r.end):
            per_channel[row["channel"]][row["metric"]] = row["value"]
    by_channel = channel is not None
    return FunnelOut(
        program_id=program_id,
        start=r.start,
        end=r.end,
        interval=r.interval,
        channel=channel,
        time_zone=tz,
        totals=_figures(sums[None], distinct[None], by_channel),
        buckets=[
            Bucket(start=s, end=e, figures=_figures(sums[b], distinct[b], by_channel))
            for s, e in r.buckets()
            for b in [domain.bucket_start(s, r.interval)]
        ],
        channels=[
            ChannelFigures(
                channel=c,
                clicks=f.get(CLICKS, 0),
                bot_clicks=f.get(BOT_CLICKS, 0),
                unique_visitors=f.get(VISITOR, 0),
                advocates_shared=f.get(SHARER, 0),
            )
            for c, f in sorted(per_channel.items())
        ],
    )


async def viral(conn: asyncpg.Connection, tenant_id: str, program_id: str, r: Range) -> ViralOut:
    tz = await own_program(conn, tenant_id, program_id)
    sums: dict[date | None, Sums] = defaultdict(dict)
    for row in await repository.counters(
        conn, tenant_id, program_id, r.start, r.end, r.interval, None
    ):
        sums[row["bucket"]][(row["metric"], row["unit"])] = row["value"]
    visitors: dict[date | None, int] = {
        row["bucket"]: row["value"]
        for row in await repository.members(conn, program_id, r.start, r.end, r.interval, None)
        if row["kind"] == VISITOR
    }
    cycles = {
        row["bucket"]: row["median_seconds"]
        for row in await repository.cycle_times(conn, program_id, r.start, r.end, r.interval, tz)
    }

    def one(b: date | None, s: date | None, e: date | None) -> ViralBucket:
        adv = sums[b].get((ENROLLED, ""), 0)
        first = sums[b].get((FIRST_PURCHASES, ""), 0)
        return ViralBucket(
            start=s,
            end=e,
            advocates_enrolled=adv,
            invites=visitors.get(b, 0),
            referred_first_purchases=first,
            **KFactor.of(adv, visitors.get(b, 0), first).__dict__,
            cycle_time_median_seconds=cycles.get(b),
        )

    return ViralOut(
        program_id=program_id,
        time_zone=tz,
        totals=one(None, None, None),
        buckets=[one(domain.bucket_start(s, r.interval), s, e) for s, e in r.buckets()],
    )


async def cohorts(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, r: Range
) -> CohortsOut:
    tz = await own_program(conn, tenant_id, program_id)
    return CohortsOut(
        program_id=program_id,
        time_zone=tz,
        cohorts=[
            Cohort(
                week=row["week"],
                advocates=row["advocates"],
                referred_within_7_days=row["within_7"],
                referred_within_30_days=row["within_30"],
                referred_within_90_days=row["within_90"],
            )
            for row in await repository.cohorts(conn, program_id, r.start, r.end, tz)
        ],
    )


async def customer_value(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, r: Range
) -> ClvOut:
    tz = await own_program(conn, tenant_id, program_id)
    window = (r.end - r.start).days + 1
    # per currency: the others, and the referred by cohort (None: enrollment not known yet)
    others: dict[str, domain.CustomerTotals] = defaultdict(domain.CustomerTotals)
    cohorts: dict[str, dict[date | None, domain.CustomerTotals]] = defaultdict(dict)
    for row in await repository.customer_groups(conn, tenant_id, program_id, r.start, r.end, tz):
        totals = domain.CustomerTotals(
            row["customers"], row["purchases"], row["revenue_minor"], row["lifespan_seconds"]
        )
        if row["referred"]:
            cohorts[row["currency"]][row["cohort"]] = totals
        else:
            others[row["currency"]] = totals
    sums: Sums = {}
    for row in await repository.counters(
        conn, tenant_id, program_id, r.start, r.end, r.interval, None
    ):
        if row["bucket"] is None:
            sums[(row["metric"], row["unit"])] = row["value"]
    acquired = sums.get((FIRST_PURCHASES, ""), 0)

    def exact(t: domain.CustomerTotals) -> ExactValueOut:
        return ExactValueOut.model_validate(domain.ExactCustomerValue.of(t, window).__dict__)

    out = []
    for currency in sorted(others.keys() | cohorts.keys()):
        weeks = cohorts.get(currency, {})
        referred_totals = sum(weeks.values(), domain.CustomerTotals())
        referred = domain.CustomerValue.of_totals(referred_totals, window)
        net = sums.get((ISSUED, currency), 0) - sums.get((VOIDED, currency), 0)
        net -= sums.get((CLAWED_BACK, currency), 0)
        cpa = domain.per_customer(net, acquired)
        out.append(
            CurrencyValue(
                currency=currency,
                referred=CustomerValueOut.model_validate(referred.__dict__),
                others=CustomerValueOut.model_validate(
                    domain.CustomerValue.of_totals(others[currency], window).__dict__
                ),
                exact=ExactGroupsOut(
                    referred=exact(referred_totals), others=exact(others[currency])
                ),
                cohorts=[
                    CohortValueOut(week=week, referred=exact(t))
                    for week, t in sorted(weeks.items(), key=lambda w: (w[0] is None, w[0]))
                ],
                cost_per_acquired_customer=cpa,
                payback_days=domain.payback_days(cpa, referred, window),
            )
        )
    return ClvOut(
        program_id=program_id, start=r.start, end=r.end, window_days=window, time_zone=tz,
        currencies=out,
    )  # fmt: skip


async def advocate_figures(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, advocate_id: str, r: Range
) -> AdvocateFiguresOut:
    await own_program(conn, tenant_id, program_id)
    me = await repository.advocate(conn, program_id, advocate_id)
    sums: Sums = {
        (row["metric"], row["unit"]): row["value"]
        for row in await repository.advocate_figures(conn, program_id, advocate_id, r.start, r.end)
    }
    if me is None and not sums:
        raise NotFound(f"no advocate '{advocate_id}' in this program", field="/advocate_id")
    return AdvocateFiguresOut(
        advocate_id=advocate_id,
        display_name=(me and me["display_name"]) or domain.masked_name(None, advocate_id),
        start=r.start,
        end=r.end,
        clicks=sums.get((CLICKS, ""), 0),
        referrals=sums.get((REFERRALS, ""), 0),
        signups=sums.get((SIGNUPS, ""), 0),
        first_purchases=sums.get((FIRST_PURCHASES, ""), 0),
        revenue_minor={u: v for (m, u), v in sorted(sums.items()) if m == REVENUE},
        earned={u: v for (m, u), v in sorted(sums.items()) if m == EARNED},
    )


async def leaderboard(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    metric: domain.Metric,
    unit: str | None,
    period: domain.Period,
    limit: int,
) -> LeaderboardOut:
    await own_program(conn, tenant_id, program_id)
    key, period_key = domain.metric_key(metric, unit), domain.period_key(period, datetime.now(UTC))
    rows = await repository.top(conn, program_id, key, period_key, limit)
    return LeaderboardOut(
        program_id=program_id,
        metric=metric,
        unit=unit if metric == "earned" else None,
        period=period_key,
        entries=[
            LeaderboardEntry(
                rank=i + 1,
                advocate_id=row["advocate_id"],
                display_name=row["display_name"] or domain.masked_name(None, row["advocate_id"]),
                score=row["score"],
            )
            for i, row in enumerate(rows)
        ],
    )


async def advocate_rank(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    metric: domain.Metric,
    unit: str | None,
    period: domain.Period,
) -> LeaderboardEntry:
    await own_program(conn, tenant_id, program_id)
    key, period_key = domain.metric_key(metric, unit), domain.period_key(period, datetime.now(UTC))
    row = await repository.rank(
        conn, program_id, key, period_key, advocate_id, domain.tie_block(advocate_id)
    )
    if row is None:
        raise NotFound(
            f"no score for advocate '{advocate_id}' in {period_key}", field="/advocate_id"
        )
    return LeaderboardEntry(
        rank=row["rank"],
        advocate_id=advocate_id,
        display_name=row["display_name"] or domain.masked_name(None, advocate_id),
        score=row["score"],
    )
