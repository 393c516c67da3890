"""Ledger use cases: balances, statements, verify. They take the edge's connection and never
commit."""

from __future__ import annotations

import asyncpg

from reward_service.ledger import domain, repository


async def get_balances(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[domain.Balance]:
    return domain.balances(await repository.holder_entries(conn, tenant_id, holder_id))


async def get_statement(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str, after: int, limit: int
) -> tuple[list[domain.StatementLine], int | None]:
    """A page of the holder's entries and the cursor of the next page (None on the last)."""
    lines = await repository.statement(conn, tenant_id, holder_id, after, limit + 1)
    return domain.statement_page(lines, limit)


async def verify(conn: asyncpg.Connection, tenant_id: str | None) -> domain.VerifyReport:
    """Every unit sums to zero, every balance equals its entries, no orphan or double-posted
    transfer, every reward's and redemption's postings match what they record."""
    return domain.VerifyReport.of(await repository.verify_problems(conn, tenant_id))
