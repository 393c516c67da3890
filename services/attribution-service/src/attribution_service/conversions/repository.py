"""Conversions' SQL: reading what a decision needs (one conversion, or set-wise for a group
commit) and writing what it decided (each table one statement, for one or many conversions).
Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from attribution_service.conversions import fraud
from attribution_service.conversions.decision import (
    CustomerClick,
    DecisionRow,
    NewReferral,
    Referred,
)
from attribution_service.conversions.domain import Click
from attribution_service.conversions.facts import (
    CONVERSION_COLUMNS,
    Conversion,
    Evidence,
    RingAsk,
    RingRead,
    Screening,
    ScreeningAsk,
    click_of,
)
from attribution_service.programs.domain import DEFAULT_SETTINGS, LONGEST_NETWORK_WINDOW_HOURS
from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page
from servicekit.sql import Params, columns_of

_TYPES = {
    "amount_minor": "bigint",
    "occurred_at": "timestamptz",
    "existing_customer": "boolean",
    "anchor": "timestamptz",
    "network_window": "interval",
    "received_at": "timestamptz",
}
LONGEST_NETWORK_WINDOW = timedelta(hours=LONGEST_NETWORK_WINDOW_HOURS)

# --- the evidence lock -------------------------------------------------------------------


async def lock_evidence(
    conn: asyncpg.Connection, pieces: Sequence[tuple[str, str | None, str | None]]
) -> None:
    """Transaction-scoped advisory locks on pieces of evidence, (tenant, click id, code key) at
    a time, all taken in one fixed order so two transactions locking several cannot
    deadlock."""
    keys = sorted(
        {
            f"{kind}:{tenant_id}:{value}"
            for tenant_id, click_id, code_key in pieces
            for kind, value in (("click", click_id), ("code", code_key))
            if value is not None
        }
    )
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
        keys,
    )


async def mark_expired_evidence(
    conn: asyncpg.Connection, tenant_id: str, kind: str, value: str
) -> None:
    await conn.execute(
        "INSERT INTO expired_evidence (tenant_id, kind, value) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        tenant_id,
        kind,
        value,
    )


# --- what a decision reads -------------------------------------------------------------------

# The evidence context as select-list columns, named by the conversion's columns (formatted into
# parameters or a row's columns by each statement that reads it).
_EVIDENCE_COLUMNS = """
  (SELECT tenant_id FROM codes WHERE code_key = {code_key}) AS code_tenant,
  (SELECT tenant_id FROM clicks WHERE id = {click_id}) AS click_tenant,
  (SELECT array_agg(kind || ':' || tenant_id) FROM expired_evidence
    WHERE (kind = 'code' AND value = {code_key}) OR (kind = 'click' AND value = {click_id}))
    AS expired,
  (SELECT to_jsonb(c) FROM codes c WHERE c.code_key = {code_key} AND c.tenant_id = {tenant_id})
    AS code,
  (SELECT coalesce(jsonb_agg(to_jsonb(k)), '[]'::jsonb) FROM clicks k
    WHERE {click_id}::text IS NOT NULL AND k.tenant_id = {tenant_id} AND k.id IN (
        SELECT click_id FROM customer_clicks
        WHERE tenant_id = {tenant_id} AND customer_id = {customer_id}
        UNION ALL SELECT {click_id})) AS clicks,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', r.id, 'program_id', r.program_id, 'advocate_id', r.advocate_id,
        'created_at', r.created_at,
        'prior', (SELECT count(*) FROM conversions x WHERE x.referral_id = r.id
                  AND x.type = {type} AND x.status = 'attributed' AND x.id <> {id}))),
        '[]'::jsonb)
     FROM referrals r WHERE r.tenant_id = {tenant_id} AND r.friend_customer_id = {customer_id})
    AS referrals,
  (SELECT coalesce(jsonb_object_agg(program_id, settings), '{{}}'::jsonb)::text
     FROM program_settings WHERE tenant_id = {tenant_id}) AS settings
