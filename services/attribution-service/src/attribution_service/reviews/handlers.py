"""The review queue: conversions screening flagged wait here for a person to approve (the
conversion is attributed and earns) or deny (it never earns)."""

from __future__ import annotations

import asyncpg

from attribution_service.conversions import domain
from attribution_service.conversions import handlers as conversions
from attribution_service.conversions import repository as conversion_repository
from attribution_service.conversions.events import conversion_type
from attribution_service.events import EVENTS
from attribution_service.programs import repository as programs
from attribution_service.reviews import repository
from referral_events.contracts import attribution as out
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
        raise NotFound(f"no review '{review_id}'", field="review_id")
    wanted = "approved" if approve else "denied"
    if review["status"] == wanted:
        return review
    if review["status"] != "open":
        raise Conflict(f"review '{review_id}' is already {review['status']}", field="review_id")
    review = await repository.close_review(conn, review_id, wanted, reason, decided_by)
    conv = await conversion_repository.get_conversion(
        conn, tenant_id, review["conversion_id"], lock=True
    )
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
            k = await programs.get_click(conn, conv["click_id"])
            click = conversions.click_of(k) if k else None
        cand = domain.Candidate(
            conv["evidence"], review["program_id"], review["advocate_id"], click=click
        )
        await conversions.attribute(conn, conv, cand, None, review_id=review_id, review=note)
    else:
        await conversion_repository.set_conversion_status(
            conn, conv["id"], "rejected", "deny", None, False, None, note
        )
        await EVENTS.emit(
            conn,
            tenant_id=tenant_id,
            payload=out.ConversionRejected(
                conversion_id=conv["id"],
                program_id=review["program_id"],
                advocate_id=review["advocate_id"],
                conversion_type=conversion_type(conv["type"], conv["custom_type"]),
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
