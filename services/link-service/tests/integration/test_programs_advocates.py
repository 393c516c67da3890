from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image

from link_service.domain import SHARE_CHANNELS
from servicekit.problems import pointer

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def _problem(r: Any, status: int, field: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["field"] == pointer(field), r.json()


async def _program(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "Give 20", "landing_url": "https://shop.example.com/join?src=ref", **fields}
    r = await client.post("/v1/programs", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_programs_carry_every_setting_and_updates_emit_the_whole_state(env) -> None:
    client = env.client
    program = await _program(
        client,
        allowed_domains=["example.com"],
        starts_at="2026-01-01T00:00:00Z",
        ends_at="2036-01-01T00:00:00Z",
        fallback_url="https://example.com/program-over",
        default_locale="de-DE",
        code_format={"length": 7, "alphabet": "ABCDEFGHJKMNPQRSTUVWXYZ", "prefix": "grab-"},
        vanity_allowed=True,
        share_templates={"x": "Shop at {program} with {code}: {link}"},
    )
    assert program["code_format"] == {
        "length": 7,
        "alphabet": "ABCDEFGHJKMNPQRSTUVWXYZ",
        "prefix": "GRAB-",
    }
    assert program["live"] is True and program["version"] == 1
    pid = program["id"]

    r = await client.patch(f"/v1/programs/{pid}", json={"status": "paused", "name": "Give 25"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused" and r.json()["live"] is False
    assert r.json()["fallback_url"] == "https://example.com/program-over"  # untouched
    r = await client.put(
        f"/v1/programs/{pid}",
        json={"name": "Give 30", "landing_url": "https://shop.example.com/v2", "status": "active"},
    )
    assert r.status_code == 200 and r.json()["fallback_url"] is None and r.json()["version"] == 3

    events = await env.events("link.events", lambda es: len(es) >= 3)
    created, paused, replaced = events[:3]
    assert [e.type for e in events[:3]] == [
        "program.created.v1",
        "program.updated.v1",
        "program.updated.v1",
    ]
    assert created.data["code_format"]["prefix"] == "GRAB-"
    assert created.data["share_templates"] == {"x": "Shop at {program} with {code}: {link}"}
    assert paused.data["status"] == "paused" and paused.data["name"] == "Give 25"
    assert paused.data["fallback_url"] == "https://example.com/program-over"
    assert paused.data["starts_at"].startswith("2026-01-01") and paused.data["version"] == 2
    assert replaced.data["landing_url"] == "https://shop.example.com/v2"

    # bad input: the field is named
    bad = [
        ({"code_format": {"alphabet": "ABCDEFGHIJKLMNOP"}}, "code_format.alphabet"),
        ({"code_format": {"length": 3}}, "code_format.length"),
        ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2029-01-01T00:00:00Z"}, "ends_at"),
        ({"fallback_url": "https://elsewhere.example.net/"}, "fallback_url"),
        ({"share_templates": {"myspace": "hi"}}, "share_templates.myspace"),
        ({"starts_at": "2030-01-01T00:00:00"}, "starts_at"),  # no time zone
    ]
    for fields, field in bad:
        r = await client.post(
            "/v1/programs",
            json={"name": "x", "landing_url": "https://shop.example.com", **fields},
        )
        _problem(r, 422, field)
    r = await client.patch(f"/v1/programs/{pid}", json={"status": "ended"})
    assert r.status_code == 200
    _problem(await client.patch(f"/v1/programs/{pid}", json={"status": "active"}), 422, "status")
    _problem(await client.patch(f"/v1/programs/{pid}", json={"name": None}), 422, "name")
    _problem(await client.patch(f"/v1/programs/{pid}", json={"colour": "red"}), 422, "colour")

    # another tenant's program does not exist for it
    _problem(await client.get(f"/v1/programs/{pid}", headers=env.foreign), 404, "program_id")
    r = await client.patch(f"/v1/programs/{pid}", json={"name": "mine"}, headers=env.foreign)
    _problem(r, 404, "program_id")
    listed = (await client.get("/v1/programs", headers=env.foreign)).json()["items"]
    assert listed == []


async def test_advocates_enroll_once_update_block_and_unblock(env) -> None:
    client = env.client
    program = await _program(client, code_format={"prefix": "GRAB"})
    pid = program["id"]
    r = await client.post(
        f"/v1/programs/{pid}/advocates",
        json={
            "customer_id": "cus_1",
            "email": "ann@example.com",
            "name": "Ann",
            "locale": "en-GB",
            "marketing_consent": True,
        },
    )
    assert r.status_code == 201, r.text
    ann = r.json()
    assert ann["code"].startswith("GRAB") and len(ann["code"]) == 12
    assert ann["link"].endswith(f"/r/{ann['code']}")
    again = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_1"})
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["code"]) == (ann["id"], ann["code"])
    aid = ann["id"]

    r = await client.patch(f"/v1/advocates/{aid}", json={"name": "Ann B", "locale": "fr"})
    assert r.status_code == 200 and r.json()["name"] == "Ann B" and r.json()["version"] == 2
    assert r.json()["email"] == "ann@example.com"  # untouched
    r = await client.post(f"/v1/advocates/{aid}/block", json={"reason": "fraud review"})
    assert r.status_code == 200 and r.json()["blocked"] is True
    again = await client.post(f"/v1/advocates/{aid}/block", json={})
    assert again.status_code == 200  # already blocked: no second event
    code = (await client.get(f"/v1/codes/{ann['code'].lower()}")).json()
    assert code["can_earn"] is False and code["reason"] == "advocate_blocked"
    assert code["advocate_id"] == aid and code["program_id"] == pid
    r = await client.post(f"/v1/advocates/{aid}/unblock")
    assert r.status_code == 200 and r.json()["blocked"] is False
    code = (await client.get(f"/v1/codes/{ann['code']}")).json()
    assert code["can_earn"] is True and code["reason"] is None and code["alias"] is False

    events = await env.events("link.events", lambda es: len(es) >= 6)
    # keyed by advocate: one partition, in order (the program's event may be on another)
    events = [e for e in events if e.subject == aid]
    types = [e.type for e in events]
    assert types == [
        "advocate.enrolled.v1",
        "code.created.v1",
        "advocate.updated.v1",
        "advocate.blocked.v1",
        "advocate.unblocked.v1",
    ]
    enrolled, code_created, updated, blocked = events[:4]
    assert enrolled.data["email"] == "ann@example.com" and enrolled.data["marketing_consent"]
    assert enrolled.data["link_url"] == ann["link"] and enrolled.data["code"] == ann["code"]
    assert code_created.data["link_url"] == ann["link"]
    assert updated.data["name"] == "Ann B" and updated.data["email"] == "ann@example.com"
    assert blocked.data["reason"] == "fraud review"

    # a paused program's codes cannot earn either
    await client.patch(f"/v1/programs/{pid}", json={"status": "paused"})
    code = (await client.get(f"/v1/codes/{ann['code']}")).json()
    assert code["can_earn"] is False and code["reason"] == "program_inactive"

    # bad input and other tenants
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "c", "email": "x"})
    _problem(r, 422, "email")
    _problem(await client.get(f"/v1/advocates/{aid}", headers=env.foreign), 404, "advocate_id")
    _problem(
        await client.post(f"/v1/advocates/{aid}/block", headers=env.foreign), 404, "advocate_id"
    )
    _problem(await client.get(f"/v1/codes/{ann['code']}", headers=env.foreign), 404, "code")
    r = await client.post(
        f"/v1/programs/{pid}/advocates", json={"customer_id": "c9"}, headers=env.foreign
    )
    _problem(r, 404, "program_id")
    _problem(await client.get("/v1/codes/no such code!"), 404, "code")


@pytest.mark.parametrize("link_settings", [{"vanity_changes_max": 2}], indirect=True)
async def test_vanity_codes_aliases_rules_and_change_limit(env) -> None:
    client = env.client
    program = await _program(client, vanity_allowed=True)
    plain = await _program(client)
    pid = program["id"]
    jane = (await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "j"})).json()
    bob = (await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "b"})).json()
    first_code = jane["code"]

    r = await client.put(f"/v1/advocates/{jane['id']}/code", json={"code": "Jane20"})
    assert r.status_code == 200, r.text
    assert r.json()["code"] == "Jane20" and r.json()["aliases"] == [first_code]
    same = await client.put(f"/v1/advocates/{jane['id']}/code", json={"code": "JANE20"})
    assert same.status_code == 200 and same.json()["aliases"] == [first_code]  # no change

    # the old code keeps redirecting to the same advocate; lookups work either way
    r = await client.get(f"/r/{first_code}", follow_redirects=False)
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["location"]).query)["ref"] == [first_code]
    r = await client.get("/r/jane20", follow_redirects=False)
    assert parse_qs(urlsplit(r.headers["location"]).query)["ref"] == ["Jane20"]
    old = (await client.get(f"/v1/codes/{first_code.lower()}")).json()
    assert old["alias"] is True and old["code"] == "Jane20" and old["advocate_id"] == jane["id"]

    # rules: taken (case-insensitively, the old alias too), offensive, reserved, format
    for code, status, field in [
        ("jane20", 409, "code"),
        (first_code, 409, "code"),
        ("SH1T-HEAD", 422, "code"),
        ("fuck20", 422, "code"),
        ("admin", 422, "code"),
        ("ab", 422, "code"),
        ("bad code", 422, "code"),
    ]:
        r = await client.put(f"/v1/advocates/{bob['id']}/code", json={"code": code})
        _problem(r, status, field)

    r = await client.put(f"/v1/advocates/{jane['id']}/code", json={"code": "JANE-21"})
    assert r.status_code == 200
    r = await client.put(f"/v1/advocates/{jane['id']}/code", json={"code": "JANE-22"})
    _problem(r, 429, "code")  # at most 2 changes per window

    other = (
        await client.post(f"/v1/programs/{plain['id']}/advocates", json={"customer_id": "j"})
    ).json()
    r = await client.put(f"/v1/advocates/{other['id']}/code", json={"code": "OTHER20"})
    _problem(r, 409, "code")  # the program does not allow vanity codes
    r = await client.put(
        f"/v1/advocates/{jane['id']}/code", json={"code": "MINE20"}, headers=env.foreign
    )
    _problem(r, 404, "advocate_id")

    events = await env.events(
        "link.events", lambda es: sum(e.type == "code.changed.v1" for e in es) >= 2
    )
    changed = [e for e in events if e.type == "code.changed.v1"]
    assert [(e.data["previous_code"], e.data["code"]) for e in changed] == [
        (first_code, "Jane20"),
        ("Jane20", "JANE-21"),
    ]
    assert changed[0].data["link_url"].endswith("/r/Jane20")


