"""The review queue: conversions screening flagged wait here for a person to approve (the
conversion is attributed and earns) or deny (it never earns)."""

from __future__ import annotations

import asyncpg

from attribution_service.conversions import decision, fraud
from attribution_service.conversions import handlers as conversions
from attribution_service.conversions import repository as conversion_repository
from attribution_service.conversions.domain import Candidate
from attribution_service.conversions.facts import Conversion
from attribution_service.events import EVENTS
from attribution_service.programs import repository as programs
from attribution_service.programs.domain import DEFAULT_SETTINGS, ProgramSettings
from attribution_service.reviews import repository
from referral_events.contracts import attribution as out
from servicekit.ids import new_id
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
    stored = await programs.get_settings(conn, review["program_id"])
    decided = decision.reviewed(
        conversion,
        cand,
        approve=approve,
        review_id=review_id,
        reasons=review["reasons"],
        note=note,
        settings=ProgramSettings.model_validate(stored["settings"]) if stored else DEFAULT_SETTINGS,
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


async def cluster_review_ids(
    conn: asyncpg.Connection, tenant_id: str, review: asyncpg.Record
) -> list[str]:
    """The open reviews of the other conversions of the clusters the ring rule named for this
    review's conversion (offered for one decision after a deny)."""
    conv = await conversion_repository.get_conversion(conn, tenant_id, review["conversion_id"])
    if conv is None:
        return []
    checks = (conv["explanation"] or {}).get("checks", [])
    ids = {
        cid
        for c in checks
        if c.get("check") == "ring"
        for cluster in c.get("clusters", [])
        for cid in cluster.get("conversion_ids", [])
        if cid != conv["id"]
    }
    return await repository.open_reviews_of_conversions(conn, tenant_id, sorted(ids)) if ids else []


async def decide_bulk(
    conn: asyncpg.Connection,
    tenant_id: str,
    review_ids: list[str],
    *,
    approve: bool,
    reason: str,
    decided_by: str | None,
    key_id: str,
) -> tuple[str, list[asyncpg.Record], list[str]]:
    """One decision on many reviews, all or nothing: an unknown review is 404, one already
    given the opposite decision 409 (each naming its place in `review_ids`); those given this
    decision already stay as they are. Every bulk decision is recorded in the audit log with
    who made it (the key and `decided_by`) and what it changed. Returns the audit id, the
    reviews as they are now (in the order named) and the ids this call decided."""
    wanted = "approved" if approve else "denied"
    unique = list(dict.fromkeys(review_ids))
    found = {r["id"]: r for r in await repository.reviews_by_ids(conn, tenant_id, unique)}
    for i, rid in enumerate(review_ids):
        row = found.get(rid)
        if row is None:
            raise NotFound(f"no review '{rid}'", field=f"/review_ids/{i}")
        if row["status"] not in ("open", wanted):
            raise Conflict(f"review '{rid}' is already {row['status']}", field=f"/review_ids/{i}")
    changed = [rid for rid in unique if found[rid]["status"] == "open"]
    for rid in changed:
        found[rid] = await decide_review(
            conn, tenant_id, rid, approve=approve, reason=reason, decided_by=decided_by
        )
    audit_id = new_id("rva")
    await repository.insert_audit(
        conn,
        audit_id=audit_id,
        tenant_id=tenant_id,
        decision="approve" if approve else "deny",
        review_ids=unique,
        changed_ids=changed,
        reason=reason,
        decided_by=decided_by,
        key_id=key_id,
    )
    return audit_id, [found[rid] for rid in unique], changed


async def advocate_risk(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str
) -> dict[str, object]:
    """An advocate's risk: referrals denied and flagged, the riskiest, the score (0-100) and
    whether the platform blocked them. An advocate without any: all zero (404 only for an
    advocate this tenant does not have)."""
    adv = await programs.get_advocate(conn, advocate_id)
    if adv is None or adv["tenant_id"] != tenant_id:
        raise NotFound(f"no advocate '{advocate_id}'", field="advocate_id")
    row = await conversion_repository.advocate_risk(conn, tenant_id, advocate_id)
    denied, flagged, riskiest = (
        (row["denied"], row["flagged"], row["max_score"]) if row else (0, 0, 0)
    )
    return {
        "advocate_id": advocate_id,
        "denied": denied,
        "flagged": flagged,
        "riskiest_conversion_score": riskiest,
        "risk_score": fraud.advocate_score(denied=denied, flagged=flagged, max_score=riskiest),
        "auto_blocked_at": row["blocked_at"] if row else None,
    }
