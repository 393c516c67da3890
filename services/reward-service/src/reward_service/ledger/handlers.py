"""Ledger use cases: balances, statements, verify. They take the edge's connection and never
commit."""

from __future__ import annotations

import asyncpg

from reward_service.ledger import domain, repository
from reward_service.programs import handlers as programs
from servicekit.pagination import PageQuery


async def get_balances(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[domain.Balance]:
    """The holder's balances; 404 for a holder neither heard of nor holding an account."""
    balances = domain.balances(await repository.holder_entries(conn, tenant_id, holder_id))
    if not balances:
        await programs.require_holder(conn, tenant_id, holder_id)
    return balances


async def get_statement(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    """A page of the holder's entries (ledger.repository.STATEMENT order); 404 for a holder
    neither heard of nor holding an account."""
    lines = await repository.statement(conn, tenant_id, holder_id, page)
    if not lines:
        await programs.require_holder(conn, tenant_id, holder_id)
    return lines


async def verify(conn: asyncpg.Connection, tenant_id: str | None) -> domain.VerifyReport:
    """Every unit sums to zero, every balance equals its entries, no orphan or double-posted
    transfer, every reward's and redemption's postings match what they record."""
    return domain.VerifyReport.of(await repository.verify_problems(conn, tenant_id))
