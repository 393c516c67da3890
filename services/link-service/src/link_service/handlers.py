"""Use cases of link-service. Each takes the caller's connection (the edge's transaction),
changes state through the repository and emits the implied events through the outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from link_service import bulk, domain, repository
from link_service.events import EVENTS
from link_service.schemas import (
    AdvocateIn,
    AdvocatePatch,
    ProgramIn,
    ProgramPatch,
)
from referral_events.contracts import link as ev
from referral_events.envelope import EventPayload
from referral_events.outbox import enqueue_rows
from servicekit.ids import new_id
from servicekit.problems import Conflict, DomainError, InvalidInput, NotFound

CODE_ATTEMPTS = 8


class TooManyChanges(DomainError):
    status = 429
    title = "Too many changes"


@dataclass(frozen=True)
class Links:
    """What handlers need to know about the service's public side."""

    base_url: str
    default_code_length: int

    def link(self, code: str) -> str:
        return domain.share_link(self.base_url, code, None, "")


# ---------------------------------------------------------------------------- programs


def program_format(program: asyncpg.Record) -> domain.CodeFormat:
    return domain.CodeFormat(
        length=program["code_length"],
        alphabet=program["code_alphabet"],
        prefix=program["code_prefix"],
    )


def _program_values(cmd: ProgramIn, default_code_length: int) -> dict[str, Any]:
    """Validated column values of a whole program."""
    domain.check_window(cmd.starts_at, cmd.ends_at)
    fmt = domain.validate_code_format(
        cmd.code_format.length or default_code_length,
        cmd.code_format.alphabet,
        cmd.code_format.prefix,
    )
    return {
        "name": cmd.name,
        "status": cmd.status,
        "landing_url": cmd.landing_url,
        "allowed_domains": domain.normalize_domains(
            cmd.landing_url, cmd.allowed_domains, cmd.fallback_url
        ),
        "starts_at": cmd.starts_at,
        "ends_at": cmd.ends_at,
        "fallback_url": cmd.fallback_url,
        "default_locale": cmd.default_locale,
        "code_length": fmt.length,
        "code_alphabet": fmt.alphabet,
        "code_prefix": fmt.prefix,
        "vanity_allowed": cmd.vanity_allowed,
        "share_templates": domain.validate_share_templates(cmd.share_templates),
    }


def program_state(program: asyncpg.Record) -> dict[str, Any]:
    """The program as its events carry it (whole state)."""
    return {
        "program_id": program["id"],
        "name": program["name"],
        "status": program["status"],
        "landing_url": program["landing_url"],
        "allowed_domains": list(program["allowed_domains"]),
        "starts_at": program["starts_at"],
        "ends_at": program["ends_at"],
        "fallback_url": program["fallback_url"],
        "default_locale": program["default_locale"],
        "code_format": ev.CodeFormat(
            length=program["code_length"],
            alphabet=program["code_alphabet"],
            prefix=program["code_prefix"],
        ),
        "vanity_allowed": program["vanity_allowed"],
        "share_templates": dict(program["share_templates"]),
        "version": program["version"],
    }


async def create_program(
    conn: asyncpg.Connection, tenant_id: str, cmd: ProgramIn, links: Links
) -> asyncpg.Record:
    program = await repository.insert_program(
        conn,
        program_id=new_id("prg"),
        tenant_id=tenant_id,
        values=_program_values(cmd, links.default_code_length),
    )
    await EVENTS.emit(
        conn,
        ev.ProgramCreated(**program_state(program)),
        tenant_id=tenant_id,
        key=program["id"],
    )
    return program


async def get_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    program = await repository.get_program(conn, tenant_id, program_id, for_update=for_update)
    if program is None:
        raise NotFound(f"no program '{program_id}'", field="program_id")
    return program


