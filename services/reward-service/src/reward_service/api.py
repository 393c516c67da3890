"""HTTP routes: parse, authenticate, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from reward_service import domain, handlers, ledger, payouts
from reward_service.schemas import (
    AccountBalanceOut,
    AmountIn,
    BalanceOut,
    CouponCodesIn,
    CouponPoolIn,
    CouponPoolOut,
    MoneyOut,
    PayoutBatchIn,
    PayoutBatchOut,
    PayoutLineOut,
    PayoutLineUpdateIn,
    RedemptionIn,
    RedemptionOut,
    RewardRuleIn,
    RewardRuleOut,
    SideIn,
    StatementLineOut,
    StatementOut,
)
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.problems import InvalidInput
from servicekit.runtime import Runtime

router = APIRouter()


def now(request: Request) -> datetime:
    """FastAPI dependency: the app's clock (injected, so tests move time instead of sleeping)."""
    clock: domain.Clock = request.app.state.clock
    return clock()


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]
Now = Annotated[datetime, Depends(now)]
ProgramId = Annotated[str, Path(min_length=1, max_length=200)]
HolderId = Annotated[str, Path(min_length=1, max_length=200)]
_UNIT = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


# --- rule input -> domain (checks that span fields) ---------------------------------------------


def _unit(value: str, field: str) -> str:
    unit = value.strip().upper()
    if domain.is_currency(unit) or unit == domain.POINTS:
        return unit
    if len(unit) == 3 and unit.isalpha():
        raise InvalidInput(f"'{value}' is not an ISO 4217 currency in use", field=field)
    if not _UNIT.match(unit):
        raise InvalidInput(f"'{value}' is not a unit (letters, digits, _)", field=field)
    return unit


def _amount(body: AmountIn, field: str) -> domain.Amount:
    given = [
        name
        for name in ("amount_minor", "percent", "points", "quantity")
        if getattr(body, name) is not None
    ]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one of amount_minor, percent, points, quantity"
            + (f" (got {', '.join(given)})" if given else ""),
            field=field,
        )
    kind = given[0]
    if kind in ("amount_minor", "percent") and body.currency is None:
        raise InvalidInput(f"{kind} needs a currency", field=f"{field}.currency")
    if kind == "amount_minor":
        assert body.currency is not None and body.amount_minor is not None
        return domain.Amount(unit=body.currency, fixed=body.amount_minor)
    if kind == "percent":
        assert body.currency is not None
        return domain.Amount(
            unit=body.currency,
            percent=body.percent,
            rounding=body.rounding,
            max_amount=body.max_amount_minor,
        )
    if kind == "points":
        return domain.Amount(unit=domain.POINTS, fixed=body.points)
    if body.unit is None:
        raise InvalidInput("a quantity needs its unit (e.g. MB)", field=f"{field}.unit")
    return domain.Amount(unit=body.unit, fixed=body.quantity)


def _side(role: domain.Role, body: SideIn) -> domain.SideReward:
    if body.trigger == "custom" and body.custom_type is None:
        raise InvalidInput("a custom trigger names its custom_type", field=f"{role}.custom_type")
    if body.nth is not None and body.trigger != "subscription_payment":
        raise InvalidInput("nth applies to subscription_payment only", field=f"{role}.nth")
    if body.kind == "coupon":
        if body.coupon_pool_id is None:
            raise InvalidInput("a coupon reward names its pool", field=f"{role}.coupon_pool_id")
        if body.tiers:
            raise InvalidInput("coupon rewards have no tiers", field=f"{role}.tiers")
        amount = domain.Amount(unit=domain.COUPON, fixed=1)
    else:
        if body.amount is None:
            raise InvalidInput(f"a {body.kind} reward needs an amount", field=f"{role}.amount")
        amount = _amount(body.amount, f"{role}.amount")
        if body.coupon_pool_id is not None:
            raise InvalidInput("only coupon rewards use a pool", field=f"{role}.coupon_pool_id")
    if body.kind == "cash" and not domain.is_currency(amount.unit):
        raise InvalidInput("a cash reward is paid in a currency", field=f"{role}.amount")
    if body.kind == "points" and amount.unit != domain.POINTS:
        raise InvalidInput("a points reward is given in points", field=f"{role}.amount")
    tiers: list[domain.Tier] = []
    for i, t in enumerate(body.tiers):
        where = f"{role}.tiers[{i}]"
        if t.max_referrals is not None and t.max_referrals < t.min_referrals:
            raise InvalidInput(
                "max_referrals is below min_referrals", field=f"{where}.max_referrals"
            )
        tier_amount = _amount(t.amount, f"{where}.amount")
        if tier_amount.unit != amount.unit:
            raise InvalidInput(
                f"a tier pays in the side's unit {amount.unit}", field=f"{where}.amount"
            )
        tiers.append(domain.Tier(t.min_referrals, t.max_referrals, tier_amount))
    overlap = domain.overlapping_tiers(tiers)
    if overlap is not None:
        i, j = overlap
        raise InvalidInput(
            f"tiers[{i}] and tiers[{j}] overlap: each referral count must fall in one tier",
            field=f"{role}.tiers",
        )
    return domain.SideReward(
        role=role,
        trigger=body.trigger,
        amount=amount,
        kind=body.kind,
        min_order_minor=body.min_order_minor,
        nth=body.nth,
        custom_type=body.custom_type,
        tiers=tuple(sorted(tiers, key=lambda t: t.min_referrals)),
        coupon_pool_id=body.coupon_pool_id,
    )


