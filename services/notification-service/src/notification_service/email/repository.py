"""All SQL of email: contact and program copies, template overrides, suppressions and the email
queue. Functions take the caller's connection (the edge owns the transaction); nothing here
commits. Times that drive sending come in as arguments (the sender's injected clock)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from notification_service.db import any_row
from notification_service.email.domain import MailStatus, Wording
from servicekit.pagination import NEWEST, CreatedRange, Keyset, PageQuery, Where, fetch_page

# --- programs and contacts (copies of other services' facts) ----------------------------------


async def upsert_program(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    name: str,
    default_locale: str,
    version: int,
) -> None:
    """Whole state; an older version arriving late changes nothing."""
    await conn.execute(
        """
        INSERT INTO email_programs (tenant_id, program_id, name, default_locale, version)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tenant_id, program_id) DO UPDATE
        SET name = EXCLUDED.name, default_locale = EXCLUDED.default_locale,
            version = EXCLUDED.version, updated_at = now()
        WHERE email_programs.version <= EXCLUDED.version
        """,
        tenant_id,
        program_id,
        name,
        default_locale,
        version,
    )


async def get_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM email_programs WHERE tenant_id = $1 AND program_id = $2",
        tenant_id,
        program_id,
    )


async def upsert_advocate(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    advocate_id: str,
    program_id: str,
    email: str | None,
    name: str | None,
    locale: str | None,
    marketing_consent: bool,
    blocked: bool,
    code: str | None,
    link_url: str | None,
    version: int,
) -> asyncpg.Record | None:
    """The advocate's whole state from link-service; None when a newer one is already here.
    A state without a link keeps the link already known (code events may have come first)."""
    return await conn.fetchrow(
        """
        INSERT INTO email_contacts (tenant_id, kind, contact_id, program_id, email, name,
                                    locale, marketing_consent, blocked, code, link_url, version)
        VALUES ($1, 'advocate', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (tenant_id, kind, contact_id) DO UPDATE
        SET program_id = EXCLUDED.program_id, email = EXCLUDED.email, name = EXCLUDED.name,
            locale = EXCLUDED.locale, marketing_consent = EXCLUDED.marketing_consent,
            blocked = EXCLUDED.blocked,
            code = coalesce(EXCLUDED.code, email_contacts.code),
            link_url = coalesce(EXCLUDED.link_url, email_contacts.link_url),
            version = EXCLUDED.version, updated_at = now()
        WHERE email_contacts.version <= EXCLUDED.version
        RETURNING *
        """,
        tenant_id,
        advocate_id,
        program_id,
        email,
        name,
        locale,
        marketing_consent,
        blocked,
        code,
        link_url,
        version,
    )


async def advocate_blocked(conn: asyncpg.Connection, tenant_id: str, advocate_id: str) -> bool:
    blocked: bool | None = await conn.fetchval(
        """
        SELECT blocked FROM email_contacts
        WHERE tenant_id = $1 AND kind = 'advocate' AND contact_id = $2
        """,
        tenant_id,
        advocate_id,
    )
    return bool(blocked)


async def set_advocate_blocked(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, blocked: bool
) -> None:
    await conn.execute(
        """
        UPDATE email_contacts SET blocked = $3, updated_at = now()
        WHERE tenant_id = $1 AND kind = 'advocate' AND contact_id = $2
        """,
        tenant_id,
        advocate_id,
        blocked,
    )


async def set_advocate_link(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    advocate_id: str,
    program_id: str,
    code: str,
    link_url: str | None,
) -> asyncpg.Record:
    """The advocate's current code and link; creates the row (no address yet) when the code
    event is the first we hear of the advocate."""
    row = await conn.fetchrow(
        """
        INSERT INTO email_contacts (tenant_id, kind, contact_id, program_id, code, link_url)
        VALUES ($1, 'advocate', $2, $3, $4, $5)
        ON CONFLICT (tenant_id, kind, contact_id) DO UPDATE
        SET code = EXCLUDED.code,
            link_url = coalesce(EXCLUDED.link_url, email_contacts.link_url),
            updated_at = now()
        RETURNING *
        """,
        tenant_id,
        advocate_id,
        program_id,
        code,
        link_url,
    )
    assert row is not None
    return row


async def upsert_friend(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    friend_id: str,
    program_id: str,
    email: str,
    locale: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO email_contacts (tenant_id, kind, contact_id, program_id, email, locale)
        VALUES ($1, 'friend', $2, $3, $4, $5)
        ON CONFLICT (tenant_id, kind, contact_id) DO UPDATE
        SET program_id = EXCLUDED.program_id, email = EXCLUDED.email,
            locale = coalesce(EXCLUDED.locale, email_contacts.locale), updated_at = now()
        """,
        tenant_id,
        friend_id,
        program_id,
        email,
        locale,
    )


