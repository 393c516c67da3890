"""Personal data requests' rules: the subject widened by the advocates found, each service's
progress from the parts it sent, and an export's document joined from its chunks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from link_service.privacy import domain
from referral_events.privacy import digest

KEY = b"k" * 16
AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_subject_takes_what_its_advocates_carry() -> None:
    ids = domain.identifiers(
        None,
        "Pat@Example.com",
        [
            {"id": "adv_1", "customer_id": "cus_1", "email": "pat@example.com"},
            {"id": "adv_2", "customer_id": "cus_1", "email": None},
        ],
    )
    assert ids.customer_ids == ["cus_1"]
    assert ids.emails == ["pat@example.com"]
    assert ids.advocate_ids == ["adv_1", "adv_2"]
    assert digest(KEY, "t", "advocate", "adv_2") in ids.tombstones(KEY, "t")
    assert list(ids.pseudonyms(KEY, "t")) == ["cus_1"]


def test_progress_and_completion() -> None:
    one = domain.Part("link-service", 0, 1, "{}", {"advocates": 1}, AT)
    parts = [one, domain.Part("reward-service", 0, 2, "", {}, AT)]
    progress = domain.progress(parts)
    assert progress["link-service"]["status"] == "done"
    assert progress["reward-service"]["status"] == "receiving"
    assert progress["notification-service"] == {"status": "pending", "parts_received": 0}
    assert not domain.complete(parts)
    every = [domain.Part(s, 0, 1, "{}", {}, AT) for s in domain.SERVICES]
    assert domain.complete(every)


def test_an_export_is_joined_from_its_chunks_in_order() -> None:
    text = json.dumps({"rewards": [{"id": "rwd_1"}]})
    parts = [
        domain.Part("reward-service", 1, 2, text[10:], {}, AT),
        domain.Part("reward-service", 0, 2, text[:10], {}, AT),
        domain.Part("link-service", 0, 1, "{}", {}, AT),
    ]
    assert domain.document(parts) == {
        "link-service": {},
        "reward-service": {"rewards": [{"id": "rwd_1"}]},
    }