def _definition(body: RewardRuleIn) -> domain.RuleDefinition:
    advocate = body.advocate
    if body.advocate_reward is not None or body.trigger is not None:
        if advocate is not None:
            raise InvalidInput("give either advocate or advocate_reward", field="advocate_reward")
        if body.advocate_reward is None:
            raise InvalidInput("advocate_reward is required with trigger", field="advocate_reward")
        if body.trigger is None:
            raise InvalidInput("trigger is required with advocate_reward", field="trigger")
        advocate = SideIn(
            trigger=body.trigger,
            amount=AmountIn(
                amount_minor=body.advocate_reward.amount_minor,
                currency=body.advocate_reward.currency,
            ),
        )
    given: tuple[tuple[domain.Role, SideIn | None], ...] = (
        ("advocate", advocate),
        ("friend", body.friend),
    )
    sides = [_side(role, s) for role, s in given if s is not None]
    if not sides:
        raise InvalidInput("a rule rewards the advocate, the friend or both", field="advocate")
    advocate_side = next((s for s in sides if s.role == "advocate"), None)
    milestones: list[domain.Milestone] = []
    for i, m in enumerate(body.milestones):
        amount = _amount(m.amount, f"milestones[{i}].amount")
        if amount.is_percent:
            raise InvalidInput(
                "a milestone bonus is a fixed amount", field=f"milestones[{i}].amount"
            )
        assert amount.fixed is not None
        milestones.append(domain.Milestone(m.referrals, amount.fixed, amount.unit, m.kind))
    if len({m.referrals for m in milestones}) != len(milestones):
        raise InvalidInput("two milestones at the same referral count", field="milestones")
    caps: list[domain.Cap] = []
    for i, c in enumerate(body.caps):
        if c.max_count is None and c.max_amount is None:
            raise InvalidInput("a cap sets max_count, max_amount or both", field=f"caps[{i}]")
        caps.append(domain.Cap(c.period, c.max_count, c.max_amount))
    if caps and advocate_side is None:
        raise InvalidInput("caps limit the advocate side, which this rule lacks", field="caps")
    if len({c.period for c in caps}) != len(caps):
        raise InvalidInput("one cap per period", field="caps")
    budget = None
    if body.budget is not None:
        budget = domain.Budget(body.budget.amount, _unit(body.budget.unit, "budget.unit"))
    return domain.RuleDefinition(
        hold_days=body.hold_days,
        rewards=tuple(sides),
        clawback=body.clawback,
        milestones=tuple(sorted(milestones, key=lambda m: m.referrals)),
        caps=tuple(caps),
        budget=budget,
    )


def _side_out(side: domain.SideReward | None) -> dict[str, Any] | None:
    if side is None:
        return None
    doc = domain.definition_to_json(domain.RuleDefinition(hold_days=0, rewards=(side,)))
    out: dict[str, Any] = doc["rewards"][0]
    out.pop("role", None)
    return out


def _rule_out(rule: domain.RuleVersion) -> RewardRuleOut:
    d = rule.definition
    doc = domain.definition_to_json(d)
    advocate = d.side("advocate")
    legacy = None
    if (
        advocate is not None
        and advocate.amount.fixed is not None
        and domain.is_currency(advocate.amount.unit)
    ):
        legacy = MoneyOut(
            amount_minor=advocate.amount.fixed,
            currency=advocate.amount.unit,
            amount=domain.format_minor(advocate.amount.fixed, advocate.amount.unit),
        )
    return RewardRuleOut(
        id=rule.id,
        program_id=rule.program_id,
        version=rule.version,
        valid_from=rule.valid_from,
        hold_days=d.hold_days,
        clawback=d.clawback,
        advocate=_side_out(advocate),
        friend=_side_out(d.side("friend")),
        milestones=doc["milestones"],
        caps=doc["caps"],
        budget=doc["budget"],
        advocate_reward=legacy,
        trigger=advocate.trigger if advocate is not None else None,
        created_at=rule.created_at,
    )


