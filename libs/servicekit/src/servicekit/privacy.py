"""Each service's part of a personal data request (docs/privacy.md), written once.

A service declares, per table of its schema, which text/jsonb columns hold personal data
(`PersonalTable.personal`, its PERSONAL_DATA marker) and which do not (`other`), how to find
one person's rows (`match`) and what erasure does to them (`erase`: column -> SQL expression, or
delete the rows). `export` and `erase` run those declarations in the caller's transaction;
`handle_request` is the consumer of `privacy.requested.v1` every service routes to: tombstones,
erasure or export, and the `privacy.part_done.v1` confirmation, all in the inbox transaction.

`match` and `erase` expressions see the table as `t` and the subject as `s`: `s.tenant`,
`s.customers` (customer ids), `s.emails` (lower-case), `s.advocates` (advocate ids),
`s.tombstones` (the request's keyed hashes), and
`pseudo(column)` gives the column's pseudonym (the request's mapping, computed by link-service
with PRIVACY_HASH_KEY; an id it did not know gets a random one).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from referral_events import CloudEvent
from referral_events.contracts.privacy import PrivacyPartDone, PrivacyRequested
from referral_events.emitter import Emitter
from referral_events.privacy import record


@dataclass(frozen=True)
class PersonalTable:
    """One table's PERSONAL_DATA marker and its part in export and erasure."""

    table: str
    # text/jsonb columns holding personal data (docs/privacy.md lists them)
    personal: frozenset[str]
    # text/jsonb columns holding none (ids of things, codes, states, settings)
    other: frozenset[str] = frozenset()
    # SQL predicate on `t` and `s` finding one person's rows; None: no row is one person's
    match: str | None = None
    # column -> SQL expression; None with a `match`: erasure deletes the rows; {}: exported,
    # nothing erased (ids of things) or rewritten by the service (`rewritten_by`)
    erase: dict[str, str] | None = None
    # why the columns are personal, or how they leave (the table's line in docs/privacy.md)
    note: str = ""
    # False: erased, never exported (copies of events: the export has the rows they came from)
    export: bool = True
    # the service's function that rewrites the person out of this table's JSON copies
    rewritten_by: str = ""

    def columns(self) -> frozenset[str]:
        return self.personal | self.other


def pseudo(column: str) -> str:
    """The pseudonym of `t.column` (see the module docstring)."""
    return (  # a column name from a registry, never input
        f"coalesce((SELECT m.v FROM unnest(s.pk, s.pv) AS m(k, v) WHERE m.k = t.{column}),"  # noqa: S608
        " 'erased_' || md5(random()::text))"
    )


_SUBJECT = """
WITH s AS (SELECT $1::text AS tenant, $2::text[] AS customers, $3::text[] AS emails,
                  $4::text[] AS advocates, $5::text[] AS pk, $6::text[] AS pv,
                  $7::text[] AS tombstones)
"""

# Every service's outbox: events already published that name the person go at once (the relay
# would prune them OUTBOX_KEEP_PUBLISHED_HOURS later); unpublished ones go out and are dropped
# by the consumers' tombstone check, then pruned.
OUTBOX = PersonalTable(
    "outbox",
    personal=frozenset({"payload"}),
    other=frozenset({"event_id", "headers", "key", "last_error", "topic"}),
    match="t.published_at IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(s.customers || s.emails"
    " || s.advocates) AS i WHERE position(convert_to(i, 'UTF8') IN t.payload) > 0)",
    erase=None,
    export=False,
    note="copies of published events, pruned 72 h after publishing (`OUTBOX_KEEP_PUBLISHED_HOURS`; "
    "link-service deletes each as it is published); the erasure deletes those naming the person "
    "at once",
)


@dataclass(frozen=True)
class Subject:
    tenant_id: str
    customer_ids: list[str]
    emails: list[str]
    advocate_ids: list[str]
    pseudonyms: dict[str, str] = field(default_factory=dict)
    tombstones: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, tenant_id: str, p: PrivacyRequested) -> Subject:
        return cls(
            tenant_id,
            list(p.customer_ids),
            [e.strip().lower() for e in p.emails],
            list(p.advocate_ids),
            dict(p.pseudonyms),
            list(p.tombstones),
        )

    def args(self) -> tuple[Any, ...]:
        return (
            self.tenant_id,
            self.customer_ids,
            self.emails,
            self.advocate_ids,
            list(self.pseudonyms),
            list(self.pseudonyms.values()),
            self.tombstones,
        )


async def export(
    conn: asyncpg.Connection, tables: Sequence[PersonalTable], subject: Subject
) -> dict[str, list[Any]]:
    """Every row of the subject's, whole, per table (tables without rows left out)."""
    document: dict[str, list[Any]] = {}
    for t in tables:
        if t.match is None or not t.export:
            continue
        rows = await conn.fetch(
            f"{_SUBJECT} SELECT to_jsonb(t)::text AS r FROM {t.table} AS t, s WHERE {t.match}",  # noqa: S608
            *subject.args(),
        )
        if rows:
            document[t.table] = [json.loads(r["r"]) for r in rows]
    return document


async def erase(
    conn: asyncpg.Connection, tables: Sequence[PersonalTable], subject: Subject
) -> dict[str, int]:
    """Erase or pseudonymise the subject's rows of every table; rows touched per table. Tables
    are taken in order (a table whose `match` reads another's columns comes before it)."""
    counts: dict[str, int] = {}
    for t in tables:
        if t.match is None or t.erase == {}:
            continue  # {}: exported, nothing to erase
        if t.erase is None:
            sql = f"{_SUBJECT} DELETE FROM {t.table} AS t USING s WHERE {t.match}"  # noqa: S608
        else:
            sets = ", ".join(f"{c} = {expr}" for c, expr in t.erase.items())
            sql = f"{_SUBJECT} UPDATE {t.table} AS t SET {sets} FROM s WHERE {t.match}"  # noqa: S608
        status = await conn.execute(sql, *subject.args())
        n = int(status.split()[-1])
        if n:
            counts[t.table] = n
    return counts