async def list_programs(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await repository.list_programs(conn, tenant_id)


async def update_program(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    change: ProgramIn | ProgramPatch,
    links: Links,
) -> asyncpg.Record:
    """PUT (a whole ProgramIn) or PATCH (only the fields sent). Emits the whole new state."""
    old = await get_program(conn, tenant_id, program_id, for_update=True)
    if isinstance(change, ProgramPatch):
        current = ProgramIn(
            name=old["name"],
            landing_url=old["landing_url"],
            allowed_domains=list(old["allowed_domains"]),
            status=old["status"],
            starts_at=old["starts_at"],
            ends_at=old["ends_at"],
            fallback_url=old["fallback_url"],
            default_locale=old["default_locale"],
            code_format={
                "length": old["code_length"],
                "alphabet": old["code_alphabet"],
                "prefix": old["code_prefix"],
            },
            vanity_allowed=old["vanity_allowed"],
            share_templates=dict(old["share_templates"]),
        )
        sent = change.model_dump(include=change.model_fields_set)
        for name in ("name", "landing_url", "status", "default_locale", "vanity_allowed"):
            if name in sent and sent[name] is None:
                raise InvalidInput(f"{name} cannot be null", field=name)
        cmd = current.model_copy(update=sent)
        cmd = ProgramIn.model_validate(cmd.model_dump())
    else:
        cmd = change
    domain.check_status_change(old["status"], cmd.status)
    program = await repository.update_program(
        conn,
        program_id=program_id,
        tenant_id=tenant_id,
        values=_program_values(cmd, links.default_code_length),
    )
    await EVENTS.emit(
        conn,
        ev.ProgramUpdated(**program_state(program)),
        tenant_id=tenant_id,
        key=program["id"],
    )
    return program


# ---------------------------------------------------------------------------- advocates


@dataclass(frozen=True)
class AdvocateView:
    advocate: asyncpg.Record
    code: str
    aliases: list[str]


@dataclass(frozen=True)
class Enrollment:
    view: AdvocateView
    created: bool


def _advocate_state(advocate: asyncpg.Record, code: str, links: Links) -> dict[str, Any]:
    return {
        "advocate_id": advocate["id"],
        "program_id": advocate["program_id"],
        "customer_id": advocate["customer_id"],
        "email": advocate["email"],
        "name": advocate["name"],
        "locale": advocate["locale"],
        "marketing_consent": advocate["marketing_consent"],
        "blocked": advocate["blocked"],
        "code": code,
        "link_url": links.link(code),
        "version": advocate["version"],
    }


async def enroll_advocate(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, cmd: AdvocateIn, links: Links
) -> Enrollment:
    """Enrolling the same customer again returns the existing advocate and code."""
    program = await get_program(conn, tenant_id, program_id)
    advocate = await repository.insert_advocate(
        conn,
        advocate_id=new_id("adv"),
        tenant_id=tenant_id,
        program_id=program_id,
        customer_id=cmd.customer_id,
        email=cmd.email,
        name=cmd.name,
        locale=cmd.locale,
        marketing_consent=cmd.marketing_consent,
    )
    if advocate is None:
        existing = await repository.get_advocate_by_customer(conn, program_id, cmd.customer_id)
        assert existing is not None
        return Enrollment(await _view(conn, existing), False)
    if program["status"] == "ended":
        raise Conflict("the program has ended; it takes no new advocates", field="program_id")

    code = await _issue_random_code(conn, tenant_id, program, advocate["id"])
    await EVENTS.emit(
        conn,
        ev.AdvocateEnrolled(**_advocate_state(advocate, code, links)),
        tenant_id=tenant_id,
        key=advocate["id"],
    )
    await EVENTS.emit(
        conn,
        ev.CodeCreated(
            code=code,
            advocate_id=advocate["id"],
            program_id=program_id,
            kind="random",
            link_url=links.link(code),
        ),
        tenant_id=tenant_id,
        key=advocate["id"],
    )
    return Enrollment(AdvocateView(advocate, code, []), True)


async def _issue_random_code(
    conn: asyncpg.Connection, tenant_id: str, program: asyncpg.Record, advocate_id: str
) -> str:
    # The primary key decides uniqueness; a collision just draws again.
    fmt = program_format(program)
    for _ in range(CODE_ATTEMPTS):
        code = domain.generate_code(fmt)
        if await repository.insert_code(
            conn,
            code=code,
            code_key=domain.code_key(code),
            tenant_id=tenant_id,
            program_id=program["id"],
            advocate_id=advocate_id,
            kind="random",
        ):
            return code
    raise Conflict("could not draw a free referral code; the code space is nearly full")


async def _view(conn: asyncpg.Connection, advocate: asyncpg.Record) -> AdvocateView:
    return AdvocateView(
        advocate,
        await repository.current_code(conn, advocate["id"]),
        await repository.aliases(conn, advocate["id"]),
    )


async def _get_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    advocate = await repository.get_advocate(conn, tenant_id, advocate_id, for_update=for_update)
    if advocate is None:
        raise NotFound(f"no advocate '{advocate_id}'", field="advocate_id")
    return advocate


async def get_advocate(conn: asyncpg.Connection, tenant_id: str, advocate_id: str) -> AdvocateView:
    return await _view(conn, await _get_advocate(conn, tenant_id, advocate_id))


async def update_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, cmd: AdvocatePatch, links: Links
) -> AdvocateView:
    old = await _get_advocate(conn, tenant_id, advocate_id, for_update=True)
    sent = cmd.model_dump(include=cmd.model_fields_set)
    merged = {k: sent.get(k, old[k]) for k in ("email", "name", "locale", "marketing_consent")}
    if merged["marketing_consent"] is None:
        merged["marketing_consent"] = False
    if all(merged[k] == old[k] for k in merged):
        return await _view(conn, old)
    advocate = await repository.update_advocate_profile(conn, advocate_id=advocate_id, **merged)
    view = await _view(conn, advocate)
    await EVENTS.emit(
        conn,
        ev.AdvocateUpdated(**_advocate_state(advocate, view.code, links)),
        tenant_id=tenant_id,
        key=advocate_id,
    )
    return view


