from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key, read_topic, serve_in_process
from link_service.config import Settings
from link_service.main import create_app
from referral_events import CloudEvent

pytestmark = pytest.mark.integration


@pytest.fixture
async def client_and_ns(namespace: Namespace):
    await migrate(namespace.database_url, "link", "link_service")
    key, entry = new_api_key("acme")
    other_key, other_entry = new_api_key("globex")
    settings = Settings(**namespace.settings_env(), api_keys=[entry, other_entry])
    async with serve_in_process(create_app(settings), key) as client:
        yield client, namespace, other_key


async def test_program_enroll_redirect_emits_events(client_and_ns) -> None:
    client, ns, other_key = client_and_ns
    r = await client.post(
        "/v1/programs",
        json={"name": "Give 20 get 20", "landing_url": "https://shop.example.com/welcome?src=ref"},
    )
    assert r.status_code == 201, r.text
    program = r.json()
    assert program["allowed_domains"] == ["shop.example.com"]

    r = await client.post(
        f"/v1/programs/{program['id']}/advocates",
        json={"customer_id": "cus_1", "email": "ann@example.com"},
    )
    assert r.status_code == 201, r.text
    advocate = r.json()
    again = await client.post(
        f"/v1/programs/{program['id']}/advocates", json={"customer_id": "cus_1"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == advocate["id"] and again.json()["code"] == advocate["code"]

    r = await client.get(f"/r/{advocate['code'].lower()}", follow_redirects=False)
    assert r.status_code == 302
    target = urlsplit(r.headers["location"])
    assert target.hostname == "shop.example.com"
    query = parse_qs(target.query)
    assert query["src"] == ["ref"] and query["ref"] == [advocate["code"]]
    click_id = query["click_id"][0]

    records = await read_topic(
        ns.kafka_bootstrap_servers, ns.topic_prefix + "link.clicks", lambda rs: len(rs) >= 1
    )
    event = CloudEvent.from_json(records[0].value)
    assert event.type == "link.clicked.v1" and event.id == click_id
    assert event.tenantid == "acme" and event.data["advocate_id"] == advocate["id"]
    assert records[0].key == advocate["code"].encode()

    # another tenant sees nothing of acme's
    foreign = await client.get(
        f"/v1/programs/{program['id']}", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert foreign.status_code == 404
    assert foreign.headers["content-type"] == "application/problem+json"


async def test_bad_input_is_problem_json(client_and_ns) -> None:
    client, _ns, _ = client_and_ns
    r = await client.post("/v1/programs", json={"name": "x", "landing_url": "ftp://nope"})
    assert r.status_code == 422 and r.json()["field"] == "/landing_url"
    r = await client.post("/v1/programs", json={"name": "", "landing_url": "https://a.example"})
    assert r.status_code == 422 and r.json()["field"] == "/name"
    r = await client.get("/v1/programs/prg_x", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = await client.get("/r/UNKNOWN1", follow_redirects=False)
    assert r.status_code == 404 and "does not exist" in r.text
