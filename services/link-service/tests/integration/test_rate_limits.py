"""Rate limits: a workspace key's token bucket (by its workspace's plan) answers 429 with
Retry-After and RateLimit-* once empty while another key is unaffected; unknown-code probes on
/r/ are limited per client address while known codes keep redirecting. Both with the front door
and without (the same function refuses on either path)."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.testing import FRONT_AND_FASTAPI

pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

LIMITS = {
    "rate_limit_plans": {"free": {"per_second": 0.2, "burst": 4}},
    "redirect_unknown_code_per_second": 0.1,
    "redirect_unknown_code_burst": 3,
    "client_ip_header": "x-forwarded-for",
}


JSON = {"content-type": "application/json"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("link_settings", [LIMITS], indirect=True)
async def test_an_empty_bucket_answers_429_and_other_keys_go_on(env: Any) -> None:
    c = env.client
    r = await c.post("/v1/workspaces", json={"name": "Small", "plan": "free"})
    assert r.status_code == 201, r.text
    admin = r.json()["admin_key"]["key"]
    keys = []
    for name in ("a", "b"):
        r = await c.post(
            "/v1/api-keys", headers=bearer(admin), json={"name": name, "scopes": ["programs:read"]}
        )
        assert r.status_code == 201, r.text
        keys.append(r.json()["key"])
    a, b = keys
    for _ in range(4):
        assert (await c.get("/v1/programs", headers=bearer(a))).status_code == 200
    refused = await c.get("/v1/programs", headers=bearer(a))
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "4"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert (await c.get("/v1/programs", headers=bearer(b))).status_code == 200
    # bootstrap (platform) keys are not limited
    for _ in range(6):
        assert (await c.get("/v1/programs")).status_code == 200


@pytest.mark.parametrize("link_settings", [LIMITS], indirect=True)
async def test_unknown_code_probes_are_limited_per_client_known_codes_redirect(env: Any) -> None:
    c = env.client
    r = await c.post(
        "/v1/programs", json={"name": "P", "landing_url": "https://shop.example.com/join"}
    )
    assert r.status_code == 201, r.text
    r = await c.post(f"/v1/programs/{r.json()['id']}/advocates", json={"customer_id": "cus_1"})
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    prober = {"x-forwarded-for": "203.0.113.7"}
    for i in range(3):
        assert (await c.get(f"/r/NOPE{i}XYZ", headers=prober)).status_code == 404
    limited = await c.get("/r/NOPE9XYZ", headers=prober)
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "3"
    for _ in range(5):
        r = await c.get(f"/r/{code}", headers=prober)
        assert r.status_code == 302, r.text
    other = {"x-forwarded-for": "198.51.100.1"}
    assert (await c.get("/r/NOPE0XYZ", headers=other)).status_code == 404


@pytest.mark.parametrize("link_settings", [LIMITS], indirect=True)
async def test_every_answer_to_a_limited_key_carries_its_ratelimit_headers(env: Any) -> None:
    c = env.client
    r = await c.post("/v1/workspaces", json={"name": "Headers", "plan": "free"})
    admin = r.json()["admin_key"]["key"]
    r = await c.post(
        "/v1/api-keys",
        headers=bearer(admin),
        json={"name": "h", "scopes": ["programs:read", "programs:write"]},
    )
    key = r.json()["key"]
    answers = [
        await c.get("/v1/programs", headers=bearer(key)),  # 200
        await c.get("/v1/programs/prg_nosuch", headers=bearer(key)),  # 404
        await c.post("/v1/programs", headers=bearer(key), json={"name": ""}),  # 422
        await c.post("/v1/programs", headers={**bearer(key), **JSON}, content=b"{"),  # 422
    ]
    assert [a.status_code for a in answers] == [200, 404, 422, 422], [a.text for a in answers]
    # (a body that is not JSON is refused before the key is looked at: no token, no headers)
    assert "ratelimit-limit" not in answers.pop().headers
    answers.append(await c.get("/v1/programs", headers=bearer(key)))
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0"]
    for a in answers:
        assert a.headers["ratelimit-limit"] == "4"
        assert int(a.headers["ratelimit-reset"]) >= 1
        assert a.headers["ratelimit-policy"] == "4;w=20"
    # a bootstrap key is not limited: no headers
    assert "ratelimit-limit" not in (await c.get("/v1/programs")).headers
    # unknown-code probes: the client's bucket
    probe = await c.get("/r/NOPE1XYZ", headers={"x-forwarded-for": "203.0.113.9"})
    assert probe.status_code == 404
    assert probe.headers["ratelimit-limit"] == "3" and probe.headers["ratelimit-remaining"] == "2"
