"""The ledger's invariants under random sequences of work, and redemptions under contention, on
the real handlers and a real Postgres (Kafka is not involved: the handlers are called as the
inbox consumer and the releaser call them, each in its own transaction)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from devstack.pytest_plugin import Namespace
from devstack.testing import migrate
from referral_events import CloudEvent, new_event
from referral_events.contracts.attribution import ConversionAttributed, ConversionRefunded
from reward_service.coupons import handlers as coupon_handlers
from reward_service.earning import handlers as earning
from reward_service.earning.domain import Reward
from reward_service.ledger import handlers as ledger
from reward_service.payouts import handlers as payouts
from reward_service.rules import domain as rules
from reward_service.rules import handlers as rule_handlers
from reward_service.units import COUPON
from servicekit.db import create_pool
from servicekit.problems import Conflict, NotFound

pytestmark = pytest.mark.integration

T = TypeVar("T")
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOLD_DAYS = 30
CAP_CENTS = 3000
_tenants = itertools.count(1)


@pytest.fixture
async def database_url(namespace: Namespace) -> AsyncIterator[str]:
    await migrate(namespace.database_url, "reward", "reward_service")
    yield namespace.database_url


def _rule(clawback: rules.ClawbackPolicy) -> rules.RuleDefinition:
    """10% of the order for the advocate (tiered up to 15% from the 4th referral, capped), a
    fixed 5.00 for the friend, a 10.00 bonus at 3 referrals, 30 days' hold."""
    pct = rules.Amount(unit="USD", percent=Decimal("10"))
    return rules.RuleDefinition(
        hold_days=HOLD_DAYS,
        clawback=clawback,
        rewards=(
            rules.SideReward(
                role="advocate",
                trigger="every_purchase",
                amount=pct,
                tiers=(
                    rules.Tier(1, 3, pct),
                    rules.Tier(4, None, rules.Amount(unit="USD", percent=Decimal("15"))),
                ),
            ),
            rules.SideReward(
                role="friend", trigger="first_purchase", amount=rules.Amount("USD", fixed=500)
            ),
        ),
        milestones=(rules.Milestone(3, 1000, "USD"),),
        caps=(rules.Cap("lifetime", max_amount=CAP_CENTS),),
    )