@router.put(
    "/v1/programs/{program_id}/reward-rule", response_model=RewardRuleOut, tags=["reward rules"]
)
async def put_reward_rule(
    program_id: ProgramId, body: RewardRuleIn, who: Auth, rt: Rt, at: Now
) -> RewardRuleOut:
    definition = _definition(body)
    async with rt.transaction() as conn:
        rule = await handlers.put_reward_rule(conn, who.tenant_id, program_id, definition, at)
    return _rule_out(rule)


@router.get(
    "/v1/programs/{program_id}/reward-rule", response_model=RewardRuleOut, tags=["reward rules"]
)
async def get_reward_rule(program_id: ProgramId, who: Auth, rt: Rt, at: Now) -> RewardRuleOut:
    async with rt.transaction() as conn:
        return _rule_out(await handlers.get_reward_rule(conn, who.tenant_id, program_id, at))


# --- ledger -------------------------------------------------------------------------------------


def _balance_out(b: ledger.Balance) -> BalanceOut:
    return BalanceOut(
        unit=b.unit,
        purse=b.purse,
        available_minor=b.available_minor,
        pending_minor=b.pending_minor,
        available=domain.format_minor(b.available_minor, b.unit),
        pending=domain.format_minor(b.pending_minor, b.unit),
        debt_minor=b.debt_minor,
        in_payout_minor=b.in_payout_minor,
    )


@router.get("/v1/accounts/{holder_id}/balance", response_model=AccountBalanceOut, tags=["ledger"])
async def get_balance(holder_id: HolderId, who: Auth, rt: Rt) -> AccountBalanceOut:
    async with rt.transaction() as conn:
        balances = await handlers.get_balances(conn, who.tenant_id, holder_id)
    return AccountBalanceOut(holder_id=holder_id, balances=[_balance_out(b) for b in balances])