"""

# The screening facts as select-list columns, named by ScreeningAsk's fields: the candidate
# (program_id, advocate_id), the conversion's (tenant_id, customer_id, id, occurred_at, ip_hash,
# device_hash), and anchor +- network_window (the advocate's sightings around the click or the
# conversion).
_SCREENING_COLUMNS = """
  (SELECT to_jsonb(p) FROM programs p WHERE p.id = {program_id}) AS program,
  (SELECT to_jsonb(a) FROM advocates a WHERE a.id = {advocate_id}) AS advocate,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'seen_at', s.seen_at, 'ip_hash', s.ip_hash, 'device_hash', s.device_hash)),
        '[]'::jsonb)
     FROM (SELECT s.occurred_at AS seen_at, s.ip_hash, s.device_hash FROM conversions s
            WHERE s.tenant_id = {tenant_id}
              AND s.customer_id = (SELECT customer_id FROM advocates WHERE id = {advocate_id})
              AND (s.ip_hash IS NOT NULL OR s.device_hash IS NOT NULL)
              AND s.occurred_at BETWEEN {anchor}::timestamptz - {network_window}::interval
                                    AND {anchor}::timestamptz + {network_window}::interval
           UNION ALL
           -- where link-service saw the advocate (enrolment, their refer-a-friend page)
           SELECT g.seen_at, g.ip_hash, g.device_hash FROM advocate_sightings g
            WHERE g.advocate_id = {advocate_id} AND g.tenant_id = {tenant_id}
              AND g.seen_at BETWEEN {anchor}::timestamptz - {network_window}::interval
                                AND {anchor}::timestamptz + {network_window}::interval) s)
    AS sightings,
  (SELECT min(x.occurred_at) FROM conversions x
    WHERE x.tenant_id = {tenant_id} AND x.customer_id = {customer_id} AND x.id <> {id}
      AND x.status <> 'pending' AND x.advocate_id IS DISTINCT FROM {advocate_id})
    AS converted_before,
  (SELECT count(*) FILTER (WHERE v.occurred_at > {occurred_at}::timestamptz - interval '1 hour')
     FROM conversions v WHERE v.advocate_id = {advocate_id} AND v.id <> {id}
      AND v.status IN ('attributed', 'review')
      AND v.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND v.occurred_at <= {occurred_at}) AS adv_hour,
  (SELECT count(*) FROM conversions v WHERE v.advocate_id = {advocate_id} AND v.id <> {id}
      AND v.status IN ('attributed', 'review')
      AND v.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND v.occurred_at <= {occurred_at}) AS adv_day,
  (SELECT count(*) FROM conversions i WHERE {ip_hash}::text IS NOT NULL
      AND {advocate_id} IS NOT NULL AND i.tenant_id = {tenant_id}
      AND i.ip_hash = {ip_hash} AND i.type = 'signup' AND i.id <> {id}
      AND i.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND i.occurred_at <= {occurred_at}) AS ip_signups,
  (SELECT count(*) FROM conversions d WHERE {device_hash}::text IS NOT NULL
      AND {advocate_id} IS NOT NULL AND d.tenant_id = {tenant_id}
      AND d.device_hash = {device_hash} AND d.type = 'signup' AND d.id <> {id}
      AND d.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND d.occurred_at <= {occurred_at}) AS device_signups,
  coalesce((SELECT r.denied FROM advocate_risk r WHERE r.advocate_id = {advocate_id}), 0)
    AS advocate_denied
