"""Conversions that wait for evidence not seen yet: a click or code arriving decides those
that named it (under the evidence lock, see handlers.wait_or_decide), and those still waiting
after the grace period are decided without it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import asyncpg

from attribution_service.conversions import repository
from attribution_service.conversions.facts import Conversion
from attribution_service.conversions.handlers import decide_conversion


@asynccontextmanager
async def evidence_arriving(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> AsyncIterator[None]:
    """Around recording a copy of a click or code: the evidence lock before (see
    handlers.wait_or_decide), then the conversions that waited for it decided."""
    await repository.lock_evidence(conn, [(tenant_id, click_id, code_key)])
    yield
    await resolve_pending(conn, tenant_id, click_id=click_id, code_key=code_key)


async def resolve_pending(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> int:
    """Decide conversions that were waiting for this click or code (the other piece of
    evidence they name may still be missing)."""
    decided = 0
    for row in await repository.pending_waiting_for(
        conn, tenant_id, click_id=click_id, code_key=code_key
    ):
        conv = Conversion.of(row)
        evidence = await repository.evidence_context(conn, conv)
        if evidence.unseen(conv):
            continue
        await decide_conversion(conn, conv, evidence)
        decided += 1
    return decided


async def decide_overdue(
    conn: asyncpg.Connection, grace: timedelta, now: datetime, limit: int = 100
) -> int:
    """Conversions whose evidence never arrived within the grace period are decided without
    it; the evidence is remembered as expired, so later conversions naming it are refused."""
    overdue = await repository.pending_overdue(conn, now - grace, limit)
    for row in overdue:
        conv = Conversion.of(row)
        evidence = await repository.evidence_context(conn, conv)
        missing = []
        if conv.code_key and evidence.code_tenant is None:
            await repository.mark_expired_evidence(conn, conv.tenant_id, "code", conv.code_key)
            missing.append(f"code {conv.code_key}")
        if conv.click_id and evidence.click_tenant is None:
            await repository.mark_expired_evidence(conn, conv.tenant_id, "click", conv.click_id)
            missing.append(f"click {conv.click_id}")
        note = f"not seen within the {int(grace.total_seconds())}s grace period: " + ", ".join(
            missing
        )
        await decide_conversion(conn, conv, evidence, note=note)
    return len(overdue)
