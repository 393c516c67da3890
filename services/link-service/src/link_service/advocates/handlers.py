"""Use cases of advocates, their codes and share links. Each takes the caller's connection (the
edge's transaction), changes state through the repository and emits the implied events through
the outbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from link_service import domain as shared
from link_service.advocates import domain, events, repository
from link_service.advocates.schemas import AdvocateIn, AdvocatePatch
from link_service.audience.domain import Audience, attributes_of
from link_service.audience.handlers import audience_of
from link_service.domain import Links
from link_service.programs.domain import check_takes_new_advocates, stored_code_format
from link_service.programs.handlers import get_program
from link_service.redirect import repository as redirect_repository
from link_service.sightings import handlers as sightings
from referral_events import CloudEvent
from referral_events.contracts.attribution import AdvocateAutoBlocked
from referral_events.outbox import enqueue_rows
from servicekit import audience
from servicekit.ids import new_id
from servicekit.pagination import PageQuery
from servicekit.problems import Conflict, DomainError, InvalidInput, NotFound

CODE_ATTEMPTS = 8
# How far ahead of this service's clock a merchant's attribute change may be dated (clock skew):
# a change is recorded when it has happened, never scheduled.
FUTURE_SKEW = timedelta(minutes=1)


class TooManyChanges(DomainError):
    status = 429
    title = "Too many changes"
    type = "rate-limited"


@dataclass(frozen=True)
class AdvocateView:
    advocate: asyncpg.Record
    code: str
    aliases: list[str]


@dataclass(frozen=True)
class Enrollment:
    view: AdvocateView
    created: bool


@dataclass(frozen=True)
class Enrolled:
    advocate: asyncpg.Record
    code: str


# ---------------------------------------------------------------------------- enrollment


def new_advocate(cmd: AdvocateIn, aud: Audience | None = None) -> domain.NewAdvocate:
    """The enrollment, its attributes checked against the program's (`aud`) and its eligibility
    rules: a refusal is InvalidInput naming the rule, at the attribute's JSON pointer."""
    attrs: dict[str, Any] = {}
    if cmd.attributes:
        aud = aud or Audience()
        attrs = audience.merged({}, audience.attributes(cmd.attributes, aud.definitions))
    if aud is not None:
        refused = aud.eligibility.enroll_refusal(aud.segments, attrs)
        if refused is not None:
            rule, field, message = refused
            raise InvalidInput(f"not eligible ({rule}): {message}", field=field)
    return domain.NewAdvocate(
        advocate_id=new_id("adv"),
        customer_id=cmd.customer_id,
        profile=domain.Profile(cmd.email, cmd.name, cmd.locale, cmd.marketing_consent),
        attributes=attrs,
    )


async def enroll(
    conn: asyncpg.Connection,
    tenant_id: str,
    program: asyncpg.Record,
    candidates: Sequence[domain.NewAdvocate],
    links: Links,
) -> list[Enrolled]:
    """Enrolls the candidates not yet in the program, set-wise (a few statements, however many):
    each gets a random code, and its advocate.enrolled and code.created events. Returns only
    the newly enrolled; a customer already enrolled is left as is."""
    new = await repository.insert_advocates(
        conn, tenant_id=tenant_id, program_id=program["id"], advocates=candidates
    )
    codes = await _issue_random_codes(conn, tenant_id, program, [a["id"] for a in new])
    enrolled = [Enrolled(a, codes[a["id"]]) for a in new]
    # The attributes given at enrollment are the advocate's first change, in force from then.
    firsts = [
        (e.advocate["id"], 1, e.advocate["created_at"], attributes_of(e.advocate))
        for e in enrolled
        if e.advocate["attribute_changes"]
    ]
    await repository.insert_attribute_changes(conn, tenant_id, firsts)
    attribute_events = {
        a: events.attributes_changed(a, program["id"], n, changes, at)
        for a, n, at, changes in firsts
    }
    rows = []
    for e in enrolled:
        rows.append(
            events.outbox_row(events.advocate_enrolled(e.advocate, e.code, links), tenant_id)
        )
        rows.append(events.outbox_row(events.code_created(e.advocate, e.code, links), tenant_id))
        changed = attribute_events.get(e.advocate["id"])
        if changed is not None:
            rows.append(events.outbox_row(changed, tenant_id))
    await enqueue_rows(conn, rows)
    return enrolled