"""
_ASK = Params.of(ScreeningAsk, _TYPES)


# The ring rule's reads (facts.RingRead): the workspace's referred conversions sharing a signal
# value with the one asked about, that arrived in (ring_low, ring_high]. One lookup per signal
# through the signal's index, fenced (LIMIT) so the plan is that lookup whatever the tables'
# statistics when it was made (BATCH_PLAN_SETTINGS); the limit also bounds what one conversion
# compares with. A statement names only the signals its conversions have (a conversion carries
# two or three of the seven): every part of a plan is opened and locked on each run, whether or
# not a row asks for it. `refs` name the conversion's signal columns, tenant_id, ring_low and
# ring_high.
RING_LIMIT = 1000
_RING_COLUMNS = ", ".join(
    f"c.{c}"
    for c in ("id", "customer_id", "advocate_id", "received_at", *fraud.SIGNAL_COLUMNS.values())
)
_RING_BY_VALUE = """(
    SELECT {columns} FROM conversions c
     WHERE c.{column} = {value} AND c.tenant_id = {tenant_id}
       AND c.received_at > {ring_low} AND c.received_at <= {ring_high}
       AND c.status IN ('attributed', 'review', 'rejected') AND c.advocate_id IS NOT NULL
     ORDER BY c.received_at DESC LIMIT {limit})"""


def _ring_columns(signals: frozenset[str], refs: Mapping[str, str]) -> str:
    """The select-list columns ring_low, ring_high and ring (jsonb, the rows read)."""
    parts = " UNION ALL ".join(
        _RING_BY_VALUE.format(
            **refs, columns=_RING_COLUMNS, column=column, value=refs[column], limit=RING_LIMIT
        )
        for signal, column in fraud.SIGNAL_COLUMNS.items()
        if signal in signals
    )
    ring = (
        f"(SELECT coalesce(jsonb_agg(to_jsonb(r.*)), '[]'::jsonb) FROM ({parts}) r)"  # noqa: S608
        if parts
        else "'[]'::jsonb"
    )
    return f"{refs['ring_low']} AS ring_low, {refs['ring_high']} AS ring_high, {ring} AS ring"


def _signals_of(convs: Sequence[Conversion]) -> frozenset[str]:
    return frozenset(s for c in convs for s in c.ring_signals())


# Read ahead with a conversion's context: over the ring window of the named code's program (the
# usual candidate's; facts.RingRead.answers tells whether it covers the window asked).
def _ring_ahead_window(program_id: str) -> str:
    default = DEFAULT_SETTINGS.fraud.ring.window_hours
    return f"""make_interval(hours => coalesce(
        (SELECT (s.settings #>> '{{fraud,ring,window_hours}}')::int FROM program_settings s
          WHERE s.program_id = {program_id}), {default}))"""  # noqa: S608


_RING_INPUTS = Params(
    ("tenant_id", "ring_low", "ring_high", *fraud.SIGNAL_COLUMNS.values()),
    types={"ring_low": "timestamptz", "ring_high": "timestamptz"},
)


@functools.cache
def _ring_reads_sql(signals: frozenset[str]) -> str:
    return f"""
    SELECT {_ring_columns(signals, {n: f"u.{n}" for n in _RING_INPUTS.names})}
      FROM unnest({_RING_INPUTS.arrays()}) WITH ORDINALITY AS u({_RING_INPUTS.listed()}, n)
     ORDER BY u.n
    """  # noqa: S608  (signal and column names of fraud.SIGNAL_COLUMNS only)


async def ring_reads(conn: asyncpg.Connection, asks: Sequence[RingAsk]) -> list[RingRead]:
    """What the ring rule reads for each of these conversions, in one statement, in order."""
    if not asks:
        return []
    rows = []
    for ask in asks:
        signals = dict(ask.signals)
        rows.append((ask.tenant_id, ask.low, ask.high, *map(signals.get, fraud.SIGNAL_COLUMNS)))
    sql = _ring_reads_sql(frozenset(s for ask in asks for s, _ in ask.signals))
    recs = await conn.fetch(sql, *map(list, zip(*rows, strict=True)))
    return [RingRead.of(r) for r in recs]


def read_ahead(rec: Mapping[str, Any], conv: Conversion) -> Screening | None:
    """The screening facts read ahead with a conversion's evidence context (insert_conversion,
    conversion_contexts): the named code's advocate's, anchored at the conversion, sightings over
    the longest window a policy allows. None: no code of the tenant named."""
    if rec["code_advocate_id"] is None:
        return None
    asked = ScreeningAsk.of(
        conv,
        rec["code_program_id"],
        rec["code_advocate_id"],
        anchor=conv.occurred_at,
        network_window=LONGEST_NETWORK_WINDOW,
    )
    return Screening.of(rec, asked)


_EVIDENCE_INPUTS = Params(("tenant_id", "customer_id", "type", "code_key", "click_id", "id"))
_EVIDENCE = "SELECT " + _EVIDENCE_COLUMNS.format(**_EVIDENCE_INPUTS.refs)


async def evidence_context(conn: asyncpg.Connection, conv: Conversion) -> Evidence:
    """Everything accepting and choosing evidence reads, in one round trip: which tenant owns the
    named code and click (NULL: not seen) and whether either was awaited before and never
    arrived; the code; the customer's known clicks when this conversion names a click
    (first/last-click choose among them: the one named now and those named by the customer's
    earlier conversions); their referrals with the count of earlier attributed conversions of
    this type; and the tenant's program settings (JSON text: the same few documents for every
    conversion, parsed once, see programs.domain.settings_by_program)."""
    rec = await conn.fetchrow(_EVIDENCE, *_EVIDENCE_INPUTS.values(conv))
    assert rec is not None
    return Evidence.of(rec)


_SCREENING = "SELECT " + _SCREENING_COLUMNS.format(**_ASK.refs)


async def screening_context(conn: asyncpg.Connection, ask: ScreeningAsk) -> Screening:
    """The facts fraud screening reads about one conversion and its candidate advocate, in one
    round trip."""
    rec = await conn.fetchrow(_SCREENING, *_ASK.values(ask))
    assert rec is not None
    return Screening.of(rec, ask)


_CONVERSION = Params(CONVERSION_COLUMNS, types=_TYPES)
_NAMES = ", ".join(CONVERSION_COLUMNS)
_CODE_OF = "(SELECT {column} FROM codes WHERE code_key = {code_key} AND tenant_id = {tenant_id})"

_HIGH = "coalesce({received_at}::timestamptz, {occurred_at}::timestamptz)"


# Formatted from the constants above (placeholders, no input), once per set of ring signals.
@functools.cache
def _insert_conversion_sql(signals: frozenset[str]) -> str:
    refs = _CONVERSION.refs
    code_program = _CODE_OF.format(column="program_id", **refs)
    return """
    WITH ins AS (
        INSERT INTO conversions ({names}, status) VALUES ({values}, 'pending')
        ON CONFLICT DO NOTHING RETURNING *
    )
    SELECT ins.*, ctx.*, scr.*, rng.* FROM (SELECT {evidence}) ctx
      CROSS JOIN (SELECT {code_program} AS code_program_id,
                         {code_advocate} AS code_advocate_id, {screening}) scr
      CROSS JOIN (SELECT {high} AS high, {high} - {window} AS low) w
      CROSS JOIN LATERAL (SELECT {ring}) rng
      LEFT JOIN ins ON true
    """.format(  # noqa: S608
        names=_NAMES,
        values=_CONVERSION.placeholders(),
        evidence=_EVIDENCE_COLUMNS.format(**refs),
        code_program=code_program,
        code_advocate=_CODE_OF.format(column="advocate_id", **refs),
        # The facts screening reads when the code named is what the conversion is attributed
        # to (the usual checkout): read ahead, in the same round trip. Sightings over the
        # longest window a policy allows; fraud screening keeps those within the program's
        # window.
        screening=_SCREENING_COLUMNS.format(
            **{
                **refs,
                "program_id": code_program,
                "advocate_id": _CODE_OF.format(column="advocate_id", **refs),
                "anchor": _CONVERSION["occurred_at"],
                "network_window": f"'{LONGEST_NETWORK_WINDOW_HOURS} hours'",
            }
        ),
        high=_HIGH.format(**refs),
        window=_ring_ahead_window(code_program),
        ring=_ring_columns(signals, {**refs, "ring_low": "w.low", "ring_high": "w.high"}),
    )


async def insert_conversion(
    conn: asyncpg.Connection, conv: Conversion
) -> tuple[asyncpg.Record | None, asyncpg.Record]:
    """The new conversion, pending (None when its idempotency key or (type, order id) already
    names one), and a record of its evidence context and the screening facts of the code's
    advocate (see Evidence.of and read_ahead), in one round trip. Both are read in the
    statement's snapshot, which the new row is not part of: what evidence_context and
    screening_context would have read just before the insert."""
    rec = await conn.fetchrow(
        _insert_conversion_sql(_signals_of([conv])), *_CONVERSION.values(conv)
    )
    assert rec is not None
    # the conversion's columns and the context's in one record (their names do not overlap)
    return (rec if rec["id"] is not None else None), rec


async def delete_new_conversion(conn: asyncpg.Connection, conversion_id: str) -> None:
    """Undo insert_conversion within its transaction (nothing refers to the row yet)."""
    await conn.execute("DELETE FROM conversions WHERE id = $1", conversion_id)


# Session settings of the group commit's own connections (batch.ConversionWriter). Its
# statements only ever look rows up by key, one outer row at a time (each table read a subquery
# on the row), so a plan made once per connection serves every batch: planning them afresh cost
# about a third of Postgres's CPU per conversion. With no sequential scan to choose, and every
# index usable only by the lookups it is for (migration 0004), the plan is the same whatever the
# tables' size and statistics when it was made (a test makes it on empty tables and runs it on
# full ones). Set per connection rather than per transaction (SET LOCAL): one round trip less
# per batch.
BATCH_PLAN_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}

# the ring signals' columns too (one of them, device_hash, screening reads as well): each once
_CONTEXT_INPUTS = Params(
    tuple(
        dict.fromkeys(
            (
                "id",
                "tenant_id",
                "customer_id",
                "type",
                "code_key",
                "click_id",
                "occurred_at",
                "ip_hash",
                "device_hash",
                "idempotency_key",
                "order_id",
                "received_at",
                *fraud.SIGNAL_COLUMNS.values(),
            )
        )
    ),
    types=_TYPES,
)
_ROW = {n: f"u.{n}" for n in CONVERSION_COLUMNS}


@functools.cache
def _contexts_sql(signals: frozenset[str]) -> str:
    return """
    SELECT (SELECT e.id FROM conversions e WHERE e.tenant_id = u.tenant_id
              AND e.idempotency_key = u.idempotency_key) AS key_conversion_id,
           (SELECT e.id FROM conversions e WHERE e.tenant_id = u.tenant_id
              AND e.type = u.type AND e.order_id = u.order_id) AS order_conversion_id,
           cp.code_program_id, cp.code_advocate_id, ctx.*, scr.*, rng.*
    FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n)
    LEFT JOIN LATERAL (SELECT c.program_id AS code_program_id, c.advocate_id AS code_advocate_id
                         FROM codes c WHERE c.code_key = u.code_key
                          AND c.tenant_id = u.tenant_id) cp ON true
    CROSS JOIN LATERAL (SELECT {evidence}) ctx
    CROSS JOIN LATERAL (SELECT {screening}) scr
    CROSS JOIN LATERAL (SELECT {high} AS high) h
    CROSS JOIN LATERAL (SELECT h.high - {window} AS low) w
    CROSS JOIN LATERAL (SELECT {ring}) rng
    ORDER BY u.n
    """.format(  # noqa: S608
        arrays=_CONTEXT_INPUTS.arrays(),
        names=", ".join(_CONTEXT_INPUTS.names),
        evidence=_EVIDENCE_COLUMNS.format(**_ROW),
        screening=_SCREENING_COLUMNS.format(
            **{
                **_ROW,
                "program_id": "cp.code_program_id",
                "advocate_id": "cp.code_advocate_id",
                "anchor": "u.occurred_at",
                "network_window": f"'{LONGEST_NETWORK_WINDOW_HOURS} hours'",
            }
        ),
        high=_HIGH.format(**_ROW),
        window=_ring_ahead_window("cp.code_program_id"),
        ring=_ring_columns(signals, {**_ROW, "ring_low": "w.low", "ring_high": "h.high"}),
    )


async def conversion_contexts(
    conn: asyncpg.Connection, convs: Sequence[Conversion]
) -> list[asyncpg.Record]:
    """For conversions not inserted yet, in one statement, in order: the conversion their
    idempotency key or (type, order id) already names (key_conversion_id, order_conversion_id),
    their evidence context and the screening facts of the named code's advocate read ahead (see
    Evidence.of and read_ahead)."""
    recs: list[asyncpg.Record] = await conn.fetch(
        _contexts_sql(_signals_of(convs)), *_CONTEXT_INPUTS.columns(convs)
    )
    return recs


_SCREENING_MANY = """
    SELECT {screening} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY u.n
