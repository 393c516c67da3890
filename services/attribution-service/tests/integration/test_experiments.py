"""A/B experiments on real Kafka + Postgres: lifecycle with its events, the promote of a
winner, per-variant figures and readout, the assignment unchanged by a restart, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from attribution_service.main import create_app
from devstack.testing import serve_in_process
from referral_events.contracts import attribution as at
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw

from .conftest import Env
from .test_analytics import _folded, emit_own

pytestmark = pytest.mark.integration

BODY = {
    "name": "give 10 vs give 20",
    "kind": "reward_rule",
    "variants": [
        {"key": "ten", "weight": 1, "config": {"advocate_reward": {"amount_minor": 1000}}},
        {"key": "twenty", "weight": 1, "config": {"advocate_reward": {"amount_minor": 2000}}},
    ],
}


async def _program(env: Env, program: str, tenant: str = "acme", advocates: int = 0) -> int:
    await env.publish("link.events", ev.ProgramCreated(
        program_id=program, name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]), tenant=tenant)  # fmt: skip
    for k in range(advocates):
        await env.publish("link.events", ev.AdvocateEnrolled(
            advocate_id=f"{program}-a{k}", program_id=program, customer_id=f"c{k}"))  # fmt: skip
    return 1 + advocates


async def test_lifecycle_events_figures_and_restart(env: Env) -> None:
    n = await _program(env, "prg_e", advocates=40)
    n += await _program(env, "prg_other")
    # a quarter of the advocates referred someone
    for k in range(0, 40, 4):
        await emit_own(env, at.ReferralAttributed(
            referral_id=f"r{k}", program_id="prg_e", advocate_id=f"prg_e-a{k}",
            friend_customer_id=f"f{k}", conversion_id=f"cv{k}", evidence="code",
            attributed_at="2026-11-03T10:00:00Z"))  # fmt: skip
    await env.publish("reward.events", rw.RewardAvailable(
        reward_id="rw0", program_id="prg_e", advocate_id="prg_e-a0", holder_id="prg_e-a0",
        role="advocate", conversion_id="cv0", kind="credit", amount=1000, unit="USD"))  # fmt: skip
    await _folded(env, n + 1)

    r = await env.client.post("/v1/programs/prg_e/experiments", json=BODY)
    assert r.status_code == 201, r.text
    exp = r.json()
    eid, path = exp["id"], f"/v1/programs/prg_e/experiments/{exp['id']}"
    assert exp["status"] == "draft"
    # every advocate is in one variant; the figures add up; too few for a readout
    assert sum(v["advocates"] for v in exp["variants"]) == 40
    assert sum(v["referred"] for v in exp["variants"]) == 10
    # each variant's funnel and cost: its advocates' referrals and earnings
    for v in exp["variants"]:
        assert v["funnel"].get("referrals", {}).get("", 0) == v["referred"]
    assert exp["readout"] == [
        {"variant": "twenty", "enough_data": False, "p_value": None, "significant": False,
         "leader": None}
    ]  # fmt: skip

    for action, status in [("start", "running"), ("pause", "paused"), ("start", "running")]:
        r = await env.client.post(f"{path}/{action}")
        assert r.status_code == 200 and r.json()["status"] == status, r.text
    r = await env.client.post(f"{path}/pause")
    r = await env.client.post(f"{path}/pause")
    assert r.status_code == 409
    # only one live experiment per program
    r = await env.client.post("/v1/programs/prg_e/experiments", json=BODY)
    r = await env.client.post(f"/v1/programs/prg_e/experiments/{r.json()['id']}/start")
    assert r.status_code == 409 and r.json()["field"] == "/status"

    # the assignment is the same from a second instance of the service (a restart)
    before = {
        k: (await env.client.get(f"{path}/assignments/prg_e-a{k}")).json()["variant"]
        for k in range(40)
    }
    async with serve_in_process(create_app(env.settings), env.key) as again:
        after = {
            k: (await again.get(f"{path}/assignments/prg_e-a{k}")).json()["variant"]
            for k in range(40)
        }
    assert after == before
    counts = Counter(before.values())
    assert {v["key"]: v["advocates"] for v in exp["variants"]} == dict(counts)
    earned = {v["key"]: v["funnel"].get("earned", {}) for v in exp["variants"]}
    assert earned[before[0]] == {"USD": 1000} and sum(len(e) for e in earned.values()) == 1

    # promote: a variant of this experiment only; then ended with its winner
    r = await env.client.post(f"{path}/promote", json={"variant": "fifty"})
    assert r.status_code == 422 and r.json()["field"] == "/variant"
    # too few advocates for a readout: no winner is known, so only a forced promotion
    r = await env.client.post(f"{path}/promote", json={"variant": "twenty", "force": True})
    assert r.status_code == 200 and (r.json()["status"], r.json()["winner"]) == (
        "ended", "twenty")  # fmt: skip

    events = await env.events(lambda es: sum(e.type.startswith("experiment.") for e in es) >= 5)
    mine = [e for e in events if e.type.startswith("experiment.")]
    assert [e.type for e in mine] == [
        "experiment.started.v1", "experiment.paused.v1", "experiment.started.v1",
        "experiment.paused.v1", "experiment.ended.v1",
    ]  # fmt: skip
    assert mine[-1].data["winner"] == "twenty" and mine[-1].data["salt"]

    # another program's experiment, another tenant's program: 404
    r = await env.client.get(f"/v1/programs/prg_other/experiments/{eid}")
    assert r.status_code == 404 and r.json()["field"] == "/experiment_id"


async def test_bad_input(env: Env) -> None:
    await _folded(env, await _program(env, "prg_f") + await _program(env, "prg_g", "globex"))
    zero = {**BODY, "variants": [{**v, "weight": 0} for v in BODY["variants"]]}  # type: ignore[dict-item]
    r = await env.client.post("/v1/programs/prg_f/experiments", json=zero)
    assert r.status_code == 422 and r.json()["field"] == "/variants"
    r = await env.client.post("/v1/programs/prg_g/experiments", json=BODY)
    assert r.status_code == 404 and r.json()["field"] == "/program_id"
    r = await env.client.get("/v1/programs/prg_f/experiments/exp_nope")
    assert r.status_code == 404
