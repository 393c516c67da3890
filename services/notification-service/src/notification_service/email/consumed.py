"""What consumed events do for email: keep copies of the programs and contacts link- and
attribution-service publish, and queue the mails events cause (the advocate's welcome, rewards,
a friend's coupon, milestones). Each handler runs in the event's inbox transaction."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from notification_service.email import domain, queue, repository
from notification_service.webhooks import handlers as webhooks
from referral_events import CloudEvent, new_event
from referral_events.contracts import attribution, link, reward
from referral_events.contracts import notification as out
from servicekit.problems import InvalidInput

log = logging.getLogger(__name__)


# --- copies of other services' facts ----------------------------------------------------------


async def on_program(
    conn: asyncpg.Connection,
    event: CloudEvent,
    p: link.ProgramCreated | link.ProgramUpdated,
) -> None:
    await repository.upsert_program(
        conn,
        tenant_id=event.tenantid,
        program_id=p.program_id,
        name=p.name,
        default_locale=domain.normalize_locale(p.default_locale) or domain.DEFAULT_LOCALE,
        version=p.version,
    )


async def on_advocate(
    conn: asyncpg.Connection,
    event: CloudEvent,
    p: link.AdvocateEnrolled | link.AdvocateUpdated,
) -> None:
    email = _usable_address(p.email)
    row = await repository.upsert_advocate(
        conn,
        tenant_id=event.tenantid,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        email=email,
        name=p.name,
        locale=domain.normalize_locale(p.locale),
        marketing_consent=p.marketing_consent,
        blocked=p.blocked,
        code=p.code,
        link_url=p.link_url,
        version=p.version,
    )
    if row is not None:
        await _maybe_welcome(conn, event, row)


async def on_advocate_blocked(
    conn: asyncpg.Connection, event: CloudEvent, p: link.AdvocateBlocked
) -> None:
    await repository.set_advocate_blocked(conn, event.tenantid, p.advocate_id, True)


async def on_advocate_unblocked(
    conn: asyncpg.Connection, event: CloudEvent, p: link.AdvocateUnblocked
) -> None:
    await repository.set_advocate_blocked(conn, event.tenantid, p.advocate_id, False)


async def on_code(
    conn: asyncpg.Connection, event: CloudEvent, p: link.CodeCreated | link.CodeChanged
) -> None:
    row = await repository.set_advocate_link(
        conn,
        tenant_id=event.tenantid,
        advocate_id=p.advocate_id,
        program_id=p.program_id,
        code=p.code,
        link_url=p.link_url,
    )
    await _maybe_welcome(conn, event, row)


async def _maybe_welcome(
    conn: asyncpg.Connection, event: CloudEvent, contact: asyncpg.Record
) -> None:
    """The welcome needs the address (advocate events) and the link (advocate or code events),
    which may arrive in either order: whichever completes the pair queues it. Keyed on the
    advocate, so it goes out once however many events complete it."""
    if not contact["email"] or not contact["link_url"] or contact["blocked"]:
        return
    advocate_id = contact["contact_id"]
    await _mail(
        conn,
        event,
        "advocate_welcome",
        to=("advocate", advocate_id),
        about=(advocate_id, contact["program_id"]),
        facts={},
        cause_key=f"welcome:{advocate_id}",
    )


async def on_referral(
    conn: asyncpg.Connection, event: CloudEvent, p: attribution.ReferralAttributed
) -> None:
    email = _usable_address(p.friend_email)
    if email is None:
        return
    await repository.upsert_friend(
        conn,
        tenant_id=event.tenantid,
        friend_id=p.friend_customer_id,
        program_id=p.program_id,
        email=email,
        locale=domain.normalize_locale(p.friend_locale),
    )


# --- thank-yous ---------------------------------------------------------------------------------


async def on_conversion(
    conn: asyncpg.Connection, event: CloudEvent, p: attribution.ConversionAttributed
) -> None:
    """Thank-yous, before any reward is available (a held reward still gets a prompt one): the
    advocate once per referral, at its first attributed conversion; the friend once, on their
    first purchase. Each is a mail (the recipient's locale, suppressions respected; the
    advocate's copy says blocked advocates get none) and a `referral.thank_you` to the
    merchant's webhooks, ids derived from the cause so a redelivery adds nothing."""
    facts = domain.conversion_facts(p.model_dump(mode="json"))
    due: list[tuple[str, str, str, str]] = [
        ("advocate", p.advocate_id, "advocate_friend_converted", f"thanks:advocate:{p.referral_id}")
    ]
    if p.conversion_type == "purchase" and p.is_first_purchase:
        due.append(
            ("friend", p.friend_customer_id, "friend_thank_you", f"thanks:friend:{p.referral_id}")
        )
    for kind, recipient, template, cause in due:
        if kind == "advocate" and await repository.advocate_blocked(
            conn, event.tenantid, p.advocate_id
        ):
            continue
        await _mail(
            conn, event, template, (kind, recipient), (p.advocate_id, p.program_id), facts, cause
        )
        thanks = out.ThankYou(
            recipient_kind=kind,
            recipient_id=recipient,
            advocate_id=p.advocate_id,
            program_id=p.program_id,
            referral_id=p.referral_id,
            conversion_id=p.conversion_id,
            conversion_type=p.conversion_type,
        )
        derived = new_event(
            thanks,
            source="/services/notification-service",
            tenant_id=event.tenantid,
            event_id=f"{event.tenantid}:{cause}",
            time=event.time,
        )
        await webhooks.on_webhook_event(conn, derived, thanks)


# --- the viral loop: a converted friend's own link, reminders to share --------------------------


async def on_friend_converted(
    conn: asyncpg.Connection, event: CloudEvent, p: link.FriendConverted
) -> None:
    """The friend, enrolled as an advocate when they converted: their own new link (the
    post-purchase share prompt), once per friend and program."""
    await _mail(
        conn,
        event,
        "friend_share_prompt",
        to=("advocate", p.friend_advocate_id),
        about=(p.friend_advocate_id, p.program_id),
        facts={},
        cause_key=f"share-prompt:{p.friend_advocate_id}",
    )


async def on_share_reminder_due(
    conn: asyncpg.Connection, event: CloudEvent, p: link.ShareReminderDue
) -> None:
    """The program's n-th reminder to an advocate who has not shared (marketing mail: consent
    and suppressions apply when it is sent; blocked advocates get none), once per reminder."""
    if await repository.advocate_blocked(conn, event.tenantid, p.advocate_id):
        return
    await _mail(
        conn,
        event,
        "advocate_share_reminder",
        to=("advocate", p.advocate_id),
        about=(p.advocate_id, p.program_id),
        facts=domain.reminder_facts(p.model_dump(mode="json")),
        cause_key=f"share-reminder:{p.advocate_id}:{p.reminder}",
    )


def _usable_address(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return domain.validate_address(value)
    except InvalidInput:
        log.warning("ignoring an address that is not one (not logged: personal data)")
        return None


# --- mails caused by reward events ------------------------------------------------------------

MailingReward = (
    reward.RewardPending | reward.RewardAvailable | reward.CouponAllocated | reward.MilestoneReached
)


@dataclass(frozen=True)
class _HolderMails:
    """The mail an event type causes its holder: the template for the holder's role (none for
    a role not named), and the event's facts the template shows."""

    by_role: Mapping[str, str]
    facts: Callable[[Mapping[str, Any]], dict[str, Any]]


# A friend's reward is announced once, when it can be used (not while pending).
_HOLDER_MAILS: dict[str, _HolderMails] = {
    reward.RewardPending.TYPE: _HolderMails(
        {"advocate": "advocate_reward_pending"}, domain.reward_facts
    ),
    reward.RewardAvailable.TYPE: _HolderMails(
        {"advocate": "advocate_reward_available", "friend": "friend_reward"}, domain.reward_facts
    ),
    reward.CouponAllocated.TYPE: _HolderMails({"friend": "friend_coupon"}, domain.coupon_facts),
    reward.MilestoneReached.TYPE: _HolderMails(
        {"advocate": "milestone_reached"}, domain.milestone_facts
    ),
}


async def on_reward(conn: asyncpg.Connection, event: CloudEvent, p: MailingReward) -> None:
    """The mail the event causes its holder, if any."""
    mails = _HOLDER_MAILS[event.type]
    template = mails.by_role.get(p.role)
    if template is None:
        return
    if isinstance(p, reward.RewardAvailable) and p.role == "friend" and p.kind == "coupon":
        return  # a friend's coupon reward is mailed from coupon.allocated, which has the code
    holder = p.advocate_id if p.role == "advocate" else p.holder_id
    facts = mails.facts(p.model_dump(mode="json"))
    await _mail(conn, event, template, (p.role, holder), (p.advocate_id, p.program_id), facts)


async def _mail(
    conn: asyncpg.Connection,
    event: CloudEvent,
    template: str,
    to: tuple[str, str],
    about: tuple[str, str],
    facts: dict[str, Any],
    cause_key: str | None = None,
) -> None:
    """Queues the mail `event` causes: `to` is the recipient (kind, id), `about` the advocate
    and program it concerns. Once per (cause, recipient, template), the cause being the event
    unless `cause_key` names another; none for an event too old to mail about."""
    if _stale(event):
        return
    (recipient_kind, recipient_id), (advocate_id, program_id) = to, about
    await queue.enqueue(
        conn,
        repository.NewMail(
            tenant_id=event.tenantid,
            template=template,
            cause_key=cause_key or event.id,
            recipient_kind=recipient_kind,
            recipient_id=recipient_id,
            advocate_id=advocate_id,
            program_id=program_id,
            facts=facts,
        ),
    )


# Mail about an event older than this is not sent (its contact facts are still copied). When
# the service first consumes a topic from its beginning (a new deployment, a new subscription)
# it must not mail people about enrollments and rewards of weeks ago.
MAX_EVENT_AGE = timedelta(days=3)


def _stale(event: CloudEvent) -> bool:
    at = event.time if event.time.tzinfo is not None else event.time.replace(tzinfo=UTC)
    if datetime.now(UTC) - at > MAX_EVENT_AGE:
        log.info("no mail for %s %s: older than %s", event.type, event.id, MAX_EVENT_AGE)
        return True
    return False


# Consumed event type -> email handler (the consumer adds webhook fan-out next to these).
EMAIL_HANDLERS: dict[str, Callable[[asyncpg.Connection, CloudEvent, Any], Awaitable[None]]] = {
    link.ProgramCreated.TYPE: on_program,
    link.ProgramUpdated.TYPE: on_program,
    link.AdvocateEnrolled.TYPE: on_advocate,
    link.AdvocateUpdated.TYPE: on_advocate,
    link.AdvocateBlocked.TYPE: on_advocate_blocked,
    link.AdvocateUnblocked.TYPE: on_advocate_unblocked,
    link.CodeCreated.TYPE: on_code,
    link.CodeChanged.TYPE: on_code,
    attribution.ReferralAttributed.TYPE: on_referral,
    attribution.ConversionAttributed.TYPE: on_conversion,
    link.FriendConverted.TYPE: on_friend_converted,
    link.ShareReminderDue.TYPE: on_share_reminder_due,
    **{event_type: on_reward for event_type in _HOLDER_MAILS},
}
