"""Use cases of the advocate's side: minting a token, the portal settings, GET /v1/me from the
read model, and the consumers that feed it (attribution and reward events) and enroll converted
friends. Each takes the caller's connection (the edge's transaction) and never commits."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from link_service.advocates import domain as advocates_domain
from link_service.advocates import handlers as advocates
from link_service.domain import Links
from link_service.events import EVENTS
from link_service.portal import domain, repository
from link_service.portal.schemas import PortalSettingsIn
from link_service.programs.handlers import get_program
from referral_events import CloudEvent
from referral_events.contracts import attribution as att
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw
from servicekit.ids import new_id
from servicekit.problems import Forbidden, NotFound

REFERRALS_SHOWN = 50

# ---------------------------------------------------------------------------- tokens


async def mint_token(
    conn: asyncpg.Connection,
    tenant_id: str,
    advocate_id: str,
    ttl_seconds: int | None,
    keys: Sequence[str],
    default_ttl_seconds: int,
    now: datetime,
) -> tuple[str, domain.AdvocateClaims]:
    """A token for one advocate of the caller's tenant (another tenant's advocate: 404)."""
    view = await advocates.get_advocate(conn, tenant_id, advocate_id)
    claims = domain.AdvocateClaims(
        tenant_id=tenant_id,
        program_id=view.advocate["program_id"],
        advocate_id=advocate_id,
        expires_at=now + domain.token_ttl(ttl_seconds, default_ttl_seconds),
    )
    return domain.mint(claims, keys, now), claims


async def token_holder(
    conn: asyncpg.Connection, claims: domain.AdvocateClaims
) -> advocates.AdvocateView:
    """The advocate a verified token names, if it still is who the token says: of that tenant
    and that program (403 otherwise: a token cannot be pointed at someone else)."""
    try:
        view = await advocates.get_advocate(conn, claims.tenant_id, claims.advocate_id)
    except NotFound as exc:
        raise Forbidden("this token names no advocate of its tenant") from exc
    if view.advocate["program_id"] != claims.program_id:
        raise Forbidden("this token names an advocate of another program")
    return view


# ---------------------------------------------------------------------------- settings


async def get_settings(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> asyncpg.Record:
    await get_program(conn, tenant_id, program_id)
    row = await repository.get_settings(conn, program_id)
    if row is None:
        defaults = PortalSettingsIn()
        row = await repository.put_settings(
            conn,
            tenant_id=tenant_id,
            program_id=program_id,
            allowed_origins=defaults.allowed_origins,
            auto_enroll=defaults.auto_enroll,
            cookie_days=defaults.cookie_days,
            reminder_max=defaults.reminder_max,
            reminder_interval_days=defaults.reminder_interval_days,
        )
    return row


async def put_settings(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, cmd: PortalSettingsIn
) -> asyncpg.Record:
    await get_program(conn, tenant_id, program_id)
    origins = sorted(
        {
            domain.normalise_origin(o, f"/allowed_origins/{i}")
            for i, o in enumerate(cmd.allowed_origins)
        }
    )
    return await repository.put_settings(
        conn,
        tenant_id=tenant_id,
        program_id=program_id,
        allowed_origins=origins,
        auto_enroll=cmd.auto_enroll,
        cookie_days=cmd.cookie_days,
        reminder_max=cmd.reminder_max,
        reminder_interval_days=cmd.reminder_interval_days,
    )


async def storefront_config(conn: asyncpg.Connection, program_id: str) -> asyncpg.Record:
    row = await repository.get_settings(conn, program_id)
    if row is None:
        raise NotFound(f"no storefront settings for '{program_id}'", field="/program_id")
    return row


async def preflight_allowed(conn: asyncpg.Connection, origin: str | None) -> bool:
    """A preflight carries no token, so no program: it passes for an origin some program
    allows; the request that follows is checked against its token's program."""
    return origin is not None and await repository.origin_known(conn, origin)


# ---------------------------------------------------------------------------- GET /v1/me


@dataclass(frozen=True)
class Me:
    page: asyncpg.Record  # repository.advocate_page
    share: tuple[advocates.ShareLink, ...]

    @property
    def allowed_origins(self) -> list[str]:
        return list(self.page["allowed_origins"] or [])