""".format(  # noqa: S608
    arrays=_ASK.arrays(),
    names=", ".join(_ASK.names),
    screening=_SCREENING_COLUMNS.format(**{n: f"u.{n}" for n in _ASK.names}),
)


async def screening_contexts(
    conn: asyncpg.Connection, asks: Sequence[ScreeningAsk]
) -> list[asyncpg.Record]:
    """screening_context for many (conversion, candidate) pairs in one statement, in order
    (each record's facts: Screening.of)."""
    recs: list[asyncpg.Record] = await conn.fetch(_SCREENING_MANY, *_ASK.columns(asks))
    return recs


# --- what a decision writes ----------------------------------------------------------------


_FOLD_RISK = """
    INSERT INTO advocate_risk AS r (advocate_id, tenant_id, denied, flagged, max_score)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[])
    ON CONFLICT (advocate_id) DO UPDATE SET denied = r.denied + EXCLUDED.denied,
        flagged = r.flagged + EXCLUDED.flagged,
        max_score = greatest(r.max_score, EXCLUDED.max_score), updated_at = now()
    RETURNING advocate_id, denied, flagged, max_score, blocked_at
"""


async def fold_advocate_risk(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, str, int, int, int]]
) -> list[asyncpg.Record]:
    """Add (advocate, tenant, denied, flagged, riskiest score) to each advocate's counts, one
    row per advocate; returns their counts after."""
    recs: list[asyncpg.Record] = await conn.fetch(_FOLD_RISK, *columns_of(rows, 5))
    return recs


