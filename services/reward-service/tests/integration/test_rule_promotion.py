"""An experiment's winner promoted to the program's reward rule, reward-service in-process on
real Kafka + Postgres: attribution's reward_rule.promoted.v1 (published as attribution-service's
promote emits it) writes the winner's config as a new rule version, once whatever is redelivered,
and the next conversion is rewarded by it; a config that is no valid rule changes nothing and is
recorded as refused. Both services as processes: tests/e2e/test_experiment_promotion.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from referral_events import CloudEvent, new_event
from referral_events.contracts.attribution import RewardRulePromoted

from .test_reward_flow import Env, balances, conversion, env, usd

__all__ = ["env"]  # the fixture, shared with test_reward_flow

pytestmark = pytest.mark.integration


def _side(minor: int) -> dict[str, Any]:
    return {"trigger": "first_purchase", "amount": {"amount_minor": minor, "currency": "USD"}}


TWENTY = {"advocate": _side(2000), "friend": _side(2000)}


async def _promote(env: Env, experiment: str, rule: dict[str, Any]) -> CloudEvent:
    payload = RewardRulePromoted(
        experiment_id=experiment,
        program_id="prg_1",
        variant="twenty",
        rule=rule,
        promoted_at=datetime.now(UTC),
    )
    event = new_event(payload, source="/services/attribution-service", tenant_id="acme")
    await _send(env, event)
    return event


async def _send(env: Env, event: CloudEvent) -> None:
    topic = env.ns.topic_prefix + "attribution.events"
    await env.producer.send_and_wait(topic, event.to_json(), key=b"prg_1")


async def test_the_winner_becomes_the_rule_once_and_rewards_the_next_conversion(env: Env) -> None:
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json={"advocate": _side(1000)})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        assert r.json()["promoted_from"] is None
        await env.publish(conversion("c1", advocate_id="adv_a", occurred_at=env.clock.now))
        await env.caught_up()
        assert await balances(client, "adv_a") == usd(1000)

        env.clock.advance(timedelta(minutes=1))
        promoted = await _promote(env, "exp_1", TWENTY)
        # redelivered, and re-emitted under another event id: one version all the same
        await _send(env, promoted)
        await _promote(env, "exp_1", TWENTY)
        await env.caught_up()

        r = await client.get("/v1/programs/prg_1/reward-rule")
        rule = r.json()
        assert rule["version"] == 2, rule
        assert rule["advocate"]["amount"]["fixed"] == 2000
        assert rule["friend"]["amount"]["fixed"] == 2000
        assert rule["promoted_from"] | {"promoted_at": None} == {
            "experiment_id": "exp_1", "variant": "twenty", "forced": False, "promoted_at": None,
        }  # fmt: skip
        assert await env.db.fetchval("SELECT count(*) FROM rule_versions") == 2

        # a conversion occurring after the promotion is rewarded by the winner, both sides
        at = env.clock.now + timedelta(seconds=1)
        await env.publish(conversion("c2", advocate_id="adv_b", occurred_at=at))
        await env.caught_up()
        assert await balances(client, "adv_b") == usd(2000)
        assert await balances(client, "cus_bob") == usd(2000)
        assert await balances(client, "adv_a") == usd(1000)

        # another experiment promoting the rule in force: recorded, no new version
        await _promote(env, "exp_2", TWENTY)
        # a config that is no valid rule: refused, naming the field; the rule stays
        await _promote(env, "exp_3", {"advocate": {"trigger": "first_purchase"}})
        await _promote(env, "exp_4", {"advocate": _side(500), "tier": 1})
        await env.caught_up()
        assert (await client.get("/v1/programs/prg_1/reward-rule")).json()["version"] == 2
        rows = await env.db.fetch(
            "SELECT experiment_id, outcome, field, rule_version_id FROM rule_promotions"
            " ORDER BY experiment_id"
        )
        assert [(r["experiment_id"], r["outcome"], r["field"]) for r in rows] == [
            ("exp_1", "applied", None),
            ("exp_2", "unchanged", None),
            ("exp_3", "refused", "/advocate/amount"),
            ("exp_4", "refused", "/tier"),
        ]
        assert rows[0]["rule_version_id"] == rows[1]["rule_version_id"] == rule["id"]
        [consumer] = env.runtime.consumers
        assert consumer.dead_lettered == 0 and consumer.duplicates == 1
        await env.assert_ledger_balances()
