"""Use cases of personal data requests. A request is recorded (who asked, when; the subject
only as tombstones), link-service does its own part in the same transaction, and the request
fans out as `privacy.requested.v1`; the other services' `privacy.part_done.v1` are folded in
until all four have answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from link_service.events import EVENTS, SERVICE
from link_service.privacy import domain, repository
from link_service.privacy.registry import PERSONAL_DATA
from link_service.workspaces.repository import insert_audit
from referral_events import CloudEvent
from referral_events.contracts.privacy import PrivacyPartDone, PrivacyRequested, RequestKind
from servicekit.ids import new_id
from servicekit.privacy import Subject, do_part
from servicekit.problems import NotFound


async def request(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    requested_by: str,
    kind: RequestKind,
    customer_id: str | None,
    email: str | None,
    key: bytes,
    chunk_bytes: int,
) -> asyncpg.Record:
    advocates = await repository.advocates_of(conn, tenant_id, customer_id, email)
    ids = domain.identifiers(customer_id, email, advocates)
    tombstones = ids.tombstones(key, tenant_id)
    request_id = new_id("prq")
    row = await repository.insert_request(
        conn,
        request_id=request_id,
        tenant_id=tenant_id,
        kind=kind,
        subject=tombstones,
        requested_by=requested_by,
    )
    await insert_audit(
        conn,
        workspace_id=tenant_id,
        actor_key_id=requested_by,
        action=f"privacy.{kind}.requested",
        target_id=request_id,
        # counts, never the identifiers
        details={
            "customer_ids": len(ids.customer_ids),
            "emails": len(ids.emails),
            "advocates": len(ids.advocate_ids),
        },
    )
    payload = PrivacyRequested(
        request_id=request_id,
        kind=kind,
        customer_ids=ids.customer_ids,
        emails=ids.emails,
        advocate_ids=ids.advocate_ids,
        tombstones=tombstones,
        pseudonyms=ids.pseudonyms(key, tenant_id) if kind == "erasure" else {},
        chunk_bytes=chunk_bytes,
        requested_at=row["requested_at"],
    )
    # link-service's own part, in this transaction
    for part in await do_part(
        conn, payload, Subject.of(tenant_id, payload), SERVICE, PERSONAL_DATA
    ):
        await repository.insert_part(conn, request_id, _part(part))
    await EVENTS.emit(conn, payload, tenant_id=tenant_id, key=request_id)
    return row


def _part(p: PrivacyPartDone) -> domain.Part:
    return domain.Part(p.service, p.index, p.count, p.chunk, dict(p.rows), p.done_at)


async def on_part_done(conn: asyncpg.Connection, event: CloudEvent, p: PrivacyPartDone) -> None:
    """A service's part (or one chunk of it); the request completes with the last one."""
    row = await repository.get_request(conn, event.tenantid, p.request_id, lock=True)
    if row is None or p.service not in domain.SERVICES:
        return  # not this workspace's request: nothing to fold
    await repository.insert_part(conn, p.request_id, _part(p))
    if row["completed_at"] is not None:
        return
    parts = await repository.parts_of(conn, p.request_id, chunks=False)
    if domain.complete(parts) and await repository.mark_completed(conn, p.request_id):
        await insert_audit(
            conn,
            workspace_id=event.tenantid,
            actor_key_id=row["requested_by"],
            action=f"privacy.{row['kind']}.completed",
            target_id=p.request_id,
            details={"services": list(domain.SERVICES), "at": datetime.now(UTC).isoformat()},
        )


async def status(conn: asyncpg.Connection, tenant_id: str, request_id: str) -> dict[str, Any]:
    row = await repository.get_request(conn, tenant_id, request_id)
    if row is None:
        raise NotFound(f"no privacy request {request_id}", field="/id")
    done = row["completed_at"] is not None
    with_document = done and row["kind"] == "export"
    parts = await repository.parts_of(conn, request_id, chunks=with_document)
    return {
        "id": row["id"],
        "kind": row["kind"],
        "status": "completed" if done else "pending",
        "requested_at": row["requested_at"],
        "requested_by": row["requested_by"],
        "completed_at": row["completed_at"],
        "services": domain.progress(parts),
        "document": domain.document(parts) if with_document else None,
    }