async def auto_block(conn: asyncpg.Connection, advocate_ids: Sequence[str]) -> list[str]:
    """Mark these advocates blocked by the platform (here and in the local copy, so the next
    conversion sees it at once); returns those not blocked before."""
    rows = await conn.fetch(
        """
        WITH b AS (
            UPDATE advocate_risk SET blocked_at = now()
            WHERE advocate_id = ANY($1::text[]) AND blocked_at IS NULL RETURNING advocate_id
        ), a AS (
            UPDATE advocates SET blocked = true WHERE id IN (SELECT advocate_id FROM b)
        )
        SELECT advocate_id FROM b
        """,
        list(advocate_ids),
    )
    return [r["advocate_id"] for r in rows]


async def advocate_risk(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM advocate_risk WHERE advocate_id = $1 AND tenant_id = $2",
        advocate_id,
        tenant_id,
    )


_LINK = Params.of(CustomerClick)
_LINK_CUSTOMER_CLICKS = """
    INSERT INTO customer_clicks ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING
""".format(names=", ".join(_LINK.names), arrays=_LINK.arrays())  # noqa: S608


async def link_customer_clicks(conn: asyncpg.Connection, links: Sequence[CustomerClick]) -> None:
    await conn.execute(_LINK_CUSTOMER_CLICKS, *_LINK.columns(links))


