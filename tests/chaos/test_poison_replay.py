"""A poison event: dead-lettered after the inbox's bounded tries while its partition keeps
flowing, then replayed once the bug is fixed (issue #21). link, attribution and reward-service
as processes, the session's broker and Postgres, a namespace of the test's own.

The "bug" is a Postgres trigger the test installs on reward.rewards that raises for the reward
of one purchase (found by its order id): reward-service's handler of that purchase's
conversion.attributed fails on every try, not through a mock. The purchases before and after it
are all one advocate's, so all its events share one key and one partition. Then:

- the poison event reaches attribution.events.dlq (one record, naming reward-service) after
  CONSUMER_MAX_ATTEMPTS tries, and every later purchase on the partition is rewarded meanwhile;
- the trigger is dropped (the fix) and `reward-service replay-dlq` runs twice: the first run
  applies the event, the second finds nothing left to replay; the purchase is rewarded exactly
  once, the balance is every purchase's reward, the ledger verifies.

How it fails: with the trigger left in place the replay dead-letters the event again and its
reward is missing (checked: the first replay then reports "1 dead_lettered"); were a replay
applied twice, the balance and the reward count would show it (the inbox and the rewards'
unique key are what prevent it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, new_api_key, read_to_end

from .harness import (
    READY_WITHIN_S,
    REWARD_MINOR,
    print_tracebacks,
    purchase,
    rewarded_program,
    until_ok,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

LINK, ATTRIBUTION, REWARD = services.SERVICES[:3]
PURCHASES = 40
POISON = 12  # the purchase whose reward the trigger refuses
RATE = 10.0  # purchases per second: the partition is busy before, during and after the tries

BUG = f"""
CREATE FUNCTION reward.chaos_bug() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM attribution.conversions
               WHERE id = NEW.conversion_id AND order_id = 'ord_{POISON}') THEN
        RAISE EXCEPTION 'chaos: a bug in the reward of conversion %', NEW.conversion_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER chaos_bug BEFORE INSERT ON reward.rewards
    FOR EACH ROW EXECUTE FUNCTION reward.chaos_bug();
"""  # noqa: S608  (the test's own constant formatted in)
FIX = "DROP TRIGGER chaos_bug ON reward.rewards; DROP FUNCTION reward.chaos_bug();"


@dataclass
class Stack:
    cfg: services.StackConfig
    urls: dict[str, str]
    headers: dict[str, str]


@pytest.fixture
async def stack(namespace: Namespace, tmp_path: Path) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    cfg = namespace.stack_config([entry], tmp_path / "logs", OUTBOX_POLL_INTERVAL_SECONDS="0.2")
    await asyncio.to_thread(services.migrate_here, cfg, (LINK, ATTRIBUTION, REWARD))
    running = services.start(cfg, (LINK, ATTRIBUTION, REWARD))
    try:
        await asyncio.to_thread(services.wait_ready, running, READY_WITHIN_S)
        yield Stack(
            cfg,
            {r.definition.name: r.url for r in running},
            {"Authorization": f"Bearer {key}"},
        )
    finally:
        await asyncio.to_thread(services.stop, running)
        print_tracebacks(tmp_path / "logs")


def _replay(cfg: services.StackConfig) -> str:
    done = subprocess.run(  # noqa: S603  (this interpreter, the service's own module)
        [sys.executable, "-m", f"{REWARD.package}.main", "replay-dlq"],
        env=cfg.env(REWARD),
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    return done.stdout.strip().splitlines()[-1]  # the summary, after the logs


async def test_poison_event_dead_lettered_then_replayed_once(stack: Stack) -> None:
    started = time.monotonic()
    cfg = stack.cfg
    dlq = f"{cfg.topic_prefix}attribution.events.dlq"
    db = await asyncpg.connect(cfg.database_url)
    try:
        async with httpx.AsyncClient(headers=stack.headers, timeout=15) as http:
            reward = stack.urls[REWARD.name]
            program = await rewarded_program(
                http, stack.urls[LINK.name], stack.urls[ATTRIBUTION.name], reward, 1
            )
            [(advocate, code)] = program.advocates
            await db.execute(BUG)
            pushed_at = time.monotonic()
            for n in range(PURCHASES):
                await asyncio.sleep(max(0.0, pushed_at + n / RATE - time.monotonic()))
                body = purchase(n, code)
                r = await until_ok(
                    lambda b=body, k=n: http.post(
                        f"{stack.urls[ATTRIBUTION.name]}/v1/conversions",
                        json=b,
                        headers={"Idempotency-Key": f"ord_{k}"},
                    ),
                    f"purchase {n}",
                )
                assert r.status_code == 201, r.text
            conversion = {
                r["order_id"]: r["id"]
                for r in await db.fetch(
                    "SELECT order_id, id FROM attribution.conversions WHERE type = 'purchase'"
                )
            }
            poison = conversion[f"ord_{POISON}"]

            async def rewarded() -> set[str]:
                return {
                    r["conversion_id"]
                    for r in await db.fetch("SELECT conversion_id FROM reward.rewards")
                }

            async def dead_lettered() -> list[Any]:  # the services created the topic
                return await read_to_end(cfg.kafka_bootstrap_servers, dlq)

            # every other purchase rewarded, those after the poison on its partition included
            others = {c for o, c in conversion.items() if o != f"ord_{POISON}"}

            async def others_rewarded() -> bool:
                return others <= await rewarded()

            await eventually(others_rewarded, timeout=120)
            [letter] = await eventually(dead_lettered, timeout=60)
            tries_s = time.monotonic() - pushed_at
            assert poison not in await rewarded()
            headers = {k: bytes(v).decode() for k, v in letter.headers}
            assert headers["dlq.consumer"] == REWARD.name, headers
            assert json.loads(letter.value)["data"]["conversion_id"] == poison
            assert "chaos: a bug" in headers["dlq.error"], headers["dlq.error"]

            await db.execute(FIX)
            first = await asyncio.to_thread(_replay, cfg)
            second = await asyncio.to_thread(_replay, cfg)

            rewards = await db.fetch(
                "SELECT conversion_id, count(*) AS n FROM reward.rewards GROUP BY conversion_id"
            )
            r = await http.get(f"{reward}/v1/accounts/{advocate}/balance")
            assert r.status_code == 200, r.text
            balances = {b["unit"]: b["available"] for b in r.json()["balances"]}
            r = await http.get(f"{reward}/v1/admin/ledger/verify")
            verify = r.json()
        letters = await dead_lettered()
    finally:
        await db.close()
    print(
        json.dumps(
            {
                "purchases": PURCHASES,
                "settled_after_push_s": round(tries_s, 1),
                "replay_1": first,
                "replay_2": second,
                "dead_letters": len(letters),
                "total_seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    assert "1 dead letters read: 1 handled" in first, first
    assert "0 dead letters read" in second, second
    assert {r["conversion_id"]: r["n"] for r in rewards} == dict.fromkeys(conversion.values(), 1)
    assert balances == {"USD": f"{PURCHASES * REWARD_MINOR / 100:.2f}"}, balances
    assert verify.get("ok"), verify
    assert len(letters) == 1  # the replay put nothing back