def chunks(document: object, size: int) -> list[str]:
    """The document's JSON in slices of at most `size` characters (at least one slice)."""
    text = json.dumps(document, separators=(",", ":"), sort_keys=True, default=str)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# A service's own additions to its erasure (rows a declaration cannot reach: copies of payloads)
Extra = Callable[[asyncpg.Connection, Subject], Awaitable[dict[str, int]]]


def request_handler(
    service: str,
    tables: Sequence[PersonalTable],
    emitter: Emitter,
    extra_erase: Extra | None = None,
) -> Callable[[asyncpg.Connection, CloudEvent, Any], Awaitable[None]]:
    """The consumer of `privacy.requested.v1` for one service (its `privacy.handlers`)."""

    async def handle(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, PrivacyRequested)
        await handle_request(conn, event, payload, service, tables, emitter, extra_erase)

    return handle


async def handle_request(
    conn: asyncpg.Connection,
    event: CloudEvent,
    p: PrivacyRequested,
    service: str,
    tables: Sequence[PersonalTable],
    emitter: Emitter,
    extra_erase: Extra | None = None,
) -> None:
    subject = Subject.of(event.tenantid, p)
    for part in await do_part(conn, p, subject, service, tables, extra_erase):
        await emitter.emit(
            conn,
            part,
            tenant_id=event.tenantid,
            key=p.request_id,
            event_id=f"{p.request_id}:{service}:{part.index}",
        )


async def do_part(
    conn: asyncpg.Connection,
    p: PrivacyRequested,
    subject: Subject,
    service: str,
    tables: Sequence[PersonalTable],
    extra_erase: Extra | None = None,
) -> list[PrivacyPartDone]:
    """This service's part, in the caller's transaction: the confirmation(s) to send."""
    now = datetime.now(UTC)
    if p.kind == "erasure":
        await record(conn, p.request_id, p.tombstones)
        rows = await erase(conn, tables, subject)
        if extra_erase is not None:
            for table, n in (await extra_erase(conn, subject)).items():
                rows[table] = rows.get(table, 0) + n
        return [
            PrivacyPartDone(
                request_id=p.request_id, service=service, kind="erasure", rows=rows, done_at=now
            )
        ]
    document = await export(conn, tables, subject)
    parts = chunks(document, p.chunk_bytes)
    return [
        PrivacyPartDone(
            request_id=p.request_id,
            service=service,
            kind="export",
            index=i,
            count=len(parts),
            chunk=c,
            rows={table: len(rows) for table, rows in document.items()},
            done_at=now,
        )
        for i, c in enumerate(parts)
    ]


# Fields that name a person wherever they appear in an event's payload (the union of the
# contracts' PERSONAL_DATA and the profile fields beside them).
NAMED_FIELDS = frozenset(
    {
        "email",
        "friend_email",
        "name",
        "display_name",
        "locale",
        "friend_locale",
        "ip_hash",
        "device_hash",
        # an advocate's attributes (the merchant's facts about them)
        "changes",
        # the merchant's free text on a redemption or payout of theirs
        "reference",
    }
)


def scrub_json(value: Any, subject: Subject) -> Any:
    """A copy of an event (or any JSON) without the person: their customer ids become their
    pseudonyms (inside free text too), their addresses go, and every object that names them
    loses its `NAMED_FIELDS` (an advocate event's name and address, a redemption's note)."""
    ids = set(subject.customer_ids) | set(subject.advocate_ids)
    emails = set(subject.emails)

    def names(v: Any) -> bool:
        return isinstance(v, str) and (v in ids or v.strip().lower() in emails)

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            named = any(names(x) for x in v.values())
            return {k: (None if named and k in NAMED_FIELDS else walk(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            if v in subject.pseudonyms:
                return subject.pseudonyms[v]
            if v.strip().lower() in emails:
                return None
            return within(v)
        return v

    def within(text: str) -> str:
        """An identifier inside free text: an id becomes its pseudonym, an address goes."""
        for old, new in subject.pseudonyms.items():
            text = text.replace(old, new)
        lowered = text.lower()
        for email in emails:
            at = lowered.find(email)
            while at >= 0:
                text = text[:at] + text[at + len(email) :]
                lowered = text.lower()
                at = lowered.find(email)
        return text

    return walk(value)


async def scrub_text_column(
    conn: asyncpg.Connection, table: str, key: str, column: str, subject: Subject, scope: str
) -> int:
    """Rewrite the JSON documents in `table.column` that mention the person (`scrub_json`);
    `scope` is an SQL predicate on `t` and `s` (the tenant). Rows rewritten."""
    rows = await conn.fetch(
        f"{_SUBJECT} SELECT t.{key} AS k, t.{column} AS v FROM {table} AS t, s WHERE {scope}"  # noqa: S608
        " AND EXISTS (SELECT 1 FROM unnest(s.customers || s.emails || s.advocates) AS i"
        f" WHERE strpos(lower(t.{column}), lower(i)) > 0)",
        *subject.args(),
    )
    if not rows:
        return 0
    await conn.execute(
        f"UPDATE {table} AS t SET {column} = u.v FROM unnest($1::text[], $2::text[]) AS u(k, v)"  # noqa: S608
        f" WHERE t.{key} = u.k",
        [r["k"] for r in rows],
        [json.dumps(scrub_json(json.loads(r["v"]), subject)) for r in rows],
    )
    return len(rows)