_REFERRAL = Params.of(NewReferral)
_UPSERT_REFERRALS = """
    INSERT INTO referrals ({names})
    SELECT {names} FROM unnest({arrays}) AS u({names})
    ORDER BY tenant_id, program_id, friend_customer_id
    ON CONFLICT (tenant_id, program_id, friend_customer_id)
    DO UPDATE SET id = referrals.id
    RETURNING id, tenant_id, program_id, friend_customer_id, click_id, (xmax = 0) AS created
""".format(names=", ".join(_REFERRAL.names), arrays=_REFERRAL.arrays())  # noqa: S608


async def upsert_referrals(
    conn: asyncpg.Connection, items: Sequence[NewReferral]
) -> list[Referred]:
    """The friends' referrals in these programs (created if new, locked either way, in one
    fixed order, so concurrent conversions of one friend are numbered one after the other), in
    the order given. (xmax = 0 marks a row the INSERT created.)"""
    refs = await conn.fetch(_UPSERT_REFERRALS, *_REFERRAL.columns(items))
    by_friend = {(r["tenant_id"], r["program_id"], r["friend_customer_id"]): r for r in refs}
    got = [by_friend[(i.tenant_id, i.program_id, i.friend_customer_id)] for i in items]
    return [Referred(r["id"], r["created"], r["click_id"]) for r in got]