async def enroll_advocate(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    cmd: AdvocateIn,
    links: Links,
    *,
    seen: tuple[str | None, str | None] = (None, None),
) -> Enrollment:
    """Enrolling the same customer again returns the existing advocate and code. `seen`: the
    hashed network and device the call says the advocate is on (a sighting, either way)."""
    program = await get_program(conn, tenant_id, program_id)
    existing = await repository.get_advocate_by_customer(conn, program_id, cmd.customer_id)
    if existing is not None:
        return Enrollment(await _view(conn, existing), False)
    aud = await audience_of(conn, tenant_id, program_id)
    enrolled = await enroll(conn, tenant_id, program, [new_advocate(cmd, aud)], links)
    if not enrolled:
        existing = await repository.get_advocate_by_customer(conn, program_id, cmd.customer_id)
        assert existing is not None
        result = Enrollment(await _view(conn, existing), False)
    else:
        # Checked only now, as an ended program still answers for its existing advocates;
        # raising rolls the edge's transaction back, enrollment and events with it.
        check_takes_new_advocates(program["status"])
        result = Enrollment(AdvocateView(enrolled[0].advocate, enrolled[0].code, []), True)
    await sightings.record(
        conn,
        tenant_id=tenant_id,
        advocate_id=result.view.advocate["id"],
        program_id=program_id,
        source="enrollment",
        ip_hash=seen[0],
        device_hash=seen[1],
        now=datetime.now(UTC),
    )
    return result


async def _issue_random_codes(
    conn: asyncpg.Connection, tenant_id: str, program: asyncpg.Record, advocate_ids: list[str]
) -> dict[str, str]:
    """A new random code for each advocate. The primary key decides uniqueness; those whose
    draw collided draw again."""
    fmt = stored_code_format(program)
    issued: dict[str, str] = {}
    missing = list(advocate_ids)
    for _ in range(CODE_ATTEMPTS):
        if not missing:
            return issued
        drawn = {a: shared.generate_code(fmt) for a in missing}
        # Two equal draws in one statement would collide on the key: keep the first only.
        batch: dict[str, domain.NewCode] = {}
        for advocate_id, code in drawn.items():
            batch.setdefault(shared.code_key(code), domain.NewCode(code, advocate_id))
        won = await repository.insert_codes(
            conn,
            tenant_id=tenant_id,
            program_id=program["id"],
            kind="random",
            codes=list(batch.values()),
        )
        issued.update({a: drawn[a] for a in won})
        missing = [a for a in missing if a not in won]
    if missing:
        raise Conflict("could not draw a free referral code; the code space is nearly full")
    return issued


# ---------------------------------------------------------------------------- advocates


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
        raise NotFound(f"no advocate '{advocate_id}'", field="/advocate_id")
    return advocate


async def get_advocate(conn: asyncpg.Connection, tenant_id: str, advocate_id: str) -> AdvocateView:
    return await _view(conn, await _get_advocate(conn, tenant_id, advocate_id))


async def advocate_page(
    conn: asyncpg.Connection, tenant_id: str, f: repository.AdvocateFilter, page: PageQuery
) -> list[AdvocateView]:
    """One page of the tenant's advocates (of one program: 404 for one it does not have)."""
    if f.program_id is not None:
        await get_program(conn, tenant_id, f.program_id)
    rows = await repository.advocate_page(conn, tenant_id, f, page)
    return [AdvocateView(r, r["current_code"], list(r["alias_codes"])) for r in rows]


async def update_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, cmd: AdvocatePatch, links: Links
) -> AdvocateView:
    old = await _get_advocate(conn, tenant_id, advocate_id, for_update=True)
    current = domain.Profile(old["email"], old["name"], old["locale"], old["marketing_consent"])
    sent = cmd.model_dump(include=cmd.model_fields_set - {"attributes"})
    if cmd.attributes:
        old = await change_attributes(
            conn, tenant_id, advocate_id, cmd.attributes, None, at="/attributes"
        )
    if "marketing_consent" in sent and sent["marketing_consent"] is None:
        sent["marketing_consent"] = False  # consent is given or not; null is not
    profile = dataclasses.replace(current, **sent)
    if profile == current:
        return await _view(conn, old)
    advocate = await repository.update_profile(conn, advocate_id, profile)
    view = await _view(conn, advocate)
    await events.publish(conn, events.advocate_updated(advocate, view.code, links), tenant_id)
    return view


async def change_attributes(
    conn: asyncpg.Connection,
    tenant_id: str,
    advocate_id: str,
    changes: dict[str, Any],
    effective_at: datetime | None,
    *,
    at: str = "/changes",
) -> asyncpg.Record:
    """Records a change of the advocate's attributes in force from `effective_at` (now when
    None; never ahead of now), refolds the attributes in force now and emits
    advocate.attributes_changed. A change dated before later ones slots in by its date
    (servicekit.audience.state_at), here and in every service that keeps the changes."""
    advocate = await _get_advocate(conn, tenant_id, advocate_id, for_update=True)
    now = datetime.now(UTC)
    when = effective_at or now
    if when > now + FUTURE_SKEW:
        raise InvalidInput(
            "an attribute change is dated when it happened, not ahead", field="/effective_at"
        )
    aud = await audience_of(conn, tenant_id, advocate["program_id"])
    checked = audience.attributes(changes, aud.definitions, at)
    number = advocate["attribute_changes"] + 1
    await repository.insert_attribute_changes(
        conn, tenant_id, [(advocate_id, number, when, checked)]
    )
    history = [
        audience.Change(n, t, c)
        for n, t, c in await repository.attribute_changes(conn, advocate_id)
    ]
    updated = await repository.set_attributes(
        conn, advocate_id, audience.state_at(history, None), number
    )
    await events.publish(
        conn,
        events.attributes_changed(advocate_id, advocate["program_id"], number, checked, when),
        tenant_id,
    )
    return updated


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
    await events.publish(
        conn,
        events.advocate_blocked(advocate, reason, now)
        if blocked
        else events.advocate_unblocked(advocate, now),
        tenant_id,
    )
    return await _view(conn, advocate)


