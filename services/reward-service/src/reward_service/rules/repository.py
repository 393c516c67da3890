"""SQL of reward rules. Functions take the caller's connection: the edge owns the transaction.

The definition column is passed and read as text (`::text::jsonb`, `::text`), so the functions
work the same on the service's pool (which has a jsonb codec) and on a bare connection (tests,
bench)."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from reward_service.rules import domain
from servicekit.sql import Params

_VERSION = Params.typed(
    "id",
    "tenant_id",
    "program_id",
    "version",
    "valid_from",
    "hold_days",
    "definition::text::jsonb",
)
_INSERT_VERSION = _VERSION.insert("rule_versions", "RETURNING created_at")


def _rule(row: asyncpg.Record) -> domain.RuleVersion:
    return domain.RuleVersion(
        id=row["id"],
        tenant_id=row["tenant_id"],
        program_id=row["program_id"],
        version=row["version"],
        valid_from=row["valid_from"],
        created_at=row["created_at"],
        definition=domain.definition_from_json(json.loads(row["definition"])),
    )


async def lock_program_rules(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    """Serialises rule changes of one program until the transaction ends, so version numbers
    and valid_from are assigned one writer at a time."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"reward-rule\x1f{tenant_id}\x1f{program_id}",
    )


async def latest_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> domain.RuleVersion | None:
    return await rule_in_force(conn, tenant_id, program_id, None)


async def rule_in_force(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, at: datetime | None
) -> domain.RuleVersion | None:
    """The version with the latest valid_from <= `at` (any, when `at` is None). valid_from
    never decreases from one version to the next (domain.next_version), so the latest
    valid_from is also the highest version among those that qualify."""
    row = await conn.fetchrow(
        """
        SELECT id, tenant_id, program_id, version, valid_from, created_at,
               definition::text AS definition
        FROM rule_versions
        WHERE tenant_id = $1 AND program_id = $2
          AND ($3::timestamptz IS NULL OR valid_from <= $3)
        ORDER BY valid_from DESC, version DESC LIMIT 1
        """,
        tenant_id,
        program_id,
        at,
    )
    return _rule(row) if row else None


async def insert_rule_version(
    conn: asyncpg.Connection,
    *,
    rule_id: str,
    tenant_id: str,
    program_id: str,
    version: int,
    valid_from: datetime,
    definition: domain.RuleDefinition,
) -> domain.RuleVersion:
    created_at: datetime = await conn.fetchval(
        _INSERT_VERSION,
        rule_id,
        tenant_id,
        program_id,
        version,
        valid_from,
        definition.hold_days,
        json.dumps(domain.definition_to_json(definition)),
    )
    return domain.RuleVersion(
        rule_id, tenant_id, program_id, version, valid_from, definition, created_at
    )
