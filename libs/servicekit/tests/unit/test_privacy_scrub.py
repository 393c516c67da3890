"""A JSON copy of an event without the person (servicekit.privacy.scrub_json), and an export
split in chunks that join back."""

from __future__ import annotations

import json

from referral_events.registry import PAYLOADS
from servicekit.privacy import NAMED_FIELDS, Subject, chunks, scrub_json

SUBJECT = Subject("t1", ["cus_1"], ["pat@example.com"], ["adv_1"], {"cus_1": "erased_x"})


def test_ids_become_pseudonyms_addresses_and_named_fields_go() -> None:
    event = {
        "id": "ev_1",
        "data": {
            "advocate_id": "adv_1",
            "name": "Pat Doe",
            "email": "PAT@example.com",
            "code": "PAT20",
        },
        "other": {"friend_customer_id": "cus_1", "friend_email": "pat@example.com", "n": 3},
        "note": {"reference": "sent to pat@example.com for cus_1", "who": "someone else"},
        "untouched": {"name": "Quinn", "customer_id": "cus_2"},
    }
    got = scrub_json(event, SUBJECT)
    assert got["data"] == {"advocate_id": "adv_1", "name": None, "email": None, "code": "PAT20"}
    assert got["other"] == {"friend_customer_id": "erased_x", "friend_email": None, "n": 3}
    assert got["note"]["reference"] == "sent to  for erased_x"
    assert got["untouched"] == {"name": "Quinn", "customer_id": "cus_2"}
    text = json.dumps(got).lower()
    assert "pat@example.com" not in text and "cus_1" not in text and "pat doe" not in text


def test_every_contracts_personal_field_is_scrubbed() -> None:
    """A payload field an event contract marks personal goes from the copies that name the
    person (the privacy events' own identifiers are the request's, not copies)."""
    missing = {
        f"{t}.{f}"
        for t, model in PAYLOADS.items()
        if not t.startswith("privacy.")
        for f in model.PERSONAL_DATA
        if f not in NAMED_FIELDS
    }
    assert not missing, missing


def test_sightings_and_attribute_changes_lose_their_hashes_and_attributes() -> None:
    sighted = {"advocate_id": "adv_1", "ip_hash": "h1", "device_hash": "h2", "source": "portal"}
    changed = {"advocate_id": "adv_1", "change": 2, "changes": {"plan": "gold", "city": "Graz"}}
    assert scrub_json(sighted, SUBJECT) == {
        "advocate_id": "adv_1",
        "ip_hash": None,
        "device_hash": None,
        "source": "portal",
    }
    assert scrub_json(changed, SUBJECT) == {"advocate_id": "adv_1", "change": 2, "changes": None}


def test_chunks_join_back_and_stay_within_the_limit() -> None:
    document = {"rows": [{"i": i, "text": "é" * 50} for i in range(100)]}
    parts = chunks(document, 1024)
    assert len(parts) > 1 and all(len(p.encode()) <= 1024 for p in parts)
    assert json.loads("".join(parts)) == document
    assert chunks({}, 1024) == ["{}"]