async def set_blocked(
    conn: asyncpg.Connection,
    tenant_id: str,
    advocate_id: str,
    *,
    blocked: bool,
    reason: str | None = None,
) -> AdvocateView:
    """Idempotent: blocking a blocked advocate changes nothing and emits nothing."""
    old = await _get_advocate(conn, tenant_id, advocate_id, for_update=True)
    advocate = await repository.set_blocked(
        conn, advocate_id=advocate_id, blocked=blocked, reason=reason
    )
    if advocate is None:
        return await _view(conn, old)
    now = datetime.now(UTC)
    payload: EventPayload = (
        ev.AdvocateBlocked(
            advocate_id=advocate_id,
            program_id=advocate["program_id"],
            reason=reason,
            blocked_at=now,
            version=advocate["version"],
        )
        if blocked
        else ev.AdvocateUnblocked(
            advocate_id=advocate_id,
            program_id=advocate["program_id"],
            unblocked_at=now,
            version=advocate["version"],
        )
    )
    await EVENTS.emit(
        conn,
        payload,
        tenant_id=tenant_id,
        key=advocate_id,
    )
    return await _view(conn, advocate)


@dataclass(frozen=True)
class CodeLimits:
    max_changes: int
    window: timedelta


async def set_vanity_code(
    conn: asyncpg.Connection,
    tenant_id: str,
    advocate_id: str,
    requested: str,
    links: Links,
    limits: CodeLimits,
) -> tuple[AdvocateView, str | None]:
    """Makes `requested` the advocate's current code; the old one stays as an alias. Returns
    the view and the previous code (None when nothing changed)."""
    advocate = await _get_advocate(conn, tenant_id, advocate_id, for_update=True)
    program = await get_program(conn, tenant_id, advocate["program_id"])
    if not program["vanity_allowed"]:
        raise Conflict("this program does not allow vanity codes", field="code")
    code = domain.validate_vanity_code(requested)
    key = domain.code_key(code)
    existing = await repository.get_code(conn, key)
    if existing is not None and existing["advocate_id"] != advocate_id:
        raise Conflict(f"the code '{code}' is taken", field="code")
    if existing is not None and existing["current"]:
        return await _view(conn, advocate), None
    since = datetime.now(UTC) - limits.window
    if await repository.code_changes_since(conn, advocate_id, since) >= limits.max_changes:
        raise TooManyChanges(
            f"a code may change at most {limits.max_changes} times in {limits.window.days} days",
            field="code",
        )
    previous = await repository.retire_current_code(conn, advocate_id)
    if existing is not None:
        # Back to one of the advocate's own earlier codes.
        await repository.reinstate_code(conn, key)
        code = existing["code"]
    elif not await repository.insert_code(
        conn,
        code=code,
        code_key=key,
        tenant_id=tenant_id,
        program_id=advocate["program_id"],
        advocate_id=advocate_id,
        kind="vanity",
    ):
        raise Conflict(f"the code '{code}' is taken", field="code")
    await EVENTS.emit(
        conn,
        ev.CodeChanged(
            code=code,
            previous_code=previous,
            advocate_id=advocate_id,
            program_id=advocate["program_id"],
            kind="vanity",
            link_url=links.link(code),
            changed_at=datetime.now(UTC),
        ),
        tenant_id=tenant_id,
        key=advocate_id,
    )
    return await _view(conn, advocate), previous