class LedgerMachine(RuleBasedStateMachine):
    """Conversions, replays, refunds (inside and after the hold), releases and redemptions in any
    order; after every step the ledger is verified and checked against the rewards table."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.loop = loop
        self.pool = pool
        self.tenant = f"prop{next(_tenants)}"
        self.now = T0
        self.events: list[tuple[CloudEvent, ConversionAttributed]] = []
        self.refunded: dict[str, int] = {}
        self.fully_refunded: set[str] = set()
        self.refund_seq = itertools.count(1)
        self.clawback: rules.ClawbackPolicy = "negative_entry"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _tx(self, fn: Any, *args: Any, **kw: Any) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            return await fn(conn, *args, **kw)

    @initialize(clawback=st.sampled_from(["negative_entry", "debt"]))
    def put_rule(self, clawback: rules.ClawbackPolicy) -> None:
        self.clawback = clawback
        self.run(
            self._tx(
                rule_handlers.put_reward_rule,
                self.tenant,
                "prg_p",
                _rule(clawback),
                T0 - timedelta(days=1),
            )
        )

    @rule(
        advocate=st.sampled_from(["adv_a", "adv_b"]),
        friend=st.integers(0, 2),
        order=st.integers(100, 30_000),
    )
    def convert(self, advocate: str, friend: int, order: int) -> None:
        n = len(self.events)
        friend_id = f"cus_{advocate}_{friend}"
        first = not any(p.friend_customer_id == friend_id for _, p in self.events)
        payload = ConversionAttributed(
            conversion_id=f"cnv_{n}",
            referral_id=f"ref_{friend_id}",
            program_id="prg_p",
            advocate_id=advocate,
            friend_customer_id=friend_id,
            conversion_type="purchase",
            order_id=f"ord_{n}",
            amount_minor=order,
            currency="USD",
            is_first_purchase=first,
            occurred_at=self.now,
            evidence="code",
        )
        event = new_event(payload, source="/test", tenant_id=self.tenant)
        self.events.append((event, payload))
        self.run(self._tx(earning.on_conversion_attributed, event, payload, self.now))

    @precondition(lambda self: bool(self.events))
    @rule(data=st.data(), new_event_id=st.booleans())
    def replay(self, data: st.DataObject, new_event_id: bool) -> None:
        """A redelivered event, or the same conversion re-emitted under a new id: no change."""
        event, payload = data.draw(st.sampled_from(self.events))
        if new_event_id:
            event = new_event(payload, source="/test", tenant_id=self.tenant)
        before = self.run(self._snapshot())
        earned = self.run(self._tx(earning.on_conversion_attributed, event, payload, self.now))
        assert earned == []
        assert self.run(self._snapshot()) == before

    @precondition(lambda self: bool(self.events))
    @rule(data=st.data(), share=st.integers(1, 100), full=st.booleans())
    def refund(self, data: st.DataObject, share: int, full: bool) -> None:
        _, payload = data.draw(st.sampled_from(self.events))
        cid = payload.conversion_id
        order = payload.amount_minor or 0
        if cid in self.fully_refunded:
            return
        already = self.refunded.get(cid, 0)
        amount = order - already if full else max(1, (order - already) * share // 100)
        total = already + amount
        self.refunded[cid] = total
        if total >= order:
            self.fully_refunded.add(cid)
        refund = ConversionRefunded(
            conversion_id=cid,
            refund_id=f"rf_{next(self.refund_seq)}",
            program_id="prg_p",
            advocate_id=payload.advocate_id,
            friend_customer_id=payload.friend_customer_id,
            conversion_type="purchase",
            amount_minor=amount,
            currency="USD",
            refunded_total_minor=total,
            full=total >= order,
            refunded_at=self.now,
        )
        event = new_event(refund, source="/test", tenant_id=self.tenant)
        self.run(self._tx(earning.on_conversion_refunded, event, refund, self.now))
        # the same refund again (a re-emit under a new event id) is not applied twice
        before = self.run(self._snapshot())
        again = new_event(refund, source="/test", tenant_id=self.tenant)
        self.run(self._tx(earning.on_conversion_refunded, again, refund, self.now))
        assert self.run(self._snapshot()) == before

    @rule(days=st.sampled_from([0, 10, 29, 31, 31, 45]))
    def advance_and_release(self, days: int) -> None:
        self.now += timedelta(days=days)
        while self.run(self._tx(earning.release_due_rewards, self.now, 7)):
            pass
        overdue = self.run(
            self._fetchval(
                "SELECT count(*) FROM rewards WHERE tenant_id = $1 AND state = 'pending'"
                " AND available_at <= $2",
                self.tenant,
                self.now,
            )
        )
        assert overdue == 0

    @rule(
        holder=st.sampled_from(["adv_a", "adv_b", "cus_adv_a_0"]),
        share=st.sampled_from(["all", "half", "all", "half", "one", "more"]),
    )
    def redeem(self, holder: str, share: str) -> None:
        """Spends all, half, a cent of, or more than the available balance. A friend no
        conversion has rewarded yet holds no account: reads and writes under it are 404."""
        if not self.run(self._holds_account(holder)):
            with pytest.raises(NotFound):
                self.run(self._available(holder))
            with pytest.raises(NotFound):
                self.run(
                    self._tx(
                        payouts.redeem,
                        tenant_id=self.tenant,
                        holder_id=holder,
                        idempotency_key=f"key-{next(self.refund_seq)}",
                        amount=1,
                        unit="USD",
                        reference=None,
                        now=self.now,
                    )
                )
            return
        balance = self.run(self._available(holder))
        amount = {
            "all": balance,
            "half": balance // 2,
            "one": 1,
            "more": max(balance, 0) + 1,
        }[share]
        if amount <= 0:
            amount = 1
        try:
            self.run(
                self._tx(
                    payouts.redeem,
                    tenant_id=self.tenant,
                    holder_id=holder,
                    idempotency_key=f"key-{next(self.refund_seq)}",
                    amount=amount,
                    unit="USD",
                    reference=None,
                    now=self.now,
                )
            )
        except Conflict:
            assert balance < amount
            assert self.run(self._available(holder)) == balance  # nothing posted
        else:
            assert balance >= amount
            assert self.run(self._available(holder)) == balance - amount

    # --- checks -------------------------------------------------------------------------------

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def _holds_account(self, holder: str) -> bool:
        held: bool = await self._fetchval(
            "SELECT EXISTS (SELECT FROM accounts WHERE tenant_id = $1 AND holder_id = $2)"
            " OR EXISTS (SELECT FROM advocates WHERE tenant_id = $1 AND advocate_id = $2)",
            self.tenant,
            holder,
        )
        return held

    async def _available(self, holder: str) -> int:
        rows = await self._tx(ledger.get_balances, self.tenant, holder)
        return sum(b.available_minor for b in rows if b.unit == "USD" and b.purse == "credit")

    async def _snapshot(self) -> tuple[Any, ...]:
        async with self.pool.acquire() as conn:
            transfers = await conn.fetchval(
                "SELECT count(*) FROM transfers WHERE tenant_id = $1", self.tenant
            )
            rewards = await conn.fetch(
                "SELECT id, state, amount, voided_amount, clawed_back_amount FROM rewards"
                " WHERE tenant_id = $1 ORDER BY id",
                self.tenant,
            )
            outbox = await conn.fetchval("SELECT count(*) FROM outbox")
        return transfers, [tuple(r) for r in rewards], outbox

    @invariant()
    def ledger_is_sound(self) -> None:
        report = self.run(self._tx(ledger.verify, self.tenant))
        assert report.ok, report.as_dict()

    @invariant()
    def balances_agree_with_rewards(self) -> None:
        rows = self.run(self._holder_checks())
        for r in rows:
            # what is pending is exactly what pending rewards still hold
            assert r["pending_balance"] == r["pending_rewards"], dict(r)
            if self.clawback == "debt":
                assert r["available_balance"] >= 0, dict(r)

    @invariant()
    def caps_hold(self) -> None:
        granted = self.run(
            self._fetchval(
                """
                SELECT coalesce(max(s), 0) FROM (
                    SELECT sum(amount - voided_amount - clawed_back_amount) AS s FROM rewards
                    WHERE tenant_id = $1 AND role = 'advocate' AND purpose = 'referral'
                    GROUP BY advocate_id) x
                """,
                self.tenant,
            )
        )
        assert granted <= CAP_CENTS

    async def _holder_checks(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                """
                WITH holders AS (
                    SELECT DISTINCT holder_id FROM rewards WHERE tenant_id = $1
                )
                SELECT h.holder_id,
                       coalesce((SELECT sum(b.balance) FROM accounts a
                                 JOIN balances b ON b.account_id = a.id
                                 WHERE a.tenant_id = $1 AND a.holder_id = h.holder_id
                                   AND a.kind = 'pending'), 0) AS pending_balance,
                       coalesce((SELECT sum(b.balance) FROM accounts a
                                 JOIN balances b ON b.account_id = a.id
                                 WHERE a.tenant_id = $1 AND a.holder_id = h.holder_id
                                   AND a.kind = 'available'), 0) AS available_balance,
                       coalesce((SELECT sum(amount - voided_amount - clawed_back_amount)
                                 FROM rewards WHERE tenant_id = $1 AND holder_id = h.holder_id
                                   AND state = 'pending'), 0) AS pending_rewards
                FROM holders h
                """,
                self.tenant,
            )
        return rows


def _run_machine(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        pool = loop.run_until_complete(
            create_pool(
                database_url, schema="reward", application_name="props", min_size=1, max_size=4
            )
        )
        try:
            run_state_machine_as_test(
                lambda: LedgerMachine(loop, pool),  # type: ignore[arg-type]
                settings=settings(
                    max_examples=50,
                    stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    # Every step is real SQL: shrinking a failure would take many minutes, so a
                    # failure is reported as found (the steps are printed in full).
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                ),
            )
        finally:
            loop.run_until_complete(pool.close())
    finally:
        loop.close()


async def test_ledger_invariants_hold_under_random_work(database_url: str) -> None:
    # Hypothesis drives the machine synchronously, so it runs on its own loop in a thread.
    await asyncio.to_thread(_run_machine, database_url)
    # The runs reached every kind of movement (else the invariants were checked on too little).
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "reward"})
    try:
        legs = {r["leg"] for r in await conn.fetch("SELECT DISTINCT leg FROM transfers")}
    finally:
        await conn.close()
    assert {"earn", "release", "void", "clawback", "redeem"} <= legs, legs


async def test_concurrent_redemptions_never_overdraw(database_url: str) -> None:
    """100 parallel redemptions of 1.00 against 10.00 available: exactly 10 succeed."""
    pool = await create_pool(
        database_url, schema="reward", application_name="race", min_size=1, max_size=20
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await rule_handlers.put_reward_rule(
                conn,
                "race",
                "prg_r",
                rules.RuleDefinition(
                    hold_days=0,
                    rewards=(
                        rules.SideReward(
                            role="advocate",
                            trigger="signup",
                            amount=rules.Amount(unit="USD", fixed=1000),
                        ),
                    ),
                ),
                T0 - timedelta(days=1),
            )
            payload = ConversionAttributed(
                conversion_id="cnv_r",
                referral_id="ref_r",
                program_id="prg_r",
                advocate_id="adv_r",
                friend_customer_id="cus_r",
                conversion_type="signup",
                occurred_at=T0,
                evidence="code",
            )
            await earning.on_conversion_attributed(
                conn, new_event(payload, source="/t", tenant_id="race"), payload, T0
            )

        async def attempt(i: int) -> bool:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await payouts.redeem(
                        conn,
                        tenant_id="race",
                        holder_id="adv_r",
                        idempotency_key=f"key-{i}",
                        amount=100,
                        unit="USD",
                        reference=None,
                        now=T0,
                    )
                return True
            except Conflict:
                return False

        results = await asyncio.gather(*(attempt(i) for i in range(100)))
        assert results.count(True) == 10
        async with pool.acquire() as conn:
            [balance] = await ledger.get_balances(conn, "race", "adv_r")
            assert balance.available_minor == 0
            assert (
                await conn.fetchval("SELECT count(*) FROM redemptions WHERE tenant_id = 'race'")
                == 10
            )
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM transfers WHERE tenant_id = 'race' AND leg = 'redeem'"
                )
                == 10
            )
            report = await ledger.verify(conn, "race")
            assert report.ok, report.as_dict()

            # the same key again answers the first redemption and posts nothing new
            async with conn.transaction():
                again = await payouts.redeem(
                    conn,
                    tenant_id="race",
                    holder_id="adv_r",
                    idempotency_key="key-0" if results[0] else f"key-{results.index(True)}",
                    amount=100,
                    unit="USD",
                    reference=None,
                    now=T0,
                )
            assert not again.created
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM transfers WHERE tenant_id = 'race' AND leg = 'redeem'"
                )
                == 10
            )
    finally:
        await pool.close()


async def _verify_cli(database_url: str) -> subprocess.CompletedProcess[str]:
    """`reward-service verify` as an operator runs it: its own process, settings from the env."""
    env = {**os.environ, "DATABASE_URL": database_url}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reward_service.main", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_verify_finds_a_tampered_balance_and_an_orphan(database_url: str) -> None:
    """verify must be able to fail: a balance row moved behind the ledger's back and a transfer
    with no cause on record are both reported."""
    pool = await create_pool(
        database_url, schema="reward", application_name="tamper", min_size=1, max_size=2
    )
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await rule_handlers.put_reward_rule(
                    conn,
                    "tamper",
                    "prg_t",
                    rules.RuleDefinition(
                        hold_days=0,
                        rewards=(
                            rules.SideReward(
                                "advocate", "signup", rules.Amount(unit="EUR", fixed=300)
                            ),
                        ),
                    ),
                    T0 - timedelta(days=1),
                )
                payload = ConversionAttributed(
                    conversion_id="cnv_t",
                    referral_id="ref_t",
                    program_id="prg_t",
                    advocate_id="adv_t",
                    friend_customer_id="cus_t",
                    conversion_type="signup",
                    occurred_at=T0,
                    evidence="code",
                )
                await earning.on_conversion_attributed(
                    conn, new_event(payload, source="/t", tenant_id="tamper"), payload, T0
                )
            assert (await ledger.verify(conn, "tamper")).ok
            ok_run = await _verify_cli(database_url)
            assert ok_run.returncode == 0, ok_run.stderr
            assert json.loads(ok_run.stdout)["ok"] is True
            await conn.execute(
                "UPDATE balances SET balance = balance + 1 WHERE account_id IN ("
                " SELECT id FROM accounts WHERE tenant_id = 'tamper' AND kind = 'available')"
            )
            await conn.execute(
                """
                INSERT INTO transfers (id, tenant_id, debit_account, credit_account, amount,
                                       unit, cause, reward_id, leg)
                SELECT gen_random_uuid(), 'tamper', d.id, c.id, 5, 'EUR', 'nothing', NULL, 'redeem'
                FROM accounts d, accounts c
                WHERE d.tenant_id = 'tamper' AND d.kind = 'liability'
                  AND c.tenant_id = 'tamper' AND c.kind = 'available'
                """
            )
            report = await ledger.verify(conn, "tamper")
            failed = {c["name"] for c in report.as_dict()["checks"] if not c["ok"]}
            assert not report.ok
            assert {"units_sum_to_zero", "balances_match_entries", "orphan_transfers"} <= failed
            bad_run = await _verify_cli(database_url)
            assert bad_run.returncode == 1
            cli_failed = {c["name"] for c in json.loads(bad_run.stdout)["checks"] if not c["ok"]}
            assert failed <= cli_failed
    finally:
        await pool.close()


def _scripted(database_url: str, clawback: rules.ClawbackPolicy) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    try:
        pool = loop.run_until_complete(
            create_pool(
                database_url, schema="reward", application_name="script", min_size=1, max_size=2
            )
        )
        try:
            m = LedgerMachine(loop, pool)
            m.put_rule(clawback)
            m.convert("adv_a", 0, 10_000)  # advocate 10.00 (10%), friend 5.00
            m.advance_and_release(31)
            m.redeem("adv_a", "half")  # 5.00 of 10.00 spent
            before = m.run(m._available("adv_a"))
            m.fully_refunded.clear()

            class _Data:
                def draw(self, _strategy: Any) -> Any:
                    return m.events[0]

            m.refund(_Data(), 100, True)
            after = m.run(m._available("adv_a"))
            m.ledger_is_sound()
            m.balances_agree_with_rewards()
            debt = m.run(m._tx(ledger.get_balances, m.tenant, "adv_a"))
            m.convert("adv_a", 1, 30_000)  # a later reward settles the debt first
            m.advance_and_release(31)
            m.ledger_is_sound()
            later = m.run(m._tx(ledger.get_balances, m.tenant, "adv_a"))
            return {"before": before, "after": after, "debt": debt, "later": later}
        finally:
            loop.run_until_complete(pool.close())
    finally:
        loop.close()


@pytest.mark.parametrize("clawback", ["negative_entry", "debt"])
async def test_refund_after_release_claws_back_per_policy(
    database_url: str, clawback: rules.ClawbackPolicy
) -> None:
    r = await asyncio.to_thread(_scripted, database_url, clawback)
    assert r["before"] == 500
    [debt_balance] = r["debt"]
    [later] = r["later"]
    if clawback == "negative_entry":
        assert r["after"] == -500 and debt_balance.debt_minor == 0
        # the next reward (10% of 300.00 = 30.00) lands on top of the negative balance
        assert later.available_minor == -500 + 3000
    else:
        assert r["after"] == 0 and debt_balance.debt_minor == 500
        assert (later.available_minor, later.debt_minor) == (3000 - 500, 0)


async def test_concurrent_conversions_of_one_advocate_respect_the_caps(database_url: str) -> None:
    """Replicas or replays can hand one advocate's conversions to several transactions at once:
    the advocate's row lock makes the cap checks take turns, so exactly max_count are granted."""
    pool = await create_pool(
        database_url, schema="reward", application_name="caps", min_size=1, max_size=10
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await rule_handlers.put_reward_rule(
                conn,
                "caps",
                "prg_c",
                rules.RuleDefinition(
                    hold_days=0,
                    rewards=(
                        rules.SideReward(
                            "advocate", "every_purchase", rules.Amount(unit="USD", fixed=700)
                        ),
                    ),
                    caps=(rules.Cap("month", max_count=5),),
                    budget=rules.Budget(100_000, "USD"),
                ),
                T0 - timedelta(days=1),
            )

        async def convert(i: int) -> list[Reward]:
            payload = ConversionAttributed(
                conversion_id=f"cnv_c{i}",
                referral_id=f"ref_c{i}",
                program_id="prg_c",
                advocate_id="adv_c",
                friend_customer_id=f"cus_c{i}",
                conversion_type="purchase",
                amount_minor=5000,
                currency="USD",
                occurred_at=T0,
                evidence="code",
            )
            async with pool.acquire() as conn, conn.transaction():
                return await earning.on_conversion_attributed(
                    conn, new_event(payload, source="/t", tenant_id="caps"), payload, T0
                )

        results = await asyncio.gather(*(convert(i) for i in range(20)))
        rewards = [r for batch in results for r in batch]
        assert len(rewards) == 20
        assert sorted(r.amount for r in rewards) == [0] * 15 + [700] * 5
        assert {r.capped_reason for r in rewards if r.amount == 0} == {"advocate_count_cap"}
        async with pool.acquire() as conn:
            [balance] = await ledger.get_balances(conn, "caps", "adv_c")
            assert balance.available_minor == 3500
            assert (
                await conn.fetchval("SELECT spent FROM program_spend WHERE tenant_id = 'caps'")
                == 3500
            )
            assert (await ledger.verify(conn, "caps")).ok
    finally:
        await pool.close()


async def test_each_coupon_code_is_handed_out_once_under_concurrency(database_url: str) -> None:
    pool = await create_pool(
        database_url, schema="reward", application_name="coupons", min_size=1, max_size=10
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            coupons = await coupon_handlers.create_coupon_pool(
                conn, "cpn", "prg_k", "welcome", 3, [f"CODE{i:02d}" for i in range(10)]
            )
            await rule_handlers.put_reward_rule(
                conn,
                "cpn",
                "prg_k",
                rules.RuleDefinition(
                    hold_days=0,
                    rewards=(
                        rules.SideReward(
                            "friend",
                            "signup",
                            rules.Amount(unit=COUPON, fixed=1),
                            kind="coupon",
                            coupon_pool_id=coupons.id,
                        ),
                    ),
                ),
                T0 - timedelta(days=1),
            )

        async def signup(i: int) -> list[Reward]:
            payload = ConversionAttributed(
                conversion_id=f"cnv_k{i}",
                referral_id=f"ref_k{i}",
                program_id="prg_k",
                advocate_id=f"adv_k{i % 4}",
                friend_customer_id=f"cus_k{i}",
                conversion_type="signup",
                occurred_at=T0,
                evidence="code",
            )
            async with pool.acquire() as conn, conn.transaction():
                return await earning.on_conversion_attributed(
                    conn, new_event(payload, source="/t", tenant_id="cpn"), payload, T0
                )

        rewards = [
            r for batch in await asyncio.gather(*(signup(i) for i in range(16))) for r in batch
        ]
        assert len(rewards) == 16
        given = [r for r in rewards if r.amount == 1]
        assert len(given) == 10
        assert {r.capped_reason for r in rewards if r.amount == 0} == {"coupon_pool_empty"}
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT code, reward_id, holder_id FROM coupon_codes WHERE pool_id = $1",
                coupons.id,
            )
            assert {r["reward_id"] for r in rows} == {r.id for r in given}
            assert {r["holder_id"] for r in rows} == {r.holder_id for r in given}
            lows = await conn.fetch(
                "SELECT convert_from(payload, 'UTF8')::jsonb->'data'->>'remaining' AS remaining"
                " FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb->>'type'"
                " = 'coupon_pool.low.v1'"
            )
            # 3, 2, 1 and 0 left after an allocation, then once per friend who found none
            assert sorted(int(r["remaining"]) for r in lows) == [0] * 7 + [1, 2, 3]
            assert (await coupon_handlers.get_coupon_pool(conn, "cpn", coupons.id)).remaining == 0
    finally:
        await pool.close()


@pytest.mark.parametrize("full", [False, True], ids=["partial", "full"])
@pytest.mark.parametrize("refund_first", [False, True], ids=["attributed-first", "refund-first"])
async def test_a_refund_reaches_the_reward_whatever_the_order(
    database_url: str, refund_first: bool, full: bool
) -> None:
    """A refund delivered before the attribution (reordered, or refunded while the conversion
    waited for review) was recorded with no reward to take from, and the reward was later
    earned in full: both orders must leave the same net reward."""
    pool = await create_pool(
        database_url, schema="reward", application_name="t", min_size=1, max_size=2
    )
    tenant = f"order{next(_tenants)}"

    async def tx(fn: Any, *args: Any) -> Any:
        async with pool.acquire() as conn, conn.transaction():
            return await fn(conn, *args)

    try:
        await tx(
            rule_handlers.put_reward_rule,
            tenant,
            "prg_p",
            _rule("negative_entry"),
            T0 - timedelta(days=1),
        )
        attributed = ConversionAttributed(
            conversion_id="cnv_w",
            referral_id="ref_w",
            program_id="prg_p",
            advocate_id="adv_a",
            friend_customer_id="cus_w",
            conversion_type="purchase",
            order_id="ord_w",
            amount_minor=10_000,
            currency="USD",
            is_first_purchase=True,
            occurred_at=T0,
            evidence="code",
        )
        refunded = ConversionRefunded(
            conversion_id="cnv_w",
            refund_id="rf_w",
            program_id="prg_p",
            advocate_id="adv_a",
            friend_customer_id="cus_w",
            conversion_type="purchase",
            amount_minor=10_000 if full else 4_000,
            currency="USD",
            refunded_total_minor=10_000 if full else 4_000,
            full=full,
            refunded_at=T0,
        )
        steps = [
            (earning.on_conversion_attributed, attributed),
            (earning.on_conversion_refunded, refunded),
        ]
        for fn, payload in reversed(steps) if refund_first else steps:
            await tx(fn, new_event(payload, source="/test", tenant_id=tenant), payload, T0)
        pending = {
            holder: sum(b.pending_minor for b in await tx(ledger.get_balances, tenant, holder))
            for holder in ("adv_a", "cus_w")
        }
        # 10% of 100.00 kept on 60.00: 6.00; the friend's fixed 5.00 goes on a full refund only
        assert pending == ({"adv_a": 0, "cus_w": 0} if full else {"adv_a": 600, "cus_w": 500})
    finally:
        await pool.close()