# The number of an attributed conversion among its referral's attributed conversions of its
# type, counted in the writing statement's snapshot, taken after upsert_referrals locked the
# referral (a second statement on purpose: it sees a concurrent conversion of the same friend
# that committed meanwhile); and whether that makes it the friend's first purchase.
_SEQUENCE = """CASE WHEN {status}::text = 'attributed' THEN (
    SELECT count(*) + 1 FROM conversions x
     WHERE x.referral_id = {referral_id} AND x.type = {type}
       AND x.custom_type IS NOT DISTINCT FROM {custom_type}
       AND x.status = 'attributed' AND x.id <> {id}) END"""
_FIRST_PURCHASE = "coalesce({type} = 'purchase' AND {n} = 1, false)"
_DECISION = ("status", "decision", "program_id", "advocate_id", "referral_id", "evidence")

_INSERTED = _CONVERSION.then(_DECISION)
_INSERT_DECIDED = """
    WITH u AS (
        SELECT * FROM unnest({arrays}, {decided}, ${explanation}::text[]) WITH ORDINALITY
            AS u({names}, {decision}, explanation, n)
    ), s AS (
        SELECT u.*, {sequence} AS seq_n FROM u
    ), ins AS (
        INSERT INTO conversions ({names}, {decision}, sequence, is_first_purchase, explanation,
                                 decided_at)
        SELECT {names}, {decision}, seq_n, {first_purchase}, explanation::jsonb,
               CASE WHEN status = 'pending' THEN NULL ELSE now() END
        FROM s ORDER BY n
        ON CONFLICT DO NOTHING
        RETURNING id, sequence, is_first_purchase, refunded_minor, created_at, decided_at
    )
    SELECT ins.* FROM ins JOIN u ON u.id = ins.id ORDER BY u.n
""".format(  # noqa: S608
    arrays=_CONVERSION.arrays(),
    decided=_INSERTED.arrays(),
    explanation=_INSERTED.next,
    names=_NAMES,
    decision=", ".join(_DECISION),
    sequence=_SEQUENCE.format(**{n: f"u.{n}" for n in (*CONVERSION_COLUMNS, *_DECISION)}),
    first_purchase=_FIRST_PURCHASE.format(type="type", n="seq_n"),
)


async def insert_decided(
    conn: asyncpg.Connection, convs: Sequence[Conversion], rows: Sequence[DecisionRow]
) -> list[dict[str, Any]] | None:
    """New conversions inserted already decided (or pending), in order. Returns them as stored
    (what the database adds read back, the rest as given), or None when another transaction
    took a key or (type, order id) meanwhile."""
    recs = await conn.fetch(
        _INSERT_DECIDED,
        *_CONVERSION.columns(convs),
        *_INSERTED.columns(rows),
        [json.dumps(r.explanation or {}) for r in rows],
    )
    if len(recs) != len(convs):
        return None
    return [
        {
            **{n: getattr(c, n) for n in CONVERSION_COLUMNS},
            **{n: getattr(r, n) for n in _DECISION},
            "explanation": r.explanation or {},
            **dict(rec.items()),
        }
        for c, r, rec in zip(convs, rows, recs, strict=True)
    ]


_DECIDED = Params(("id", "type", "custom_type", *_DECISION, "explanation", "review"))
_UPDATE_DECIDED = """
    WITH s AS (SELECT {sequence} AS n)
    UPDATE conversions c SET status = {status}, decision = {decision},
           program_id = {program_id}, advocate_id = {advocate_id}, referral_id = {referral_id},
           evidence = {evidence}, sequence = s.n,
           is_first_purchase = {first_purchase},
           explanation = CASE WHEN {review}::jsonb IS NULL THEN {explanation}::jsonb
               ELSE c.explanation || jsonb_build_object('review', {review}::jsonb) END,
           decided_at = coalesce(c.decided_at, now())
    FROM s WHERE c.id = {id}
    RETURNING c.*
""".format(  # noqa: S608
    sequence=_SEQUENCE.format(**_DECIDED.refs),
    first_purchase=_FIRST_PURCHASE.format(type="c.type", n="s.n"),
    **_DECIDED.refs,
)


