"""Conversions' SQL: accepting, deciding and recording them, one by one and set-wise for a
group commit. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from attribution_service.programs.domain import LONGEST_NETWORK_WINDOW_HOURS

# --- the evidence lock -------------------------------------------------------------------


async def lock_evidence(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> None:
    """Transaction-scoped advisory locks on pieces of evidence (a click id, a code), taken in one
    fixed order so two transactions locking both cannot deadlock."""
    keys = sorted(
        f"{kind}:{tenant_id}:{value}"
        for kind, value in (("click", click_id), ("code", code_key))
        if value is not None
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


# --- deciding a conversion ------------------------------------------------------------------


# The evidence context as select-list columns. Parameters by name (formatted into $n by each
# statement that reads it): tenant, customer, type, code_key, click_id, conversion_id.
_EVIDENCE_COLUMNS = """
  (SELECT tenant_id FROM codes WHERE code_key = {code_key}) AS code_tenant,
  (SELECT tenant_id FROM clicks WHERE id = {click_id}) AS click_tenant,
  (SELECT array_agg(kind || ':' || tenant_id) FROM expired_evidence
    WHERE (kind = 'code' AND value = {code_key}) OR (kind = 'click' AND value = {click_id}))
    AS expired,
  (SELECT to_jsonb(c) FROM codes c WHERE c.code_key = {code_key} AND c.tenant_id = {tenant})
    AS code,
  (SELECT coalesce(jsonb_agg(to_jsonb(k)), '[]'::jsonb) FROM clicks k
    WHERE {click_id}::text IS NOT NULL AND k.tenant_id = {tenant} AND k.id IN (
        SELECT click_id FROM customer_clicks
        WHERE tenant_id = {tenant} AND customer_id = {customer}
        UNION ALL SELECT {click_id})) AS clicks,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', r.id, 'program_id', r.program_id, 'advocate_id', r.advocate_id,
        'created_at', r.created_at,
        'prior', (SELECT count(*) FROM conversions x WHERE x.referral_id = r.id
                  AND x.type = {type} AND x.status = 'attributed'
                  AND x.id <> {conversion_id}))),
        '[]'::jsonb)
     FROM referrals r WHERE r.tenant_id = {tenant} AND r.friend_customer_id = {customer})
    AS referrals,
  (SELECT coalesce(jsonb_object_agg(program_id, settings), '{{}}'::jsonb)::text
     FROM program_settings WHERE tenant_id = {tenant}) AS settings