async def test_share_links_intents_and_qr_codes(env) -> None:
    client = env.client
    program = await _program(
        client,
        share_templates={"whatsapp": "{name} says: shop with {code} at {program} {link}"},
    )
    r = await client.post(
        f"/v1/programs/{program['id']}/advocates", json={"customer_id": "c", "name": "Ann"}
    )
    advocate = r.json()
    r = await client.get(f"/v1/advocates/{advocate['id']}/share-links")
    assert r.status_code == 200, r.text
    body = r.json()
    channels = {c["channel"]: c for c in body["channels"]}
    assert list(channels) == list(SHARE_CHANNELS)
    for name, c in channels.items():
        parts = urlsplit(c["url"])
        assert parts.path == f"/r/{advocate['code']}/{name}"
        assert parse_qs(parts.query)["utm_source"] == [name]
        assert c["url"] in c["message"]
    wa = channels["whatsapp"]
    assert wa["message"].startswith(f"Ann says: shop with {advocate['code']} at Give 20 ")
    assert parse_qs(urlsplit(wa["intent_url"]).query)["text"] == [wa["message"]]
    assert channels["linkedin"]["intent_url"].startswith("https://www.linkedin.com/sharing/")
    assert channels["copy"]["intent_url"] is None

    # the share link itself redirects with its channel and utm parameters passed on
    r = await client.get(channels["x"]["url"], follow_redirects=False)
    assert r.status_code == 302
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["utm_source"] == ["x"] and query["ref"] == [advocate["code"]]

    r = await client.get(f"/v1/advocates/{advocate['id']}/qr")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(r.content)))
    assert [d.text for d in decoded] == [advocate["link"]]
    r = await client.get(f"/v1/advocates/{advocate['id']}/qr?format=png&channel=sms&scale=4")
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(r.content)))
    assert [d.text for d in decoded] == [channels["sms"]["url"]]
    r = await client.get(f"/v1/advocates/{advocate['id']}/qr?format=svg")
    assert r.headers["content-type"] == "image/svg+xml" and b"<svg" in r.content
    r = await client.get(f"/v1/advocates/{advocate['id']}/qr?format=gif")
    assert r.status_code == 422 and r.json()["field"].endswith("format")
    r = await client.get(f"/v1/advocates/{advocate['id']}/qr", headers=env.foreign)
    _problem(r, 404, "advocate_id")
