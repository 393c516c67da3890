"""The review queue's SQL. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from attribution_service.conversions.decision import NewReview
from servicekit.pagination import CreatedRange, Keyset, PageQuery, Where, fetch_page
from servicekit.sql import Params

_REVIEW = Params(
    ("id", "tenant_id", "conversion_id", "program_id", "advocate_id", "risk_score"),
    types={"risk_score": "integer"},
)
_INSERT_REVIEWS = """
    INSERT INTO reviews ({names}, reasons)
    SELECT {names}, ARRAY(SELECT jsonb_array_elements_text(u.reasons::jsonb))
    FROM unnest({arrays}, ${reasons}::text[]) AS u({names}, reasons)
    ON CONFLICT (conversion_id) DO UPDATE SET reasons = EXCLUDED.reasons,
        risk_score = EXCLUDED.risk_score
""".format(  # noqa: S608
    names=", ".join(_REVIEW.names), arrays=_REVIEW.arrays(), reasons=_REVIEW.next
)


async def insert_reviews(conn: asyncpg.Connection, items: Sequence[NewReview]) -> None:
    """Open reviews of conversions screening flagged (ids chosen by the caller)."""
    await conn.execute(
        _INSERT_REVIEWS, *_REVIEW.columns(items), [json.dumps(i.reasons) for i in items]
    )


@dataclass(frozen=True)
class ReviewFilter:
    status: str | None = None
    program_id: str | None = None
    advocate_id: str | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def review_page(
    conn: asyncpg.Connection, tenant_id: str, f: ReviewFilter, page: PageQuery
) -> list[asyncpg.Record]:
    """Riskiest first, then by id (a review's risk score is fixed when it opens), with the
    advocate's risk counts joined."""
    where = Where().add("r.tenant_id = {}", tenant_id).maybe("r.status = {}", f.status)
    where.maybe("r.program_id = {}", f.program_id).maybe("r.advocate_id = {}", f.advocate_id)
    f.created.apply(where, "r.created_at")
    select = f"""
        SELECT r.*, {RISK_FIRST.id_sql} AS queue_key, k.denied AS advocate_denied,
               k.flagged AS advocate_flagged, k.max_score AS advocate_max_score
        FROM reviews r
        LEFT JOIN advocate_risk k ON k.advocate_id = r.advocate_id
    """  # noqa: S608  (no input is formatted in)
    return await fetch_page(conn, select, where, page, RISK_FIRST)


# The queue's order as one text key: 100 - score, zero-padded, then the id.
RISK_FIRST = Keyset(
    time=None, id="queue_key", id_sql="(to_char(100 - r.risk_score, 'FM000') || r.id)"
)


async def get_review(
    conn: asyncpg.Connection, tenant_id: str, review_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = (
        "SELECT * FROM reviews WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
        if lock
        else "SELECT * FROM reviews WHERE id = $1 AND tenant_id = $2"
    )
    return await conn.fetchrow(sql, review_id, tenant_id)


async def close_review(
    conn: asyncpg.Connection, review_id: str, status: str, reason: str, decided_by: str | None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE reviews SET status = $2, decision_reason = $3, decided_by = $4, decided_at = now()
        WHERE id = $1 RETURNING *
        """,
        review_id,
        status,
        reason,
        decided_by,
    )
    assert row is not None
    return row


async def reviews_by_ids(
    conn: asyncpg.Connection, tenant_id: str, review_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The tenant's reviews of these ids, locked, in a fixed order (two bulk decisions on
    overlapping reviews cannot deadlock)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM reviews WHERE tenant_id = $1 AND id = ANY($2::text[])"
        " ORDER BY id FOR UPDATE",
        tenant_id,
        list(review_ids),
    )
    return rows


async def open_reviews_of_conversions(
    conn: asyncpg.Connection, tenant_id: str, conversion_ids: Sequence[str]
) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM reviews WHERE tenant_id = $1 AND status = 'open'"
        " AND conversion_id = ANY($2::text[]) ORDER BY risk_score DESC, id",
        tenant_id,
        list(conversion_ids),
    )
    return [r["id"] for r in rows]


async def insert_audit(
    conn: asyncpg.Connection,
    *,
    audit_id: str,
    tenant_id: str,
    decision: str,
    review_ids: Sequence[str],
    changed_ids: Sequence[str],
    reason: str,
    decided_by: str | None,
    key_id: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO review_audit (id, tenant_id, decision, review_ids, changed_ids, reason,
                                  decided_by, key_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        audit_id,
        tenant_id,
        decision,
        list(review_ids),
        list(changed_ids),
        reason,
        decided_by,
        key_id or None,
    )
