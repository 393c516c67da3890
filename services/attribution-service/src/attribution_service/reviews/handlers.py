"""The review queue: conversions screening flagged wait here for a person to approve (the
conversion is attributed and earns) or deny (it never earns)."""

from __future__ import annotations

import asyncpg

from attribution_service.conversions import decision
from attribution_service.conversions import handlers as conversions
from attribution_service.conversions import repository as conversion_repository
from attribution_service.conversions.domain import Candidate
from attribution_service.conversions.facts import Conversion
from attribution_service.events import EVENTS
from attribution_service.reviews import repository
from referral_events.contracts import attribution as out
from servicekit.pagination import PageQuery
from servicekit.problems import Conflict, NotFound


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
        raise NotFound(f"no review '{review_id}'", field="/review_id")
    wanted = "approved" if approve else "denied"
    if review["status"] == wanted:
        return review
    if review["status"] != "open":
        raise Conflict(f"review '{review_id}' is already {review['status']}", field="/review_id")
    review = await repository.close_review(conn, review_id, wanted, reason, decided_by)
    conv = await conversion_repository.get_conversion(
        conn, tenant_id, review["conversion_id"], lock=True
    )
    assert conv is not None
    decided_at = review["decided_at"]
    note: dict[str, object] = {
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
    conversion = Conversion.of(conv)
    click = None
    if approve and conv["evidence"] == "click" and conv["click_id"]:
        click = await conversion_repository.get_click(conn, conv["click_id"])
    cand = Candidate(conv["evidence"], review["program_id"], review["advocate_id"], click=click)
    decided = decision.reviewed(
        conversion,
        cand,
        approve=approve,
        review_id=review_id,
        reasons=review["reasons"],
        note=note,
    )
    await conversions.record(conn, [decided], stored=True)
    return review


async def review_page(
    conn: asyncpg.Connection, tenant_id: str, f: repository.ReviewFilter, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.review_page(conn, tenant_id, f, page)


async def get_review(conn: asyncpg.Connection, tenant_id: str, review_id: str) -> asyncpg.Record:
    review = await repository.get_review(conn, tenant_id, review_id)
    if review is None:
        raise NotFound(f"no review '{review_id}'", field="/review_id")
    return review
