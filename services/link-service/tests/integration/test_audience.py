"""Advocate attributes, segments and eligibility through link-service's API, on real Postgres
and Kafka: typed attributes at enrollment (single and bulk), by PATCH and by dated changes,
their events, previews, refusals naming the rule, and bad input named by JSON pointer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack.testing import eventually
from referral_events import topics

pytestmark = pytest.mark.integration

AUDIENCE = {
    "attributes": {"seats": "number", "renews_on": "date"},
    "segments": [
        {"name": "basic", "condition": {"attribute": "plan", "equals": "basic"}},
        {"name": "plus", "condition": {"attribute": "plan", "in": ["plus", "pro"]}},
    ],
    "eligibility": {
        "enroll": {"countries_deny": ["RU"]},
        "friends": {"countries_allow": ["DE", "AT", "US"]},
    },
}


async def _program(client: Any) -> str:
    r = await client.post(
        "/v1/programs", json={"name": "Dropbox", "landing_url": "https://shop.example.com"}
    )
    return str(r.json()["id"])


async def test_attributes_segments_previews_and_eligibility(env) -> None:
    client = env.client
    pid = await _program(client)
    r = await client.put(f"/v1/programs/{pid}/audience", json=AUDIENCE)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert r.json()["eligibility"]["friends"]["countries_allow"] == ["AT", "DE", "US"]
    # the same audience again is no new version
    assert (await client.put(f"/v1/programs/{pid}/audience", json=AUDIENCE)).json()["version"] == 1

    r = await client.post(
        f"/v1/programs/{pid}/advocates",
        json={
            "customer_id": "cus_ann",
            "attributes": {"plan": "basic", "country": "de", "tags": ["early"], "seats": 2},
        },
    )
    assert r.status_code == 201, r.text
    ann = r.json()
    assert ann["attributes"] == {"plan": "basic", "country": "DE", "tags": ["early"], "seats": 2}
    r = await client.post(
        f"/v1/programs/{pid}/advocates",
        json={"customer_id": "cus_bo", "attributes": {"plan": "plus", "country": "AT"}},
    )
    bo = r.json()

    # refused by eligibility: 422 naming the rule, at the attribute's pointer
    r = await client.post(
        f"/v1/programs/{pid}/advocates",
        json={"customer_id": "cus_ivan", "attributes": {"plan": "basic", "country": "RU"}},
    )
    assert r.status_code == 422
    assert r.json()["field"] == "/attributes/country"
    assert "eligibility.enroll.countries_deny" in r.json()["detail"]

    r = await client.get(f"/v1/programs/{pid}/segments/basic/preview")
    assert (r.json()["matching"], r.json()["total"]) == (1, 2)
    r = await client.post(
        f"/v1/programs/{pid}/segments/preview",
        json={"condition": {"any": [{"has_tag": "early"}, {"attribute": "seats", "gte": 1}]}},
    )
    assert r.json()["matching"] == 1

    # PATCH: a change now; a dated change slots in by its date
    r = await client.patch(f"/v1/advocates/{ann['id']}", json={"attributes": {"seats": 5}})
    assert r.status_code == 200 and r.json()["attributes"]["seats"] == 5
    # dated between enrollment and the PATCH: it slots in before the PATCH, the plan changes
    earlier = datetime.fromisoformat(ann["created_at"]) + timedelta(milliseconds=1)
    r = await client.post(
        f"/v1/advocates/{ann['id']}/attribute-changes",
        json={"changes": {"plan": "plus"}, "effective_at": earlier.isoformat()},
    )
    assert r.status_code == 200, r.text
    assert r.json()["attributes"]["plan"] == "plus"
    assert r.json()["attributes"]["seats"] == 5
    # dated before enrollment: the enrollment's own plan supersedes it
    r = await client.post(
        f"/v1/advocates/{ann['id']}/attribute-changes",
        json={"changes": {"plan": "free"}, "effective_at": "2020-01-01T00:00:00Z"},
    )
    assert r.json()["attributes"]["plan"] == "plus"
    r = await client.post(
        f"/v1/advocates/{ann['id']}/attribute-changes",
        json={
            "changes": {"plan": "basic"},
            "effective_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "/effective_at"

    events = await env.events(
        topics.LINK_EVENTS,
        lambda es: sum(e.type == "advocate.attributes_changed.v1" for e in es) >= 5,
    )
    changes = [e.data for e in events if e.type == "advocate.attributes_changed.v1"]
    mine = [c for c in changes if c["advocate_id"] == ann["id"]]
    assert [c["change"] for c in mine] == [1, 2, 3, 4]
    assert mine[2]["changes"] == {"plan": "plus"}
    assert datetime.fromisoformat(mine[2]["effective_at"]) == earlier
    assert any(c["advocate_id"] == bo["id"] for c in changes)
    audience_events = [e for e in events if e.type == "program.audience_changed.v1"]
    assert len(audience_events) == 1 and audience_events[0].data["segments"][0]["name"] == "basic"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"attributes": {"seats": "integer"}}, "/attributes/seats"),
        (
            {"segments": [{"name": "x", "condition": {"attribute": "colour", "equals": "red"}}]},
            "/segments/0/condition/attribute",
        ),
        (
            {"eligibility": {"friends": {"countries_allow": ["DE", "UK"]}}},
            "/eligibility/friends/countries_allow/1",
        ),
    ],
)
async def test_bad_audiences_name_their_pointer(env, body: dict[str, Any], field: str) -> None:
    pid = await _program(env.client)
    r = await env.client.put(f"/v1/programs/{pid}/audience", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


async def test_bad_attribute_values_name_their_pointer(env) -> None:
    client = env.client
    pid = await _program(client)
    await client.put(f"/v1/programs/{pid}/audience", json={"attributes": {"seats": "number"}})
    for attrs, field in (
        ({"country": "XX"}, "/attributes/country"),
        ({"seats": "many"}, "/attributes/seats"),
        ({"colour": "red"}, "/attributes/colour"),
    ):
        r = await client.post(
            f"/v1/programs/{pid}/advocates", json={"customer_id": "c", "attributes": attrs}
        )
        assert r.status_code == 422 and r.json()["field"] == field, (attrs, r.text)


async def test_bulk_enrollment_carries_attributes_and_eligibility(env) -> None:
    client = env.client
    pid = await _program(client)
    await client.put(f"/v1/programs/{pid}/audience", json=AUDIENCE)
    csv = (
        "customer_id,plan,country,tags,attributes\n"
        'cus_1,basic,DE,a;b,"{""seats"": 3}"\n'
        "cus_2,plus,RU,,\n"
        "cus_3,plus,ZZ,,\n"
        "cus_4,pro,US,,\n"
    )
    r = await client.post(
        f"/v1/programs/{pid}/enrollment-jobs", content=csv, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/v1/enrollment-jobs/{job_id}")).json()
        return job if job["status"] == "done" else None

    job = await eventually(done, timeout=60)
    assert (job["enrolled"], job["failed"]) == (2, 2)
    errors = {e["row"]: e for e in job["errors"]}
    assert errors[2]["field"] == "/attributes/country"
    assert "eligibility.enroll.countries_deny" in errors[2]["message"]
    assert errors[3]["field"] == "/attributes/country"
    r = await client.get(f"/v1/programs/{pid}/segments/plus/preview")
    assert (r.json()["matching"], r.json()["total"]) == (1, 2)
    events = await env.events(
        topics.LINK_EVENTS,
        lambda es: sum(e.type == "advocate.attributes_changed.v1" for e in es) >= 2,
    )
    firsts = sorted(
        (e.data["changes"] for e in events if e.type == "advocate.attributes_changed.v1"),
        key=lambda c: c["plan"],
    )
    assert firsts == [
        {"plan": "basic", "country": "DE", "tags": ["a", "b"], "seats": 3},
        {"plan": "pro", "country": "US"},
    ]
