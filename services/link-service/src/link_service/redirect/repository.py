"""SQL of the redirect: the code lookup (which the checkout's code lookup, GET /v1/codes/{code},
shares) and the clicks' group commit. Functions take the caller's connection; nothing here
commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from referral_events import outbox
from servicekit.sql import columns_of

# One click as the redirect records it, in CLICK_COLUMNS order.
ClickRow = tuple[
    str,  # id
    str,  # tenant_id
    str,  # code
    str,  # program_id
    str,  # advocate_id
    str | None,  # channel
    datetime,  # clicked_at
    str | None,  # user_agent_family
    str,  # device_class
    str | None,  # referrer_host
    str | None,  # ip_hash
    bool,  # is_bot
    bool,  # counts
    str | None,  # inactive_reason
]


async def resolve_code(conn: asyncpg.Connection, code_key: str) -> asyncpg.Record | None:
    """Everything a redirect or a checkout lookup needs, in one round trip."""
    return await conn.fetchrow(
        """
        SELECT c.code, c.current, c.tenant_id, c.program_id, c.advocate_id,
               cur.code AS current_code,
               p.status AS program_status, p.starts_at, p.ends_at, p.landing_url,
               p.fallback_url, p.allowed_domains,
               a.blocked AS advocate_blocked
        FROM codes c
        JOIN programs p ON p.id = c.program_id
        JOIN advocates a ON a.id = c.advocate_id
        JOIN codes cur ON cur.advocate_id = c.advocate_id AND cur.current
        WHERE c.code_key = $1
        """,
        code_key,
    )


CLICK_COLUMNS = (
    "id",
    "tenant_id",
    "code",
    "program_id",
    "advocate_id",
    "channel",
    "clicked_at",
    "user_agent_family",
    "device_class",
    "referrer_host",
    "ip_hash",
    "is_bot",
    "counts",
    "inactive_reason",
)
CLICK_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "boolean",
    "boolean",
    "text",
)
_INSERT_CLICKS = f"""
INSERT INTO clicks ({", ".join(CLICK_COLUMNS)})
SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(CLICK_TYPES, 1))})
"""  # noqa: S608
_CLICKS_AND_OUTBOX_QUIET = f"""
WITH clicks_in AS ({_INSERT_CLICKS})
{outbox.insert_rows_sql(len(CLICK_TYPES) + 1, idempotent=False)}
"""
_CLICKS_AND_OUTBOX = f"""
WITH clicks_in AS ({_INSERT_CLICKS}),
outbox_in AS ({outbox.insert_rows_sql(len(CLICK_TYPES) + 1, idempotent=False)} RETURNING 1)
SELECT pg_notify(current_schema() || '_outbox', '') FROM (SELECT 1 FROM outbox_in LIMIT 1) x
"""  # noqa: S608


async def insert_clicks_with_events(
    conn: asyncpg.Connection,
    clicks: Sequence[ClickRow],
    events: Sequence[outbox.OutboxRow],
    *,
    notify: bool = True,
) -> None:
    """Clicks and their outbox rows in ONE statement (one round trip, atomic on its own).
    `clicks` rows follow CLICK_COLUMNS; events are outbox rows. `notify` wakes
    the relay at commit with NOTIFY; without it the caller wakes the relay itself (NOTIFY
    makes Postgres serialise the commits of all notifying transactions, WAL flush included,
    which defeats the group commit of concurrent writers)."""
    sql = _CLICKS_AND_OUTBOX if notify else _CLICKS_AND_OUTBOX_QUIET
    await conn.execute(sql, *columns_of(clicks, len(CLICK_COLUMNS)), *outbox.rows_of(events))
