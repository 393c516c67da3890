"""Use cases of reward-service. Each takes the caller's connection (the edge's transaction:
an HTTP request, a consumed event, a release batch), changes state through the repository and
emits the implied events through the outbox. None of them commits."""

from __future__ import annotations

import logging
from datetime import datetime

import asyncpg

from referral_events import CloudEvent, topics
from referral_events.contracts import reward as ev
from referral_events.contracts.attribution import ConversionAttributed
from referral_events.outbox import emit
from reward_service import domain, repository
from servicekit.ids import new_id
from servicekit.problems import NotFound

SOURCE = "/services/reward-service"

log = logging.getLogger(__name__)


async def put_reward_rule(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    definition: domain.RuleDefinition,
    now: datetime,
) -> domain.RuleVersion:
    """A changed rule becomes a new version in force from now; the same rule again returns the
    current version unchanged, so a retried PUT adds no version."""
    await repository.lock_program_rules(conn, tenant_id, program_id)
    latest = await repository.latest_rule(conn, tenant_id, program_id)
    if latest is not None and latest.definition == definition:
        return latest
    number, valid_from = domain.next_version(latest, now)
    return await repository.insert_rule_version(
        conn,
        rule_id=new_id("rrv"),
        tenant_id=tenant_id,
        program_id=program_id,
        version=number,
        valid_from=valid_from,
        definition=definition,
    )


async def get_reward_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, now: datetime
) -> domain.RuleVersion:
    rule = await repository.rule_in_force(conn, tenant_id, program_id, now)
    if rule is None:
        raise NotFound(f"program '{program_id}' has no reward rule", field="program_id")
    return rule


async def on_conversion_attributed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ConversionAttributed
) -> None:
    """Rewards an attributed conversion under its tenant's rule in force at occurred_at. The
    envelope's tenant selects the rule, so one tenant's events never reach another's rules."""
    conversion = domain.Conversion(
        tenant_id=event.tenantid,
        conversion_id=payload.conversion_id,
        referral_id=payload.referral_id,
        program_id=payload.program_id,
        advocate_id=payload.advocate_id,
        friend_customer_id=payload.friend_customer_id,
        conversion_type=payload.conversion_type,
        is_first_purchase=payload.is_first_purchase,
        occurred_at=domain.as_utc(payload.occurred_at),
        order_amount_minor=payload.amount_minor,
        order_currency=payload.currency,
    )
    rule = await repository.rule_in_force(
        conn, conversion.tenant_id, conversion.program_id, conversion.occurred_at
    )
    if rule is None:
        log.info(
            "no reward rule for program %s at %s; conversion %s earns nothing",
            conversion.program_id,
            conversion.occurred_at,
            conversion.conversion_id,
        )
        return
    for reward in domain.rewards_earned(rule, conversion):
        if not await repository.insert_reward(conn, reward, source_event_id=event.id):
            log.info("conversion %s already earned reward %s", conversion.conversion_id, reward.id)
            continue
        await _post(conn, domain.earn_transfer(reward))
        if reward.state == "available":
            await _emit_available(conn, reward)
        else:
            await emit(
                conn,
                ev.RewardPending.model_validate(
                    {**_reward_fields(reward), "available_at": reward.available_at}
                ),
                source=SOURCE,
                tenant_id=reward.tenant_id,
                topic=topics.REWARD_EVENTS,
                key=reward.advocate_id,
                event_id=domain.reward_event_id(reward.id, ev.RewardPending.TYPE),
            )


async def release_due_rewards(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """Moves up to `limit` rewards whose hold ended by `now` from pending to available."""
    due = await repository.lock_due_rewards(conn, now, limit)
    for reward in due:
        await _post(conn, domain.release_transfer(reward))
        await repository.mark_available(conn, reward.id, now)
        await _emit_available(conn, reward)
    return len(due)


async def get_balances(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[domain.Balance]:
    return domain.balances(await repository.holder_entries(conn, tenant_id, holder_id))


async def _post(conn: asyncpg.Connection, transfer: domain.Transfer) -> None:
    await repository.ensure_accounts(conn, [transfer.debit, transfer.credit])
    await repository.insert_transfer(conn, transfer)


def _reward_fields(reward: domain.Reward) -> dict[str, object]:
    return dict(
        reward_id=reward.id,
        program_id=reward.program_id,
        advocate_id=reward.advocate_id,
        holder_id=reward.holder_id,
        role=reward.role,
        conversion_id=reward.conversion_id,
        kind=reward.kind,
        amount=reward.amount,
        unit=reward.unit,
    )


async def _emit_available(conn: asyncpg.Connection, reward: domain.Reward) -> None:
    await emit(
        conn,
        ev.RewardAvailable.model_validate(_reward_fields(reward)),
        source=SOURCE,
        tenant_id=reward.tenant_id,
        topic=topics.REWARD_EVENTS,
        key=reward.advocate_id,
        event_id=domain.reward_event_id(reward.id, ev.RewardAvailable.TYPE),
    )
