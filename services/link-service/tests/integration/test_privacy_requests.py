"""Personal data requests on link-service alone (the other services' parts are the e2e test's,
tests/e2e/test_privacy_erasure.py): link-service erases its own rows in the request's
transaction and records its part, the request fans out as `privacy.requested.v1` with the
subject's tombstones and pseudonyms, and the request's record keeps no identifier in clear."""

from __future__ import annotations

import pytest

from referral_events.contracts.privacy import PrivacyRequested
from referral_events.topics import LINK_EVENTS

pytestmark = pytest.mark.integration


async def test_an_erasure_erases_link_rows_and_fans_out(env) -> None:
    c = env.client
    p = await c.post("/v1/programs", json={"name": "P", "landing_url": "https://x.example"})
    program = p.json()["id"]
    r = await c.post(
        f"/v1/programs/{program}/advocates",
        json={"customer_id": "cus_pat", "email": "Pat@Example.com", "name": "Pat Doe"},
    )
    assert r.status_code == 201, r.text
    advocate = r.json()["id"]

    r = await c.post("/v1/privacy/erasures", json={"email": "pat@example.com"})
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]

    got = (await c.get(f"/v1/privacy/requests/{request_id}")).json()
    assert got["status"] == "pending" and got["kind"] == "erasure"
    assert got["services"]["link-service"]["status"] == "done"
    assert got["services"]["link-service"]["rows"]["advocates"] == 1
    assert got["services"]["reward-service"]["status"] == "pending"
    assert got["document"] is None

    a = (await c.get(f"/v1/advocates/{advocate}")).json()
    assert a.get("email") is None and a.get("name") is None
    assert a["customer_id"].startswith("erased_")

    events = await env.events(
        LINK_EVENTS, lambda es: any(e.type == PrivacyRequested.TYPE for e in es)
    )
    req = PrivacyRequested.model_validate(
        next(e for e in events if e.type == PrivacyRequested.TYPE).data
    )
    # found by e-mail, the advocate brings its customer id along
    assert req.customer_ids == ["cus_pat"] and req.emails == ["pat@example.com"]
    assert req.advocate_ids == [advocate]
    assert len(req.tombstones) == 3 and req.pseudonyms["cus_pat"] == a["customer_id"]

    # another workspace sees no such request
    assert (
        await c.get(f"/v1/privacy/requests/{request_id}", headers=env.foreign)
    ).status_code == 404


async def test_a_request_names_someone(env) -> None:
    r = await env.client.post("/v1/privacy/exports", json={})
    assert r.status_code == 422
    assert r.json()["field"] == "/customer_id"
    r = await env.client.post("/v1/privacy/erasures", json={"email": "not an address"})
    assert r.status_code == 422
    assert (await env.client.get("/v1/privacy/requests/prq_nope")).status_code == 404