@router.get("/v1/accounts/{holder_id}/statement", response_model=StatementOut, tags=["ledger"])
async def get_statement(
    holder_id: HolderId,
    who: Auth,
    rt: Rt,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StatementOut:
    async with rt.transaction() as conn:
        lines, next_seq = await handlers.get_statement(
            conn, who.tenant_id, holder_id, int(cursor or 0), limit
        )
    return StatementOut(
        holder_id=holder_id,
        entries=[
            StatementLineOut(
                seq=line.seq,
                transfer_id=str(line.transfer_id),
                leg=line.leg,
                account=line.account_kind,
                unit=line.unit,
                purse=line.purse,
                amount_minor=line.amount,
                amount=domain.format_minor(line.amount, line.unit),
                cause=line.cause,
                reward_id=line.reward_id,
                conversion_id=line.conversion_id,
                created_at=line.created_at,
            )
            for line in lines
        ],
        next_cursor=None if next_seq is None else str(next_seq),
    )


@router.post(
    "/v1/accounts/{holder_id}/redemptions",
    response_model=RedemptionOut,
    status_code=201,
    tags=["ledger"],
    responses={200: {"description": "a replay of the same Idempotency-Key"}},
)
async def redeem(
    holder_id: HolderId,
    body: RedemptionIn,
    who: Auth,
    rt: Rt,
    at: Now,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> RedemptionOut:
    unit = _unit(body.unit, "unit")
    async with rt.transaction() as conn:
        r = await payouts.redeem(
            conn,
            tenant_id=who.tenant_id,
            holder_id=holder_id,
            idempotency_key=idempotency_key,
            amount=body.amount_minor,
            unit=unit,
            reference=body.reference,
            now=at,
        )
    if not r.created:
        response.status_code = 200
    return RedemptionOut(
        id=r.id,
        holder_id=r.holder_id,
        amount_minor=r.amount,
        unit=r.unit,
        amount=domain.format_minor(r.amount, r.unit),
        reference=r.reference,
        created_at=r.created_at,
    )


@router.get("/v1/admin/ledger/verify", tags=["admin"])
async def verify_ledger(who: Auth, rt: Rt) -> JSONResponse:
    """The workspace's ledger checked end to end; 200 when sound, 409 listing what is not."""
    async with rt.transaction() as conn:
        report = await handlers.verify(conn, who.tenant_id)
    return JSONResponse(report.as_dict(), status_code=200 if report.ok else 409)


# --- coupon pools -------------------------------------------------------------------------------


def _pool_out(pool: handlers.CouponPool) -> CouponPoolOut:
    return CouponPoolOut(
        id=pool.id,
        program_id=pool.program_id,
        name=pool.name,
        low_threshold=pool.low_threshold,
        total=pool.total,
        remaining=pool.remaining,
        added=pool.added,
        created_at=pool.created_at,
    )


PoolId = Annotated[str, Path(min_length=1, max_length=200)]


@router.post(
    "/v1/programs/{program_id}/coupon-pools",
    response_model=CouponPoolOut,
    status_code=201,
    tags=["coupons"],
)
async def create_coupon_pool(
    program_id: ProgramId, body: CouponPoolIn, who: Auth, rt: Rt
) -> CouponPoolOut:
    async with rt.transaction() as conn:
        pool = await handlers.create_coupon_pool(
            conn, who.tenant_id, program_id, body.name, body.low_threshold, body.codes
        )
    return _pool_out(pool)


@router.post("/v1/coupon-pools/{pool_id}/codes", response_model=CouponPoolOut, tags=["coupons"])
async def add_coupon_codes(
    pool_id: PoolId, body: CouponCodesIn, who: Auth, rt: Rt
) -> CouponPoolOut:
    """Adds codes; codes already in the pool are skipped (`added` counts the new ones)."""
    async with rt.transaction() as conn:
        return _pool_out(await handlers.add_coupon_codes(conn, who.tenant_id, pool_id, body.codes))


@router.get("/v1/coupon-pools/{pool_id}", response_model=CouponPoolOut, tags=["coupons"])
async def get_coupon_pool(pool_id: PoolId, who: Auth, rt: Rt) -> CouponPoolOut:
    async with rt.transaction() as conn:
        return _pool_out(await handlers.get_coupon_pool(conn, who.tenant_id, pool_id))


# --- payouts ------------------------------------------------------------------------------------


def _batch_out(batch: payouts.PayoutBatch) -> PayoutBatchOut:
    return PayoutBatchOut(
        id=batch.id,
        currency=batch.unit,
        threshold_minor=batch.threshold,
        created_at=batch.created_at,
        lines=[_line_out(line) for line in batch.lines],
    )


def _line_out(line: payouts.PayoutLine) -> PayoutLineOut:
    return PayoutLineOut(
        id=line.id,
        holder_type=line.holder_type,
        holder_id=line.holder_id,
        amount_minor=line.amount,
        amount=domain.format_minor(line.amount, line.unit),
        currency=line.unit,
        status=line.status,
        reference=line.reference,
        reason=line.reason,
    )


BatchId = Annotated[str, Path(min_length=1, max_length=200)]


@router.post("/v1/payouts", response_model=PayoutBatchOut, status_code=201, tags=["payouts"])
async def create_payout_batch(body: PayoutBatchIn, who: Auth, rt: Rt, at: Now) -> PayoutBatchOut:
    async with rt.transaction() as conn:
        batch = await payouts.create_payout_batch(
            conn, who.tenant_id, body.currency, body.threshold_minor, at
        )
    return _batch_out(batch)


@router.get("/v1/payouts/{batch_id}", response_model=PayoutBatchOut, tags=["payouts"])
async def get_payout_batch(batch_id: BatchId, who: Auth, rt: Rt) -> PayoutBatchOut:
    async with rt.transaction() as conn:
        return _batch_out(await payouts.get_payout_batch(conn, who.tenant_id, batch_id))


@router.get("/v1/payouts/{batch_id}/export.csv", tags=["payouts"])
async def export_payout_batch(batch_id: BatchId, who: Auth, rt: Rt) -> Response:
    async with rt.transaction() as conn:
        batch = await payouts.get_payout_batch(conn, who.tenant_id, batch_id)
    return Response(
        payouts.batch_csv(batch),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{batch.id}.csv"'},
    )


@router.post(
    "/v1/payouts/{batch_id}/lines/{line_id}", response_model=PayoutLineOut, tags=["payouts"]
)
async def settle_payout_line(
    batch_id: BatchId,
    line_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: PayoutLineUpdateIn,
    who: Auth,
    rt: Rt,
    at: Now,
) -> PayoutLineOut:
    """Marks a line paid (the money left) or failed (it returns to the holder's available cash)."""
    async with rt.transaction() as conn:
        line = await payouts.settle_payout_line(
            conn, who.tenant_id, batch_id, line_id, body.status, body.reference, body.reason, at
        )
    return _line_out(line)