async def get_contact(
    conn: asyncpg.Connection, tenant_id: str, kind: str, contact_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT * FROM email_contacts WHERE tenant_id = $1 AND kind = $2 AND contact_id = $3"
    return await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), tenant_id, kind, contact_id)


# --- templates --------------------------------------------------------------------------------


async def template_overrides(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str
) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        """
        SELECT locale, subject, html, text_body FROM email_templates
        WHERE tenant_id = $1 AND program_id = $2 AND template = $3
        """,
        tenant_id,
        program_id,
        template,
    )
    return {
        r["locale"]: {"subject": r["subject"], "html": r["html"], "text": r["text_body"]}
        for r in rows
    }


async def put_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, wording: Wording
) -> asyncpg.Record:
    """The program's own wording of `template` in `wording.locale`."""
    row = await conn.fetchrow(
        """
        INSERT INTO email_templates (tenant_id, program_id, template, locale, subject, html,
                                     text_body)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (tenant_id, program_id, template, locale) DO UPDATE
        SET subject = EXCLUDED.subject, html = EXCLUDED.html, text_body = EXCLUDED.text_body,
            updated_at = now()
        RETURNING *
        """,
        tenant_id,
        program_id,
        template,
        wording.locale,
        wording.subject,
        wording.html,
        wording.text,
    )
    assert row is not None
    return row


async def get_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT * FROM email_templates
        WHERE tenant_id = $1 AND program_id = $2 AND template = $3 AND locale = $4
        """,
        tenant_id,
        program_id,
        template,
        locale,
    )


async def delete_template(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, template: str, locale: str
) -> bool:
    return await any_row(
        conn,
        """
        DELETE FROM email_templates
        WHERE tenant_id = $1 AND program_id = $2 AND template = $3 AND locale = $4
        RETURNING true
        """,
        tenant_id,
        program_id,
        template,
        locale,
    )


# A program's own wordings, by template then locale (byte order: whatever the collation), the
# order they always had; a program has a few dozen at most (its primary key finds them).
TEMPLATE_ORDER = Keyset(
    time=None, id="template_key", id_sql="(template || '/' || locale) COLLATE \"C\""
)


async def template_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {} AND program_id = {}", tenant_id, program_id)
    select = f"SELECT *, {TEMPLATE_ORDER.id_sql} AS template_key FROM email_templates"  # noqa: S608
    return await fetch_page(conn, select, where, page, TEMPLATE_ORDER)


# --- suppressions -----------------------------------------------------------------------------


async def suppress(
    conn: asyncpg.Connection, tenant_id: str, address: str, reason: str, detail: str | None
) -> asyncpg.Record:
    """First reason wins: a bounce recorded after an unsubscribe does not rewrite history."""
    row = await conn.fetchrow(
        """
        INSERT INTO email_suppressions (tenant_id, address, reason, detail)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, address) DO UPDATE SET address = EXCLUDED.address
        RETURNING *
        """,
        tenant_id,
        address,
        reason,
        detail,
    )
    assert row is not None
    return row


async def suppressed_as(conn: asyncpg.Connection, tenant_id: str, address: str) -> str | None:
    reason = await conn.fetchval(
        "SELECT reason FROM email_suppressions WHERE tenant_id = $1 AND address = $2",
        tenant_id,
        address,
    )
    return str(reason) if reason is not None else None


# Suppressions are ordered by a hash of the address, never the address: a cursor (in URLs
# and access logs) carries no personal data. Index email_suppressions_page.
SUPPRESSION_ORDER = Keyset(id="address_key", id_sql="md5(address)")


async def suppression_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    reason: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    where = created.apply(Where().add("tenant_id = {}", tenant_id).maybe("reason = {}", reason))
    select = "SELECT *, md5(address) AS address_key FROM email_suppressions"
    return await fetch_page(conn, select, where, page, SUPPRESSION_ORDER)


async def delete_suppression(conn: asyncpg.Connection, tenant_id: str, address: str) -> bool:
    return await any_row(
        conn,
        "DELETE FROM email_suppressions WHERE tenant_id = $1 AND address = $2 RETURNING true",
        tenant_id,
        address,
    )


# --- the email queue --------------------------------------------------------------------------


@dataclass(frozen=True)
class NewMail:
    """A mail to queue: which template, why (one mail per cause, recipient and template), to
    whom, and the facts its template shows."""

    tenant_id: str
    template: str
    cause_key: str
    recipient_kind: str
    recipient_id: str
    advocate_id: str | None
    program_id: str
    facts: dict[str, Any]
    # Invitees have no contact copy: their address travels with the mail.
    to_address: str | None = None
    # Default: the transaction's time.
    due: datetime | None = None


async def insert_email(conn: asyncpg.Connection, email_id: str, mail: NewMail) -> bool:
    """False when this (cause, recipient, template) already has its mail: the one thing that
    keeps a redelivered event from mailing twice."""
    return await any_row(
        conn,
        """
        INSERT INTO emails (id, tenant_id, template, cause_key, recipient_kind, recipient_id,
                            advocate_id, program_id, to_address, context, next_attempt_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, coalesce($11, now()))
        ON CONFLICT (tenant_id, cause_key, recipient_kind, recipient_id, template) DO NOTHING
        RETURNING true
        """,
        email_id,
        mail.tenant_id,
        mail.template,
        mail.cause_key,
        mail.recipient_kind,
        mail.recipient_id,
        mail.advocate_id,
        mail.program_id,
        mail.to_address,
        json.dumps(mail.facts),
        mail.due,
    )


async def invites_since(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, since: datetime
) -> int:
    count = await conn.fetchval(
        """
        SELECT count(*) FROM emails
        WHERE tenant_id = $1 AND advocate_id = $2 AND template = 'invite' AND created_at >= $3
        """,
        tenant_id,
        advocate_id,
        since,
    )
    return int(count or 0)


async def claim_due_emails(
    conn: asyncpg.Connection, *, now: datetime, lease_until: datetime, limit: int
) -> list[asyncpg.Record]:
    """Like webhook deliveries: the attempt is counted and next_attempt_at moved to the lease's
    end, so no lock is held while SMTP runs and a crashed sender's mail comes back."""
    return list(
        await conn.fetch(
            """
            WITH picked AS (
                SELECT id FROM emails
                WHERE status = 'queued' AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            )
            UPDATE emails e
            SET attempts = e.attempts + 1, next_attempt_at = $2, updated_at = $1
            FROM picked WHERE e.id = picked.id
            RETURNING e.*
            """,
            now,
            lease_until,
            limit,
        )
    )