"""


async def evidence_context(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    customer_id: str,
    type_: str,
    code_key: str | None,
    click_id: str | None,
    conversion_id: str,
) -> asyncpg.Record:
    """Everything accepting and choosing evidence reads, in one round trip: which tenant owns the
    named code and click (NULL: not seen) and whether either was awaited before and never
    arrived; the code; the customer's known clicks when this conversion names a click
    (first/last-click choose among them: the one named now and those named by the customer's
    earlier conversions); their referrals with the count of earlier attributed conversions of
    this type; and the tenant's program settings (JSON text: the same few documents for every
    conversion, parsed once, see handlers.choose_evidence)."""
    row = await conn.fetchrow(
        "SELECT "
        + _EVIDENCE_COLUMNS.format(
            tenant="$1", customer="$2", type="$3", code_key="$4", click_id="$5", conversion_id="$6"
        ),
        tenant_id,
        customer_id,
        type_,
        code_key,
        click_id,
        conversion_id,
    )
    assert row is not None
    return row


# The screening facts as select-list columns. Parameters by name (formatted into SQL by each
# statement that reads them): program, advocate (the candidate), tenant, customer, conversion_id,
# occurred_at, ip_hash, device_hash (the conversion's), and anchor +- window (the advocate's
# sightings around the click or the conversion).
_SCREENING_COLUMNS = """
  (SELECT to_jsonb(p) FROM programs p WHERE p.id = {program}) AS program,
  (SELECT to_jsonb(a) FROM advocates a WHERE a.id = {advocate}) AS advocate,
  (SELECT coalesce(jsonb_agg(jsonb_build_object(
        'seen_at', s.occurred_at, 'ip_hash', s.ip_hash, 'device_hash', s.device_hash)),
        '[]'::jsonb)
     FROM conversions s
    WHERE s.tenant_id = {tenant}
      AND s.customer_id = (SELECT customer_id FROM advocates WHERE id = {advocate})
      AND (s.ip_hash IS NOT NULL OR s.device_hash IS NOT NULL)
      AND s.occurred_at BETWEEN {anchor}::timestamptz - {window}::interval
                            AND {anchor}::timestamptz + {window}::interval{not_s}) AS sightings,
  (SELECT min(x.occurred_at) FROM conversions x
    WHERE x.tenant_id = {tenant} AND x.customer_id = {customer} AND x.id <> {conversion_id}
      AND x.status <> 'pending' AND x.advocate_id IS DISTINCT FROM {advocate}{not_x})
    AS converted_before,
  (SELECT count(*) FILTER (WHERE v.occurred_at > {occurred_at}::timestamptz - interval '1 hour')
     FROM conversions v WHERE v.advocate_id = {advocate} AND v.id <> {conversion_id}
      AND v.status IN ('attributed', 'review')
      AND v.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND v.occurred_at <= {occurred_at}{not_v}) AS adv_hour,
  (SELECT count(*) FROM conversions v WHERE v.advocate_id = {advocate}
      AND v.id <> {conversion_id}
      AND v.status IN ('attributed', 'review')
      AND v.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND v.occurred_at <= {occurred_at}{not_v}) AS adv_day,
  (SELECT count(*) FROM conversions i WHERE {ip_hash}::text IS NOT NULL
      AND {advocate} IS NOT NULL AND i.tenant_id = {tenant}
      AND i.ip_hash = {ip_hash} AND i.type = 'signup' AND i.id <> {conversion_id}
      AND i.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND i.occurred_at <= {occurred_at}{not_i}) AS ip_signups,
  (SELECT count(*) FROM conversions d WHERE {device_hash}::text IS NOT NULL
      AND {advocate} IS NOT NULL AND d.tenant_id = {tenant}
      AND d.device_hash = {device_hash} AND d.type = 'signup' AND d.id <> {conversion_id}
      AND d.occurred_at > {occurred_at}::timestamptz - interval '1 day'
      AND d.occurred_at <= {occurred_at}{not_d}) AS device_signups