# ---------------------------------------------------------------------------- codes and links


@dataclass(frozen=True)
class CodeLookup:
    row: asyncpg.Record
    can_earn: bool
    reason: str | None


async def lookup_code(conn: asyncpg.Connection, tenant_id: str, code: str) -> CodeLookup:
    if not domain.is_well_formed_code(code):
        raise NotFound(f"no referral code '{code}'", field="code")
    resolved = await repository.resolve_code(conn, domain.code_key(code))
    if resolved is None or resolved["tenant_id"] != tenant_id:
        raise NotFound(f"no referral code '{code}'", field="code")
    live = domain.program_is_live(
        resolved["program_status"], resolved["starts_at"], resolved["ends_at"], datetime.now(UTC)
    )
    reason = domain.inactive_reason(
        program_live=live, advocate_blocked=resolved["advocate_blocked"]
    )
    return CodeLookup(resolved, reason is None, reason)


@dataclass(frozen=True)
class ShareLink:
    channel: str
    url: str
    message: str
    intent_url: str | None


async def share_links(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, links: Links
) -> tuple[AdvocateView, list[ShareLink]]:
    view = await get_advocate(conn, tenant_id, advocate_id)
    program = await get_program(conn, tenant_id, view.advocate["program_id"])
    templates: dict[str, str] = dict(program["share_templates"])
    result = []
    for channel in domain.SHARE_CHANNELS:
        url = domain.share_link(links.base_url, view.code, channel, program["id"])
        message = domain.render_template(
            templates.get(channel, domain.DEFAULT_SHARE_TEMPLATE),
            {
                "link": url,
                "code": view.code,
                "name": view.advocate["name"] or "",
                "program": program["name"],
            },
        )
        intent = domain.share_intent(channel, message, url, subject=program["name"])
        result.append(ShareLink(channel, url, message, intent))
    return view, result


# ---------------------------------------------------------------------------- bulk enrollment


async def create_enrollment_job(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    parsed: bulk.ParsedFile,
) -> asyncpg.Record:
    program = await get_program(conn, tenant_id, program_id)
    if program["status"] == "ended":
        raise Conflict("the program has ended; it takes no new advocates", field="program_id")
    return await repository.insert_enrollment_job(
        conn,
        job_id=new_id("enj"),
        tenant_id=tenant_id,
        program_id=program_id,
        fmt=parsed.format,
        file_sha256=parsed.sha256,
        rows=parsed.rows,
    )