@dataclass(frozen=True)
class Settlement:
    """What an attempt leaves of a mail: its status, when it is tried again (queued) and why
    it was not sent; the locale it went out in and where it went (unsubscribe acts on that)."""

    status: MailStatus
    next_attempt_at: datetime | None = None
    error: str | None = None
    suppressed_reason: str | None = None
    locale: str | None = None
    to_address: str | None = None
    skipped_reason: str | None = None


async def settle_email(
    conn: asyncpg.Connection, email_id: str, attempt: int, settlement: Settlement, at: datetime
) -> bool:
    """False when a newer claim of the mail took over (this one's lease ran out)."""
    return await any_row(
        conn,
        """
        UPDATE emails
        SET status = $3, next_attempt_at = $4, last_error = $5, suppressed_reason = $6,
            locale = coalesce($7, locale), to_address = coalesce($9, to_address),
            skipped_reason = $10,
            sent_at = CASE WHEN $3 = 'sent' THEN $8 ELSE sent_at END,
            updated_at = $8
        WHERE id = $1 AND attempts = $2 AND status = 'queued'
        RETURNING true
        """,
        email_id,
        attempt,
        settlement.status,
        settlement.next_attempt_at,
        settlement.error,
        settlement.suppressed_reason,
        settlement.locale,
        at,
        settlement.to_address,
        settlement.skipped_reason,
    )


async def get_email(conn: asyncpg.Connection, email_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM emails WHERE id = $1", email_id)


@dataclass(frozen=True)
class EmailLog:
    """Which mails the email log shows, newest first: all, or those of one recipient kind or
    id, program, template, status, creation time."""

    recipient_kind: str | None = None
    recipient_id: str | None = None
    program_id: str | None = None
    template: str | None = None
    status: str | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def email_page(
    conn: asyncpg.Connection, tenant_id: str, log: EmailLog, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id)
    where.maybe("recipient_kind = {}", log.recipient_kind)
    where.maybe("recipient_id = {}", log.recipient_id).maybe("program_id = {}", log.program_id)
    where.maybe("template = {}", log.template).maybe("status = {}", log.status)
    log.created.apply(where)
    select = """
        SELECT id, template, cause_key, recipient_kind, recipient_id, advocate_id,
               program_id, locale, status, suppressed_reason, skipped_reason, attempts,
               last_error, sent_at, created_at
        FROM emails
    """
    return await fetch_page(conn, select, where, page, NEWEST)


# --- retention ----------------------------------------------------------------------------------


async def clear_old_bodies(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Clears what at most `limit` settled mails created before `before` held of their body and
    recipient (the context the template showed, the address, the SMTP server's last words),
    skipping rows another replica holds. The rows stay: the mail log's counts, and the unique
    key that keeps a redelivered cause from mailing twice. Returns how many."""
    done: str = await conn.execute(
        """
        WITH old AS (
            SELECT id FROM emails
            WHERE created_at < $1 AND status <> 'queued'
              AND (context <> '{}'::jsonb OR to_address IS NOT NULL OR last_error IS NOT NULL)
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE emails e SET context = '{}'::jsonb, to_address = NULL, last_error = NULL
        FROM old WHERE e.id = old.id
        """,
        before,
        limit,
    )
    return int(done.split()[-1])