"""


def _screening_columns(exclude: str | None = None, **names: str) -> str:
    """_SCREENING_COLUMNS with the names filled in; `exclude` (an SQL text[] expression):
    conversions left out of every sighting and count (a group commit's own new rows)."""
    slots = {
        f"not_{alias}": f" AND NOT ({alias}.id = ANY({exclude}))" if exclude else ""
        for alias in "sxvid"
    }
    return _SCREENING_COLUMNS.format(**slots, **names)


_SCREENING = "SELECT " + _screening_columns(
    program="$1",
    advocate="$2",
    tenant="$3",
    customer="$4",
    conversion_id="$5",
    occurred_at="$6",
    anchor="$7",
    window="$8",
    ip_hash="$9",
    device_hash="$10",
)


async def screening_context(
    conn: asyncpg.Connection,
    conv: asyncpg.Record,
    *,
    program_id: str,
    advocate_id: str,
    anchor: datetime,
    network_window: timedelta,
) -> asyncpg.Record:
    """The facts fraud screening reads about one conversion and its candidate advocate, in one
    round trip."""
    row = await conn.fetchrow(
        _SCREENING,
        program_id,
        advocate_id,
        conv["tenant_id"],
        conv["customer_id"],
        conv["id"],
        conv["occurred_at"],
        anchor,
        network_window,
        conv["ip_hash"],
        conv["device_hash"],
    )
    assert row is not None
    return row


async def link_customer_click(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, click_id: str
) -> None:
    await conn.execute(
        "INSERT INTO customer_clicks (tenant_id, customer_id, click_id) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        tenant_id,
        customer_id,
        click_id,
    )


async def attribute(
    conn: asyncpg.Connection,
    conv: asyncpg.Record,
    *,
    referral_id: str,
    program_id: str,
    advocate_id: str,
    evidence: str,
    click_id: str | None,
    explanation: dict[str, Any] | None,
    review: dict[str, Any] | None,
) -> asyncpg.Record:
    """The friend's referral in this program (created if new; locked either way, so concurrent
    conversions of one friend are numbered one after the other), then this conversion's sequence
    among the friend's attributed conversions of its type, and the conversion marked attributed.
    Two statements on purpose: the second takes its snapshot after the lock is held, so it sees
    a concurrent conversion of the same friend that committed meanwhile. Returns the conversion
    with `referral_created` and `referral_click_id`. (xmax = 0 marks a row the INSERT created.)"""
    ref = await conn.fetchrow(
        """
        INSERT INTO referrals (id, tenant_id, program_id, advocate_id, friend_customer_id,
                               evidence, click_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (tenant_id, program_id, friend_customer_id)
        DO UPDATE SET id = referrals.id
        RETURNING id, click_id, (xmax = 0) AS created
        """,
        referral_id,
        conv["tenant_id"],
        program_id,
        advocate_id,
        conv["customer_id"],
        evidence,
        click_id,
    )
    assert ref is not None
    row = await conn.fetchrow(
        """
        WITH seq AS (
            SELECT count(*) + 1 AS n FROM conversions x
            WHERE x.referral_id = $2 AND x.type = $6 AND x.custom_type IS NOT DISTINCT FROM $7
              AND x.status = 'attributed' AND x.id <> $1
        )
        UPDATE conversions c SET status = 'attributed', decision = 'allow', program_id = $3,
               advocate_id = $4, referral_id = $2, evidence = $5, sequence = seq.n,
               is_first_purchase = (c.type = 'purchase' AND seq.n = 1),
               explanation = CASE WHEN $9::jsonb IS NULL THEN $8::jsonb
                   ELSE c.explanation || jsonb_build_object('review', $9::jsonb) END,
               decided_at = coalesce(c.decided_at, now())
        FROM seq WHERE c.id = $1
        RETURNING c.*, $10::boolean AS referral_created, $11::text AS referral_click_id
        """,
        conv["id"],
        ref["id"],
        program_id,
        advocate_id,
        evidence,
        conv["type"],
        conv["custom_type"],
        explanation,
        review,
        ref["created"],
        ref["click_id"],
    )
    assert row is not None
    return row


# Formatted once at import from the constants above (placeholders, no input).
_INSERT_CONVERSION = """
    WITH ins AS (
        INSERT INTO conversions (id, tenant_id, type, custom_type, customer_id, email,
                                 email_norm, order_id, amount_minor, currency, occurred_at,
                                 click_id, code_key, idempotency_key, request_hash, status,
                                 subscription_id, ip_hash, device_hash, existing_customer,
                                 locale, source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'pending',
                $16, $17, $18, $19, $20, $21)
        ON CONFLICT DO NOTHING RETURNING *
    )
    SELECT ins.*, ctx.*, scr.* FROM (SELECT {evidence}) ctx
      CROSS JOIN (SELECT {code_program} AS code_program_id,
                         {code_advocate} AS code_advocate_id, {screening}) scr
      LEFT JOIN ins ON true
""".format(  # noqa: S608
    evidence=_EVIDENCE_COLUMNS.format(
        tenant="$2", customer="$5", type="$3", code_key="$13", click_id="$12", conversion_id="$1"
    ),
    code_program="(SELECT program_id FROM codes WHERE code_key = $13 AND tenant_id = $2)",
    code_advocate="(SELECT advocate_id FROM codes WHERE code_key = $13 AND tenant_id = $2)",
    # The facts screening reads when the code named is what the conversion is attributed to
    # (the usual checkout): read ahead, in the same round trip. Sightings over the longest
    # window a policy allows; fraud screening keeps those within the program's window.
    screening=_screening_columns(
        program="(SELECT program_id FROM codes WHERE code_key = $13 AND tenant_id = $2)",
        advocate="(SELECT advocate_id FROM codes WHERE code_key = $13 AND tenant_id = $2)",
        tenant="$2",
        customer="$5",
        conversion_id="$1",
        occurred_at="$11",
        anchor="$11",
        window=f"'{LONGEST_NETWORK_WINDOW_HOURS} hours'",
        ip_hash="$17",
        device_hash="$18",
    ),
)


async def insert_conversion(
    conn: asyncpg.Connection, **f: Any
) -> tuple[asyncpg.Record | None, asyncpg.Record]:
    """The new conversion (None when the idempotency key or (type, order id) already names one)
    and its evidence context (see evidence_context), with the screening facts of the code's
    advocate (see screening_context; code_advocate_id NULL: no code), in one round trip. Both
    are read in the statement's snapshot, which the new row is not part of: what
    evidence_context and screening_context would have read just before the insert."""
    rec = await conn.fetchrow(
        _INSERT_CONVERSION,
        f["id"],
        f["tenant_id"],
        f["type"],
        f["custom_type"],
        f["customer_id"],
        f["email"],
        f["email_norm"],
        f["order_id"],
        f["amount_minor"],
        f["currency"],
        f["occurred_at"],
        f["click_id"],
        f["code_key"],
        f["idempotency_key"],
        f["request_hash"],
        f["subscription_id"],
        f["ip_hash"],
        f["device_hash"],
        f["existing_customer"],
        f["locale"],
        f["source"],
    )
    assert rec is not None
    # the conversion's columns and the context's in one record (their names do not overlap)
    return (rec if rec["id"] is not None else None), rec


async def delete_new_conversion(conn: asyncpg.Connection, conversion_id: str) -> None:
    """Undo insert_conversion within its transaction (nothing refers to the row yet)."""
    await conn.execute("DELETE FROM conversions WHERE id = $1", conversion_id)


# --- a group commit of conversions (see conversions.batch) -------------------------------------

# insert_conversion's columns and their types, in order: the arrays of insert_decided.
CONVERSION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("tenant_id", "text"),
    ("type", "text"),
    ("custom_type", "text"),
    ("customer_id", "text"),
    ("email", "text"),
    ("email_norm", "text"),
    ("order_id", "text"),
    ("amount_minor", "bigint"),
    ("currency", "text"),
    ("occurred_at", "timestamptz"),
    ("click_id", "text"),
    ("code_key", "text"),
    ("idempotency_key", "text"),
    ("request_hash", "text"),
    ("subscription_id", "text"),
    ("ip_hash", "text"),
    ("device_hash", "text"),
    ("existing_customer", "boolean"),
    ("locale", "text"),
    ("source", "text"),
)
_NAMES = ", ".join(n for n, _ in CONVERSION_COLUMNS)
_CONTEXT_INPUTS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("tenant_id", "text"),
    ("customer_id", "text"),
    ("type", "text"),
    ("code_key", "text"),
    ("click_id", "text"),
    ("occurred_at", "timestamptz"),
    ("ip_hash", "text"),
    ("device_hash", "text"),
    ("idempotency_key", "text"),
    ("order_id", "text"),
)

