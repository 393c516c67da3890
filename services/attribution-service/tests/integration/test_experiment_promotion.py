"""Promoting an experiment's winner on real Kafka + Postgres: only the readout's winner without
`force` (409 on /variant otherwise), the winner's config out as reward_rule.promoted.v1 in the
promoting transaction (once, whatever is repeated), the split stopped (every advocate gets the
winner). reward-service's side: services/reward-service/tests/integration/test_rule_promotion.py;
both as processes: tests/e2e/test_experiment_promotion.py."""

from __future__ import annotations

import asyncpg
import pytest

from attribution_service.experiments import domain
from referral_events import new_event
from referral_events.contracts import attribution as at
from referral_events.outbox import OutboxRow, enqueue_rows

from .conftest import Env
from .test_analytics import _folded
from .test_experiments import _program

pytestmark = pytest.mark.integration


def _side(minor: int) -> dict[str, object]:
    return {"trigger": "first_purchase", "amount": {"amount_minor": minor, "currency": "USD"}}


TEN = {"advocate": _side(1000)}
TWENTY = {"advocate": _side(2000), "friend": _side(2000)}
BODY = {
    "name": "give 10 vs give 20 get 20",
    "kind": "reward_rule",
    "variants": [
        {"key": "ten", "weight": 1, "config": TEN},
        {"key": "twenty", "weight": 1, "config": TWENTY},
    ],
}
ADVOCATES = 300


async def _db(env: Env) -> asyncpg.Connection:
    schema = {"search_path": "attribution"}
    return await asyncpg.connect(env.ns.database_url, server_settings=schema)


async def _referrals(env: Env, program: str, advocates: list[str]) -> None:
    """referral.attributed for each advocate, as the conversions' transactions emit them."""
    rows = []
    for a in advocates:
        payload = at.ReferralAttributed(
            referral_id=f"ref-{a}", program_id=program, advocate_id=a, friend_customer_id=f"f-{a}",
            conversion_id=f"cv-{a}", evidence="code", attributed_at="2026-11-03T10:00:00Z",
        )  # fmt: skip
        event = new_event(payload, source="/test", tenant_id="acme")
        rows.append(OutboxRow(event.id, "attribution.events", a, event.to_json()))
    conn = await _db(env)
    try:
        async with conn.transaction():
            await enqueue_rows(conn, rows)
    finally:
        await conn.close()


async def _salt(env: Env, experiment_id: str) -> str:
    conn = await _db(env)
    try:
        salt: str = await conn.fetchval("SELECT salt FROM experiments WHERE id = $1", experiment_id)
    finally:
        await conn.close()
    return salt


async def test_only_the_winner_is_promoted_once_and_its_rule_goes_out(env: Env) -> None:
    n = await _program(env, "prg_w", advocates=ADVOCATES)
    await _folded(env, n)
    r = await env.client.post("/v1/programs/prg_w/experiments", json=BODY)
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    path = f"/v1/programs/prg_w/experiments/{eid}"
    # a draft is not promoted, forced or not
    r = await env.client.post(f"{path}/promote", json={"variant": "twenty", "force": True})
    assert r.status_code == 409 and r.json()["field"] == "/status", r.text
    assert (await env.client.post(f"{path}/start")).status_code == 200

    # by the split: 3 in 5 of twenty's advocates refer someone, 1 in 10 of ten's
    salt = await _salt(env, eid)
    variants = [domain.Variant("ten", 1), domain.Variant("twenty", 1)]
    split = {a: domain.assign(a, salt, variants) for a in (f"prg_w-a{k}" for k in range(ADVOCATES))}
    referring = [
        a for k, a in enumerate(split) if (k % 5 < 3 if split[a] == "twenty" else k % 10 == 0)
    ]
    await _referrals(env, "prg_w", referring)
    await _folded(env, n)

    exp = (await env.client.get(path)).json()
    assert [v["advocates"] for v in exp["variants"]] == [
        sum(v == "ten" for v in split.values()), sum(v == "twenty" for v in split.values())
    ]  # fmt: skip
    assert min(v["advocates"] for v in exp["variants"]) >= 100
    [readout] = exp["readout"]
    assert readout["significant"] and readout["leader"] == "twenty", readout
    assert exp["known_winner"] == "twenty"

    # not the winner: 409 naming the variant, nothing changed
    r = await env.client.post(f"{path}/promote", json={"variant": "ten"})
    assert r.status_code == 409 and r.json()["field"] == "/variant", r.text
    assert "twenty" in r.json()["detail"]
    assert (await env.client.get(path)).json()["status"] == "running"

    r = await env.client.post(f"{path}/promote", json={"variant": "twenty"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["winner"]) == ("ended", "twenty")
    ended_at = r.json()["ended_at"]
    # the same promotion again (a retry): the same answer, no second event
    again = await env.client.post(f"{path}/promote", json={"variant": "twenty"})
    assert again.status_code == 200 and again.json()["ended_at"] == ended_at
    # another winner after the end: 409
    r = await env.client.post(f"{path}/promote", json={"variant": "ten", "force": True})
    assert r.status_code == 409 and r.json()["field"] == "/status", r.text

    # the split has stopped: an advocate of ten, and one enrolled after, get the winner
    ten = next(a for a, v in split.items() if v == "ten")
    r = await env.client.get(f"{path}/assignments/{ten}")
    assert (r.json()["variant"], r.json()["split_variant"]) == ("twenty", "ten")
    r = await env.client.get(f"{path}/assignments/adv_enrolled_later")
    assert r.json()["variant"] == "twenty"

    events = await env.events(lambda es: any(e.type == at.RewardRulePromoted.TYPE for e in es))
    promoted = [e for e in events if e.type == at.RewardRulePromoted.TYPE]
    ended = [e for e in events if e.type == at.ExperimentEnded.TYPE]
    assert len(promoted) == 1 and len(ended) == 1
    assert promoted[0].tenantid == "acme"
    assert promoted[0].data | {"promoted_at": None} == {
        "experiment_id": eid, "program_id": "prg_w", "variant": "twenty", "rule": TWENTY,
        "forced": False, "promoted_at": None,
    }  # fmt: skip


async def test_a_share_message_winner_ends_the_experiment_without_a_rule(env: Env) -> None:
    n = await _program(env, "prg_s", advocates=3)
    await _folded(env, n)
    body = {**BODY, "kind": "share_message", "variants": [
        {"key": "a", "weight": 1, "config": {"text": "Get 20"}},
        {"key": "b", "weight": 1, "config": {"text": "Give 20"}}]}  # fmt: skip
    eid = (await env.client.post("/v1/programs/prg_s/experiments", json=body)).json()["id"]
    path = f"/v1/programs/prg_s/experiments/{eid}"
    assert (await env.client.post(f"{path}/start")).status_code == 200
    r = await env.client.post(f"{path}/promote", json={"variant": "b"})
    assert r.status_code == 409 and "no winner" in r.json()["detail"]
    r = await env.client.post(f"{path}/promote", json={"variant": "b", "force": True})
    assert r.status_code == 200 and r.json()["winner"] == "b"
    events = await env.events(lambda es: any(e.type == at.ExperimentEnded.TYPE for e in es))
    assert not [e for e in events if e.type == at.RewardRulePromoted.TYPE]
