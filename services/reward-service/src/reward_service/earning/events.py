"""The events earning publishes, one builder per type: every path that emits a type (issuing,
releasing, refunding) builds it here, the same way. Each returns the outbox row, keyed by the
advocate (one partition orders an advocate's events) with an id derived from the reward, so a
re-emit is absorbed by the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from referral_events.contracts import reward as ev
from referral_events.envelope import EventPayload
from referral_events.outbox import OutboxRow
from reward_service.coupons.domain import Stock
from reward_service.earning.domain import Grant, Reward
from reward_service.events import EVENTS, event_id, reward_event_id


def _row(reward: Reward, payload: EventPayload, eid: str) -> OutboxRow:
    return EVENTS.row(payload, tenant_id=reward.tenant_id, key=reward.advocate_id, event_id=eid)


def _about(reward: Reward) -> dict[str, Any]:
    """The fields every event about a reward carries."""
    return dict(
        reward_id=reward.id,
        program_id=reward.program_id,
        advocate_id=reward.advocate_id,
        holder_id=reward.holder_id,
        role=reward.role,
        conversion_id=reward.conversion_id,
    )


def _state(reward: Reward, amount: int, **fields: Any) -> dict[str, Any]:
    """The fields of a reward state event (pending, available, voided, ...); `amount` is what
    the event is about."""
    return {
        **_about(reward),
        "kind": reward.kind,
        "amount": amount,
        "unit": reward.unit,
        "rule_version": reward.rule_version,
        "trigger": reward.trigger,
        **fields,
    }


def reward_pending(reward: Reward) -> OutboxRow:
    payload = ev.RewardPending.model_validate(
        _state(reward, reward.amount, available_at=reward.available_at)
    )
    return _row(reward, payload, reward_event_id(reward.id, ev.RewardPending.TYPE))


def reward_available(reward: Reward) -> OutboxRow:
    """Issued available, or released at the end of its hold: what voids left of it."""
    payload = ev.RewardAvailable.model_validate(_state(reward, reward.outstanding))
    return _row(reward, payload, reward_event_id(reward.id, ev.RewardAvailable.TYPE))


def reward_capped(reward: Reward, grant: Grant) -> OutboxRow:
    payload = ev.RewardCapped.model_validate(
        _state(
            reward,
            reward.requested_amount - reward.amount,
            reason=grant.reason or "capped",
            requested_amount=reward.requested_amount,
            granted_amount=reward.amount,
            period=grant.period,
        )
    )
    return _row(reward, payload, reward_event_id(reward.id, ev.RewardCapped.TYPE))


def reward_voided(reward: Reward, amount: int, refund_id: str, at: datetime) -> OutboxRow:
    payload = ev.RewardVoided.model_validate(
        _state(
            reward,
            amount,
            reason="refunded",
            remaining_amount=reward.outstanding - amount,
            refund_id=refund_id,
            voided_at=at,
        )
    )
    return _row(reward, payload, reward_event_id(reward.id, ev.RewardVoided.TYPE, refund_id))


def reward_clawed_back(
    reward: Reward, amount: int, debt: int, refund_id: str, at: datetime
) -> OutboxRow:
    payload = ev.RewardClawedBack.model_validate(
        _state(
            reward,
            amount,
            method=reward.clawback,
            reason="refunded",
            debt_amount=debt,
            refund_id=refund_id,
            clawed_back_at=at,
        )
    )
    return _row(reward, payload, reward_event_id(reward.id, ev.RewardClawedBack.TYPE, refund_id))


def milestone_reached(reward: Reward, referral_count: int, milestone: int) -> OutboxRow:
    payload = ev.MilestoneReached(
        **_about(reward),
        referral_count=referral_count,
        milestone=milestone,
        kind=reward.kind,
        amount=reward.amount,
        unit=reward.unit,
    )
    return _row(reward, payload, reward_event_id(reward.id, ev.MilestoneReached.TYPE))


def coupon_allocated(reward: Reward, pool_id: str, code: str) -> OutboxRow:
    payload = ev.CouponAllocated(**_about(reward), coupon_code=code, pool_id=pool_id)
    return _row(reward, payload, reward_event_id(reward.id, ev.CouponAllocated.TYPE))


def coupon_pool_low(reward: Reward, pool_id: str, stock: Stock) -> OutboxRow:
    # One event per pool and remaining count: the merchant hears of each code handed out
    # below the threshold (and of the pool running dry), never twice for the same count.
    payload = ev.CouponPoolLow(
        pool_id=pool_id,
        program_id=reward.program_id,
        remaining=stock.remaining,
        threshold=stock.threshold,
    )
    return _row(
        reward,
        payload,
        event_id("coupon_pool.low", reward.tenant_id, pool_id, str(stock.remaining), reward.id),
    )