_CONTEXTS = """
    SELECT (SELECT e.id FROM conversions e WHERE e.tenant_id = u.tenant_id
              AND e.idempotency_key = u.idempotency_key) AS key_conversion_id,
           (SELECT e.id FROM conversions e WHERE e.tenant_id = u.tenant_id
              AND e.type = u.type AND e.order_id = u.order_id) AS order_conversion_id,
           cp.code_program_id, cp.code_advocate_id, ctx.*, scr.*
    FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n)
    LEFT JOIN LATERAL (SELECT c.program_id AS code_program_id, c.advocate_id AS code_advocate_id
                         FROM codes c WHERE c.code_key = u.code_key
                          AND c.tenant_id = u.tenant_id) cp ON true
    CROSS JOIN LATERAL (SELECT {evidence}) ctx
    CROSS JOIN LATERAL (SELECT {screening}) scr
    ORDER BY u.n
""".format(  # noqa: S608
    arrays=", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_CONTEXT_INPUTS, 1)),
    names=", ".join(n for n, _ in _CONTEXT_INPUTS),
    evidence=_EVIDENCE_COLUMNS.format(
        tenant="u.tenant_id",
        customer="u.customer_id",
        type="u.type",
        code_key="u.code_key",
        click_id="u.click_id",
        conversion_id="u.id",
    ),
    screening=_screening_columns(
        program="cp.code_program_id",
        advocate="cp.code_advocate_id",
        tenant="u.tenant_id",
        customer="u.customer_id",
        conversion_id="u.id",
        occurred_at="u.occurred_at",
        anchor="u.occurred_at",
        window=f"'{LONGEST_NETWORK_WINDOW_HOURS} hours'",
        ip_hash="u.ip_hash",
        device_hash="u.device_hash",
    ),
)