async def on_auto_blocked(
    conn: asyncpg.Connection, event: CloudEvent, payload: AdvocateAutoBlocked
) -> None:
    """Attribution blocked the advocate for their denied referrals (their program's
    auto_block): blocked here too, so the block is the one every service sees
    (advocate.blocked.v1). An advocate unknown here is left alone."""
    try:
        await set_blocked(
            conn,
            event.tenantid,
            payload.advocate_id,
            blocked=True,
            reason=f"blocked automatically: {payload.denied} referrals denied",
        )
    except NotFound:
        return


# ---------------------------------------------------------------------------- codes and links


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
        raise Conflict("this program does not allow vanity codes", field="/code")
    code = domain.validate_vanity_code(requested)
    key = shared.code_key(code)
    existing = await repository.get_code(conn, key)
    if existing is not None and existing["advocate_id"] != advocate_id:
        raise Conflict(f"the code '{code}' is taken", field="/code")
    if existing is not None and existing["current"]:
        return await _view(conn, advocate), None
    since = datetime.now(UTC) - limits.window
    if await repository.code_changes_since(conn, advocate_id, since) >= limits.max_changes:
        raise TooManyChanges(
            f"a code may change at most {limits.max_changes} times in {limits.window.days} days",
            field="/code",
        )
    previous = await repository.retire_current_code(conn, advocate_id)
    if existing is not None:
        # Back to one of the advocate's own earlier codes.
        await repository.reinstate_code(conn, key)
        code = existing["code"]
    elif not await repository.insert_codes(
        conn,
        tenant_id=tenant_id,
        program_id=advocate["program_id"],
        kind="vanity",
        codes=[domain.NewCode(code, advocate_id)],
    ):
        raise Conflict(f"the code '{code}' is taken", field="/code")
    await events.publish(
        conn, events.code_changed(advocate, code, previous, links, datetime.now(UTC)), tenant_id
    )
    return await _view(conn, advocate), previous


@dataclass(frozen=True)
class CodeLookup:
    row: asyncpg.Record
    can_earn: bool
    reason: str | None


async def lookup_code(conn: asyncpg.Connection, tenant_id: str, code: str) -> CodeLookup:
    if not shared.is_well_formed_code(code):
        raise NotFound(f"no referral code '{code}'", field="/code")
    resolved = await redirect_repository.resolve_code(conn, shared.code_key(code))
    if resolved is None or resolved["tenant_id"] != tenant_id:
        raise NotFound(f"no referral code '{code}'", field="/code")
    live = shared.program_is_live(
        resolved["program_status"], resolved["starts_at"], resolved["ends_at"], datetime.now(UTC)
    )
    reason = shared.inactive_reason(
        program_live=live, advocate_blocked=resolved["advocate_blocked"]
    )
    return CodeLookup(resolved, reason is None, reason)


@dataclass(frozen=True)
class ShareLink:
    channel: shared.Channel
    url: str
    message: str
    intent_url: str | None


async def share_links(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, links: Links
) -> tuple[AdvocateView, list[ShareLink]]:
    view = await get_advocate(conn, tenant_id, advocate_id)
    program = await get_program(conn, tenant_id, view.advocate["program_id"])
    return view, channel_links(view.code, view.advocate["name"], program, links)


def channel_links(
    code: str, advocate_name: str | None, program: Mapping[str, Any], links: Links
) -> list[ShareLink]:
    """Per channel the UTM-tagged link, the program's message and the share intent (for a
    caller that already holds the code and the program: `id`, `name`, `share_templates`)."""
    templates: dict[str, str] = dict(program["share_templates"])
    result = []
    for channel in shared.SHARE_CHANNELS:
        url = shared.share_link(links.base_url, code, channel, program["id"])
        message = domain.render_template(
            templates.get(channel, domain.DEFAULT_SHARE_TEMPLATE),
            {
                "link": url,
                "code": code,
                "name": advocate_name or "",
                "program": program["name"],
            },
        )
        intent = domain.share_intent(channel, message, url, subject=program["name"])
        result.append(ShareLink(channel, url, message, intent))
    return result