async def get_enrollment_job(
    conn: asyncpg.Connection, tenant_id: str, job_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    job = await repository.get_enrollment_job(conn, tenant_id, job_id)
    if job is None:
        raise NotFound(f"no enrollment job '{job_id}'", field="job_id")
    return job, await repository.enrollment_errors(conn, job_id, 0, 100)


async def enrollment_errors(
    conn: asyncpg.Connection, tenant_id: str, job_id: str, after_row: int, limit: int
) -> list[asyncpg.Record]:
    if await repository.get_enrollment_job(conn, tenant_id, job_id) is None:
        raise NotFound(f"no enrollment job '{job_id}'", field="job_id")
    return await repository.enrollment_errors(conn, job_id, after_row, limit)


async def enroll_chunk(conn: asyncpg.Connection, links: Links, chunk_rows: int) -> int | None:
    """Processes the next chunk of the oldest unfinished job, set-based (a few statements per
    chunk, not per row). Returns the rows processed, or None when no job waits."""
    job = await repository.claim_enrollment_job(conn)
    if job is None:
        return None
    tenant_id, program_id = job["tenant_id"], job["program_id"]
    rows = await repository.pending_rows(conn, job["id"], chunk_rows)
    if not rows:
        await repository.advance_enrollment_job(
            conn, job["id"], done=0, enrolled=0, existing=0, failed=0
        )
        return 0
    program = await get_program(conn, tenant_id, program_id)
    results: dict[int, tuple[int, str, str | None, str | None, str | None]] = {}
    wanted: dict[str, tuple[int, AdvocateIn]] = {}
    for row in rows:
        outcome = bulk.validate_row(json.loads(row["data"]))
        if isinstance(outcome, bulk.RowError):
            results[row["row_no"]] = (row["row_no"], "error", outcome.message, outcome.field, None)
        elif outcome.customer_id in wanted:
            results[row["row_no"]] = (row["row_no"], "existing", None, None, None)
        else:
            wanted[outcome.customer_id] = (row["row_no"], outcome)
    new = await repository.insert_advocates_bulk(
        conn,
        tenant_id=tenant_id,
        program_id=program_id,
        rows=[
            (new_id("adv"), a.customer_id, a.email, a.name, a.locale, a.marketing_consent)
            for _, a in wanted.values()
        ],
    )
    new_by_customer = {r["customer_id"]: r for r in new}
    codes = await _issue_random_codes_bulk(conn, tenant_id, program, [r["id"] for r in new])
    events = []
    for advocate in new:
        code = codes[advocate["id"]]
        state = {
            "advocate_id": advocate["id"],
            "program_id": program_id,
            "customer_id": advocate["customer_id"],
            "email": advocate["email"],
            "name": advocate["name"],
            "locale": advocate["locale"],
            "marketing_consent": advocate["marketing_consent"],
            "code": code,
            "link_url": links.link(code),
        }
        events.append(
            EVENTS.row(
                ev.AdvocateEnrolled(**state),
                tenant_id=tenant_id,
                key=advocate["id"],
            )
        )
        events.append(
            EVENTS.row(
                ev.CodeCreated(
                    code=code,
                    advocate_id=advocate["id"],
                    program_id=program_id,
                    kind="random",
                    link_url=links.link(code),
                ),
                tenant_id=tenant_id,
                key=advocate["id"],
            )
        )
    await enqueue_rows(conn, events)
    existing_ids = await repository.advocate_ids_by_customer(
        conn, program_id, [c for c in wanted if c not in new_by_customer]
    )
    for customer_id, (row_no, _) in wanted.items():
        if customer_id in new_by_customer:
            results[row_no] = (row_no, "enrolled", None, None, new_by_customer[customer_id]["id"])
        else:
            results[row_no] = (row_no, "existing", None, None, existing_ids.get(customer_id))
    await repository.finish_rows(conn, job["id"], list(results.values()))
    statuses = [r[1] for r in results.values()]
    await repository.advance_enrollment_job(
        conn,
        job["id"],
        done=len(results),
        enrolled=statuses.count("enrolled"),
        existing=statuses.count("existing"),
        failed=statuses.count("error"),
    )
    return len(results)


async def _issue_random_codes_bulk(
    conn: asyncpg.Connection, tenant_id: str, program: asyncpg.Record, advocate_ids: list[str]
) -> dict[str, str]:
    fmt = program_format(program)
    issued: dict[str, str] = {}
    missing = list(advocate_ids)
    for _ in range(CODE_ATTEMPTS):
        if not missing:
            return issued
        drawn = {a: domain.generate_code(fmt) for a in missing}
        # Two equal draws in one statement would collide on the key: keep the first only.
        seen: set[str] = set()
        batch = []
        for advocate_id, code in drawn.items():
            if code not in seen:
                seen.add(code)
                batch.append((code, advocate_id))
        won = await repository.insert_codes_bulk(
            conn, tenant_id=tenant_id, program_id=program["id"], codes=batch
        )
        issued.update({a: drawn[a] for a in won})
        missing = [a for a in missing if a not in won]
    if missing:
        raise Conflict("could not draw free referral codes; the code space is nearly full")
    return issued