async def update_decided(
    conn: asyncpg.Connection, conv: Conversion, row: DecisionRow
) -> asyncpg.Record:
    """A stored conversion (pending, or waiting for review) decided. A reviewer's decision
    keeps the explanation and adds theirs to it, and the time it was first decided."""
    rec = await conn.fetchrow(
        _UPDATE_DECIDED,
        *_DECIDED.bind(
            {
                "id": conv.id,
                "type": conv.type,
                "custom_type": conv.custom_type,
                **{n: getattr(row, n) for n in _DECISION},
                "explanation": row.explanation,
                "review": row.review,
            }
        ),
    )
    assert rec is not None
    return rec


# --- reading conversions --------------------------------------------------------------------


async def get_click(conn: asyncpg.Connection, click_id: str) -> Click | None:
    k = await conn.fetchrow("SELECT * FROM clicks WHERE id = $1", click_id)
    return click_of(k) if k else None


async def conversion_by_key(
    conn: asyncpg.Connection, tenant_id: str, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversions WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        key,
    )


async def conversion_by_order(
    conn: asyncpg.Connection, tenant_id: str, type_: str, order_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversions WHERE tenant_id = $1 AND type = $2 AND order_id = $3",
        tenant_id,
        type_,
        order_id,
    )


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = (
        "SELECT * FROM conversions WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
        if lock
        else "SELECT * FROM conversions WHERE id = $1 AND tenant_id = $2"
    )
    return await conn.fetchrow(sql, conversion_id, tenant_id)


async def pending_waiting_for(
    conn: asyncpg.Connection, pieces: Sequence[tuple[str, str | None, str | None]]
) -> list[asyncpg.Record]:
    """Pending conversions naming any of these (tenant, click id, code key) pieces, oldest
    first, locked."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT c.* FROM conversions c
        WHERE c.status = 'pending'
          AND (c.click_id = ANY($2::text[]) OR c.code_key = ANY($3::text[]))
          AND EXISTS (
              SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[]) AS p(t, k, c)
              WHERE p.t = c.tenant_id AND (p.k = c.click_id OR p.c = c.code_key))
        ORDER BY c.created_at FOR UPDATE
        """,
        [t for t, _, _ in pieces],
        [k for _, k, _ in pieces],
        [c for _, _, c in pieces],
    )
    return rows


async def pending_overdue(
    conn: asyncpg.Connection, older_than: datetime, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM conversions WHERE status = 'pending' AND created_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
        """,
        older_than,
        limit,
    )
    return rows


# ---------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class ConversionFilter:
    program_id: str | None = None
    advocate_id: str | None = None
    customer_id: str | None = None
    order_id: str | None = None
    # The code the conversion named (compared as code_key).
    code_key: str | None = None
    type: str | None = None
    status: str | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def conversion_page(
    conn: asyncpg.Connection, tenant_id: str, f: ConversionFilter, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id)
    where.maybe("program_id = {}", f.program_id).maybe("advocate_id = {}", f.advocate_id)
    where.maybe("customer_id = {}", f.customer_id).maybe("order_id = {}", f.order_id)
    where.maybe("type = {}", f.type).maybe("status = {}", f.status)
    where.maybe("code_key = {}", f.code_key)
    f.created.apply(where)
    return await fetch_page(conn, "SELECT * FROM conversions", where, page)


@dataclass(frozen=True)
class ReferralFilter:
    program_id: str | None = None
    advocate_id: str | None = None
    # The referred customer.
    customer_id: str | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def referral_page(
    conn: asyncpg.Connection, tenant_id: str, f: ReferralFilter, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id)
    where.maybe("program_id = {}", f.program_id).maybe("advocate_id = {}", f.advocate_id)
    where.maybe("friend_customer_id = {}", f.customer_id)
    f.created.apply(where)
    return await fetch_page(conn, "SELECT * FROM referrals", where, page)


async def customer_referral(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, customer_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM referrals WHERE tenant_id = $1 AND program_id = $2"
        " AND friend_customer_id = $3",
        tenant_id,
        program_id,
        customer_id,
    )


async def customer_advocacies(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, customer_id: str
) -> list[str]:
    """The ids under which the customer is an advocate of the program (at most one)."""
    rows = await conn.fetch(
        "SELECT id FROM advocates WHERE tenant_id = $1 AND program_id = $2 AND customer_id = $3",
        tenant_id,
        program_id,
        customer_id,
    )
    return [r["id"] for r in rows]
