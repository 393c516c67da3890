"""SQL of reward rules. Functions take the caller's connection: the edge owns the transaction.

The definition column is passed and read as text (`::text::jsonb`, `::text`), so the functions
work the same on the service's pool (which has a jsonb codec) and on a bare connection (tests,
bench)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from reward_service.rules import domain
from servicekit import audience
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


# --- copies from link.events: segments, advocates' attribute changes ----------------------------


async def upsert_segments(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, segments: list[Any], version: int
) -> None:
    """Keeps the newest version (an older one arriving late changes nothing)."""
    await conn.execute(
        """
        INSERT INTO program_segments (tenant_id, program_id, segments, version)
        VALUES ($1, $2, $3::text::jsonb, $4)
        ON CONFLICT (tenant_id, program_id) DO UPDATE
            SET segments = excluded.segments, version = excluded.version
            WHERE program_segments.version < excluded.version
        """,
        tenant_id,
        program_id,
        json.dumps(segments),
        version,
    )


async def program_segments(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> tuple[audience.Segment, ...]:
    doc: str | None = await conn.fetchval(
        "SELECT segments::text FROM program_segments WHERE tenant_id = $1 AND program_id = $2",
        tenant_id,
        program_id,
    )
    return audience.segments_from_json(json.loads(doc)) if doc else ()


async def insert_attribute_change(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    change: audience.Change,
) -> None:
    await conn.execute(
        """
        INSERT INTO advocate_attribute_changes (tenant_id, advocate_id, change, program_id,
                                                effective_at, changes)
        VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
        ON CONFLICT DO NOTHING
        """,
        tenant_id,
        advocate_id,
        change.change,
        program_id,
        change.effective_at,
        json.dumps(dict(change.changes)),
    )


async def attribute_changes(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, until: datetime
) -> list[audience.Change]:
    """The advocate's attribute changes in force by `until`."""
    rows = await conn.fetch(
        """
        SELECT change, effective_at, changes::text AS changes FROM advocate_attribute_changes
        WHERE tenant_id = $1 AND advocate_id = $2 AND effective_at <= $3
        """,
        tenant_id,
        advocate_id,
        until,
    )
    return [audience.Change(r["change"], r["effective_at"], json.loads(r["changes"])) for r in rows]


# --- experiment winners promoted to the rule (attribution's reward_rule.promoted.v1) -----------


async def promotion_recorded(conn: asyncpg.Connection, tenant_id: str, experiment_id: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM rule_promotions WHERE tenant_id = $1 AND experiment_id = $2)",
        tenant_id,
        experiment_id,
    )
    return found


async def insert_promotion(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    experiment_id: str,
    program_id: str,
    variant: str,
    event_id: str,
    forced: bool,
    outcome: str,
    rule_version_id: str | None,
    detail: str | None,
    field: str | None,
    promoted_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO rule_promotions (tenant_id, experiment_id, program_id, variant, event_id,
            forced, outcome, rule_version_id, detail, field, promoted_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT DO NOTHING
        """,
        tenant_id,
        experiment_id,
        program_id,
        variant,
        event_id,
        forced,
        outcome,
        rule_version_id,
        detail,
        field,
        promoted_at,
    )


async def promotion_of_version(
    conn: asyncpg.Connection, tenant_id: str, rule_version_id: str
) -> asyncpg.Record | None:
    """The promotion that wrote this version, if one did."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT experiment_id, variant, forced, promoted_at FROM rule_promotions
        WHERE tenant_id = $1 AND rule_version_id = $2 AND outcome = 'applied'
        """,
        tenant_id,
        rule_version_id,
    )
    return row