async def me(conn: asyncpg.Connection, claims: domain.AdvocateClaims, links: Links) -> Me:
    """One statement: the hot path of the refer-a-friend page. The holder is checked as
    token_holder checks it (of the token's tenant, and of its program)."""
    page = await repository.advocate_page(
        conn, claims.tenant_id, claims.advocate_id, REFERRALS_SHOWN
    )
    if page is None:
        raise Forbidden("this token names no advocate of its tenant")
    if page["program_id"] != claims.program_id:
        raise Forbidden("this token names an advocate of another program")
    share = _share_links(
        page["code"],
        page["name"],
        page["program_id"],
        page["program_name"],
        page["program_share_templates"],
        links.base_url,
    )
    return Me(page, share)


@functools.lru_cache(maxsize=4096)
def _share_links(
    code: str,
    advocate_name: str | None,
    program_id: str,
    program_name: str,
    templates_json: str,
    base_url: str,
) -> tuple[advocates.ShareLink, ...]:
    """advocates.channel_links, kept per replica by everything it is a function of (the
    program's messages as their JSON text): a page read again renders no template and quotes
    no URL, and a new code, name or message is a new key. At most 4096 advocates' links (a
    few MB)."""
    program = {
        "id": program_id,
        "name": program_name,
        "share_templates": json.loads(templates_json),
    }
    return tuple(advocates.channel_links(code, advocate_name, program, Links(base_url)))


# ---------------------------------------------------------------------------- consumers


async def on_referral_attributed(
    conn: asyncpg.Connection, event: CloudEvent, payload: att.ReferralAttributed
) -> None:
    await repository.upsert_referral(
        conn,
        referral_id=payload.referral_id,
        tenant_id=event.tenantid,
        advocate_id=payload.advocate_id,
        friend_label=domain.mask_friend(payload.friend_email, payload.friend_customer_id),
        at=payload.attributed_at,
        relabel=True,
    )
    await repository.link_conversion(conn, payload.conversion_id, payload.referral_id)


async def on_conversion_attributed(
    conn: asyncpg.Connection, event: CloudEvent, payload: att.ConversionAttributed, links: Links
) -> None:
    # Attribution emits referral.attributed first on the same key; a conversion arriving alone
    # (a replay of one topic range) still gets its referral, labelled without the email.
    await repository.upsert_referral(
        conn,
        referral_id=payload.referral_id,
        tenant_id=event.tenantid,
        advocate_id=payload.advocate_id,
        friend_label=domain.mask_friend(None, payload.friend_customer_id),
        at=payload.occurred_at,
        relabel=False,
    )
    await repository.link_conversion(conn, payload.conversion_id, payload.referral_id)
    await repository.settle_rewarded(conn, payload.referral_id, payload.conversion_id)
    if payload.conversion_type == "signup":
        await repository.mark_referral(conn, payload.referral_id, "signed_up")
    elif payload.conversion_type == "purchase":
        await repository.mark_referral(conn, payload.referral_id, "purchased")
    await _enroll_friend(conn, event.tenantid, payload, links)


async def _enroll_friend(
    conn: asyncpg.Connection, tenant_id: str, payload: att.ConversionAttributed, links: Links
) -> None:
    """The viral loop: a friend who converts becomes an advocate when the program says so,
    once (enrollment is idempotent per customer), remembering who referred them."""
    settings = await repository.get_settings(conn, payload.program_id)
    if settings is None or not domain.enrolls_friend(
        settings["auto_enroll"], payload.conversion_type
    ):
        return
    program = await get_program(conn, tenant_id, payload.program_id)
    if program["status"] == "ended":
        return
    candidate = advocates_domain.NewAdvocate(
        advocate_id=new_id("adv"),
        customer_id=payload.friend_customer_id,
        profile=advocates_domain.Profile(None, None, None, False),
        referred_by=payload.advocate_id,
    )
    enrolled = await advocates.enroll(conn, tenant_id, program, [candidate], links)
    if not enrolled:
        return  # already an advocate: their first enrollment said who referred them, if anyone
    friend = enrolled[0]
    await EVENTS.emit(
        conn,
        ev.FriendConverted(
            advocate_id=payload.advocate_id,
            program_id=payload.program_id,
            friend_advocate_id=friend.advocate["id"],
            friend_customer_id=payload.friend_customer_id,
            friend_code=friend.code,
            friend_link_url=links.link(friend.code),
            conversion_id=payload.conversion_id,
            conversion_type=payload.conversion_type,
            converted_at=payload.occurred_at,
        ),
        tenant_id=tenant_id,
        key=payload.advocate_id,
    )


