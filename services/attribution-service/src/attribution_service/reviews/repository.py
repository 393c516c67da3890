"""The review queue's SQL. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from attribution_service.conversions.decision import NewReview
from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page
from servicekit.sql import Params

_REVIEW = Params(("id", "tenant_id", "conversion_id", "program_id", "advocate_id"))
_INSERT_REVIEWS = """
    INSERT INTO reviews ({names}, reasons)
    SELECT {names}, ARRAY(SELECT jsonb_array_elements_text(u.reasons::jsonb))
    FROM unnest({arrays}, ${reasons}::text[]) AS u({names}, reasons)
    ON CONFLICT (conversion_id) DO UPDATE SET reasons = EXCLUDED.reasons
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
    where = Where().add("tenant_id = {}", tenant_id).maybe("status = {}", f.status)
    where.maybe("program_id = {}", f.program_id).maybe("advocate_id = {}", f.advocate_id)
    f.created.apply(where)
    return await fetch_page(conn, "SELECT * FROM reviews", where, page)


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