# Session settings of the group commit's own connections (conversions.batch.ConversionWriter).
# Its statements only ever look rows up by key, one outer row at a time (each table read a
# subquery on the row), so a plan made once per connection serves every batch: planning them
# afresh cost about a third of Postgres's CPU per conversion. With no sequential scan to
# choose, and every index usable only by the lookups it is for (migration 0004), the plan is
# the same whatever the tables' size and statistics when it was made (a test makes it on
# empty tables and runs it on full ones). Set per connection rather than per transaction
# (SET LOCAL): one round trip less per batch.
BATCH_PLAN_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}


async def conversion_contexts(
    conn: asyncpg.Connection, convs: list[dict[str, Any]]
) -> list[asyncpg.Record]:
    """For conversions not inserted yet, in one statement, in order: the conversion their
    idempotency key or (type, order id) already names (key_conversion_id, order_conversion_id),
    their evidence context (see evidence_context) and the screening facts of the named code's
    advocate read ahead (see insert_conversion)."""
    recs: list[asyncpg.Record] = await conn.fetch(
        _CONTEXTS, *([c[n] for c in convs] for n, _ in _CONTEXT_INPUTS)
    )
    return recs


_INSERT_DECIDED = """
    WITH u AS (
        SELECT * FROM unnest({arrays}, $22::text[], $23::text[], $24::text[], $25::text[],
                             $26::text[], $27::text[], $28::text[]) WITH ORDINALITY
            AS u({names}, status, decision, program_id, advocate_id, referral_id, evidence,
                 explanation, n)
    ), s AS (
        SELECT u.*, CASE WHEN u.status = 'attributed' THEN (
                   SELECT count(*) + 1 FROM conversions x
                    WHERE x.referral_id = u.referral_id AND x.type = u.type
                      AND x.custom_type IS NOT DISTINCT FROM u.custom_type
                      AND x.status = 'attributed') END AS seq_n
        FROM u
    ), ins AS (
        INSERT INTO conversions ({names}, status, decision, program_id, advocate_id,
                                 referral_id, evidence, sequence, is_first_purchase,
                                 explanation, decided_at)
        SELECT {names}, status, decision, program_id, advocate_id, referral_id, evidence, seq_n,
               coalesce(type = 'purchase' AND seq_n = 1, false), explanation::jsonb,
               CASE WHEN status = 'pending' THEN NULL ELSE now() END
        FROM s ORDER BY n
        ON CONFLICT DO NOTHING
        RETURNING id, sequence, is_first_purchase, refunded_minor, created_at, decided_at
    )
    SELECT ins.* FROM ins JOIN u ON u.id = ins.id ORDER BY u.n
""".format(  # noqa: S608
    arrays=", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(CONVERSION_COLUMNS, 1)),
    names=_NAMES,
)


_DECIDED = ("status", "decision", "program_id", "advocate_id", "referral_id", "evidence")