async def on_conversion_refunded(
    conn: asyncpg.Connection, event: CloudEvent, payload: att.ConversionRefunded
) -> None:
    if payload.full:
        await repository.mark_referral_of(conn, payload.conversion_id, "refunded")


RewardStateEvent = rw.RewardPending | rw.RewardAvailable | rw.RewardVoided | rw.RewardClawedBack


async def on_reward_state(
    conn: asyncpg.Connection, event: CloudEvent, payload: RewardStateEvent
) -> None:
    """The advocate's own rewards (a friend's reward is theirs, not the advocate's)."""
    if payload.role != "advocate":
        return
    if isinstance(payload, rw.RewardClawedBack):
        await repository.reduce_reward(conn, payload.reward_id, payload.amount)
        return
    if isinstance(payload, rw.RewardVoided):
        amount = payload.remaining_amount
        state = "voided" if amount == 0 else "pending"
    else:
        amount = payload.amount
        state = "pending" if isinstance(payload, rw.RewardPending) else "available"
    await repository.upsert_reward(
        conn,
        reward_id=payload.reward_id,
        advocate_id=payload.advocate_id,
        conversion_id=payload.conversion_id,
        unit=payload.unit,
        amount=amount,
        state=state,
    )
    if state != "voided":
        await repository.mark_referral_of(conn, payload.conversion_id, "rewarded")


async def on_reward_redeemed(
    conn: asyncpg.Connection, event: CloudEvent, payload: rw.RewardRedeemed
) -> None:
    if payload.role != "advocate":
        return
    await repository.insert_redemption(
        conn,
        redemption_id=payload.redemption_id,
        advocate_id=payload.advocate_id or payload.holder_id,
        unit=payload.unit,
        amount=payload.amount,
    )


async def on_milestone_reached(
    conn: asyncpg.Connection, event: CloudEvent, payload: rw.MilestoneReached
) -> None:
    await repository.set_milestone(
        conn, payload.advocate_id, payload.referral_count, payload.milestone
    )


async def allowed_origins(conn: asyncpg.Connection, program_id: str) -> list[str]:
    settings = await repository.get_settings(conn, program_id)
    return list(settings["allowed_origins"]) if settings else []


# ---------------------------------------------------------------------------- reminders


async def send_due_reminders(
    conn: asyncpg.Connection, now: datetime, links: Links, limit: int
) -> int:
    """One batch of the reminder schedule: new advocates put on it, due reminders decided
    (domain.reminder_step) and each sent one emitted as advocate.share_reminder_due, which
    notification-service and webhooks act on. Returns how many rows it handled."""
    scheduled = await repository.schedule_reminders(conn, limit)
    due = await repository.claim_due_reminders(conn, now, limit)
    for r in due:
        step = domain.reminder_step(
            sent=r["sent"],
            max_reminders=r["reminder_max"],
            shared=r["shared"],
            consent=r["marketing_consent"],
            blocked=r["blocked"],
        )
        sent = r["sent"] + (1 if step.send else 0)
        await repository.advance_reminder(
            conn,
            r["advocate_id"],
            sent=sent,
            due_at=r["due_at"] + timedelta(days=r["reminder_interval_days"]),
            done=step.done,
        )
        if step.send:
            await EVENTS.emit(
                conn,
                ev.ShareReminderDue(
                    advocate_id=r["advocate_id"],
                    program_id=r["program_id"],
                    reminder=sent,
                    max_reminders=r["reminder_max"],
                    code=r["code"],
                    link_url=links.link(r["code"]),
                    due_at=r["due_at"],
                ),
                tenant_id=r["tenant_id"],
                key=r["advocate_id"],
            )
    return scheduled + len(due)
