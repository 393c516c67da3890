from __future__ import annotations

from typing import Any

import pytest

from devstack.testing import eventually
from referral_events import CloudEvent

pytestmark = pytest.mark.integration

PROFILE = {"email": "sam@example.com", "name": "Sam", "locale": "de-DE", "marketing_consent": True}
CSV = b"customer_id,email,name,locale,marketing_consent\ncus_bulk,sam@example.com,Sam,de-DE,yes\n"
# What differs between two advocates by nature: who they are and the code they drew.
IDS = ("advocate_id", "customer_id", "code", "link_url")


def _pair(events: list[CloudEvent], kind: str, advocates: dict[str, str]) -> list[CloudEvent]:
    """The events of `kind` of the API's and the bulk job's advocate, in that order."""
    by_advocate = {e.data["advocate_id"]: e for e in events if e.type == kind}
    return [by_advocate[advocates["cus_api"]], by_advocate[advocates["cus_bulk"]]]


def _shape(event: CloudEvent) -> dict[str, Any]:
    """The event with its ids and times aside."""
    envelope = event.model_dump(exclude={"id", "time", "subject", "data"})
    data = {k: v for k, v in event.data.items() if k not in IDS}
    return {"envelope": envelope, "data": data, "fields": sorted(event.data)}


async def test_an_advocate_enrolled_in_bulk_is_announced_as_one_enrolled_by_the_api(env) -> None:
    client = env.client
    r = await client.post(
        "/v1/programs",
        json={
            "name": "Both ways",
            "landing_url": "https://shop.example.com",
            "code_format": {"prefix": "GRAB-"},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.post(
        f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_api", **PROFILE}
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/v1/programs/{pid}/enrollment-jobs",
        content=CSV,
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/v1/enrollment-jobs/{job_id}")).json()
        return job if job["status"] == "done" else None

    job = await eventually(done, timeout=60)
    assert job["enrolled"] == 1

    events = await env.events(
        "link.events", lambda es: sum(e.type == "code.created.v1" for e in es) >= 2
    )
    advocates = {
        e.data["customer_id"]: e.data["advocate_id"]
        for e in events
        if e.type == "advocate.enrolled.v1"
    }
    for kind in ("advocate.enrolled.v1", "code.created.v1"):
        by_api, by_bulk = _pair(events, kind, advocates)
        assert _shape(by_api) == _shape(by_bulk), kind
        for event in (by_api, by_bulk):
            assert event.subject == event.data["advocate_id"]
            assert event.data["code"].startswith("GRAB-")
            assert event.data["link_url"].endswith("/r/" + event.data["code"])
    enrolled = _pair(events, "advocate.enrolled.v1", advocates)
    assert [e.data["customer_id"] for e in enrolled] == ["cus_api", "cus_bulk"]
    assert enrolled[1].data["blocked"] is False and enrolled[1].data["version"] == 1