async def insert_decided(
    conn: asyncpg.Connection, convs: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """New conversions inserted already decided (or pending), in order: attributed ones get
    their sequence among their referral's attributed conversions of the type, counted in this
    statement's snapshot (taken after upsert_referrals locked the referrals, as in attribute).
    Returns the rows as stored (what the database adds read back, the rest as given), or None
    when another transaction took a key or (type, order id) meanwhile."""
    recs = await conn.fetch(
        _INSERT_DECIDED,
        *([c[n] for c in convs] for n, _ in CONVERSION_COLUMNS),
        *([c[n] for c in convs] for n in _DECIDED),
        [json.dumps(c["explanation"]) for c in convs],
    )
    if len(recs) != len(convs):
        return None
    return [
        {
            **{n: c[n] for n, _ in CONVERSION_COLUMNS},
            **{n: c[n] for n in _DECIDED},
            "explanation": c["explanation"],
            **dict(r.items()),
        }
        for c, r in zip(convs, recs, strict=True)
    ]


_SCREENING_MANY = """
    SELECT {screening} FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                   $6::timestamptz[], $7::timestamptz[], $8::interval[],
                                   $9::text[], $10::text[]) WITH ORDINALITY
        AS u(program_id, advocate_id, tenant_id, customer_id, id, occurred_at, anchor,
             net_window, ip_hash, device_hash, n)
    ORDER BY u.n
""".format(  # noqa: S608
    screening=_screening_columns(
        exclude="$11::text[]",
        program="u.program_id",
        advocate="u.advocate_id",
        tenant="u.tenant_id",
        customer="u.customer_id",
        conversion_id="u.id",
        occurred_at="u.occurred_at",
        anchor="u.anchor",
        window="u.net_window",
        ip_hash="u.ip_hash",
        device_hash="u.device_hash",
    )
)


async def screening_contexts(
    conn: asyncpg.Connection, asks: list[dict[str, Any]], exclude: list[str]
) -> list[asyncpg.Record]:
    """screening_context for many (conversion, candidate) pairs in one statement, in order;
    the conversions in `exclude` are left out of every sighting and count."""
    keys = (
        "program_id",
        "advocate_id",
        "tenant_id",
        "customer_id",
        "id",
        "occurred_at",
        "anchor",
        "window",
        "ip_hash",
        "device_hash",
    )
    recs: list[asyncpg.Record] = await conn.fetch(
        _SCREENING_MANY, *([a[k] for a in asks] for k in keys), exclude
    )
    return recs


async def lock_evidence_many(
    conn: asyncpg.Connection, pieces: list[tuple[str, str | None, str | None]]
) -> None:
    """lock_evidence for many (tenant, click id, code key) at once, all in one fixed order."""
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


async def link_customer_clicks(conn: asyncpg.Connection, links: list[tuple[str, str, str]]) -> None:
    """link_customer_click for many (tenant, customer, click)."""
    await conn.execute(
        """
        INSERT INTO customer_clicks (tenant_id, customer_id, click_id)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING
        """,
        [t for t, _, _ in links],
        [c for _, c, _ in links],
        [k for _, _, k in links],
    )


async def upsert_referrals(
    conn: asyncpg.Connection, items: list[dict[str, Any]]
) -> list[asyncpg.Record]:
    """The referrals of many distinct friends (created if new, locked either way, in one fixed
    order), in the order given: id, click_id and whether it was created here."""
    refs = await conn.fetch(
        """
        INSERT INTO referrals (id, tenant_id, program_id, advocate_id, friend_customer_id,
                               evidence, click_id)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[]) AS u(id, t, p, a, f, e, k)
        ORDER BY t, p, f
        ON CONFLICT (tenant_id, program_id, friend_customer_id)
        DO UPDATE SET id = referrals.id
        RETURNING id, tenant_id, program_id, friend_customer_id, click_id, (xmax = 0) AS created
        """,
        [i["referral_id"] for i in items],
        [i["tenant_id"] for i in items],
        [i["program_id"] for i in items],
        [i["advocate_id"] for i in items],
        [i["customer_id"] for i in items],
        [i["evidence"] for i in items],
        [i["click_id"] for i in items],
    )
    by_friend = {(r["tenant_id"], r["program_id"], r["friend_customer_id"]): r for r in refs}
    return [by_friend[(i["tenant_id"], i["program_id"], i["customer_id"])] for i in items]


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
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM conversions
        WHERE status = 'pending' AND tenant_id = $1
          AND (click_id = $2 OR code_key = $3)
        ORDER BY created_at FOR UPDATE
        """,
        tenant_id,
        click_id,
        code_key,
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


async def record_decision(
    conn: asyncpg.Connection,
    conversion_id: str,
    *,
    status: str,
    decision: str | None,
    program_id: str | None,
    advocate_id: str | None,
    referral_id: str | None,
    evidence: str | None,
    is_first_purchase: bool,
    sequence: int | None,
    explanation: dict[str, Any],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE conversions SET status = $2, decision = $3, program_id = $4, advocate_id = $5,
               referral_id = $6, evidence = $7, is_first_purchase = $8, sequence = $9,
               explanation = $10, decided_at = now()
        WHERE id = $1 RETURNING *
        """,
        conversion_id,
        status,
        decision,
        program_id,
        advocate_id,
        referral_id,
        evidence,
        is_first_purchase,
        sequence,
        explanation,
    )
    assert row is not None
    return row


async def set_conversion_status(
    conn: asyncpg.Connection,
    conversion_id: str,
    status: str,
    decision: str,
    sequence: int | None,
    is_first_purchase: bool,
    referral_id: str | None,
    review: dict[str, Any],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE conversions SET status = $2, decision = $3, sequence = $4, is_first_purchase = $5,
               referral_id = coalesce($6, referral_id),
               explanation = explanation || jsonb_build_object('review', $7::jsonb)
        WHERE id = $1 RETURNING *
        """,
        conversion_id,
        status,
        decision,
        sequence,
        is_first_purchase,
        referral_id,
        review,
    )
    assert row is not None
    return row
