from __future__ import annotations

import pytest
from pydantic import ValidationError

from referral_events import CloudEvent, new_event, parse_payload
from referral_events.contracts.link import AdvocateEnrolled, CodeCreated
from referral_events.registry import PAYLOADS, UnknownEventType


def test_round_trip_through_json() -> None:
    event = new_event(
        CodeCreated(code="ANN123", advocate_id="adv_1", program_id="prg_1"),
        source="/services/link-service",
        tenant_id="acme",
    )
    back = CloudEvent.from_json(event.to_json())
    assert back == event
    assert back.specversion == "1.0" and back.datacontenttype == "application/json"
    assert parse_payload(back) == CodeCreated(
        code="ANN123", advocate_id="adv_1", program_id="prg_1"
    )


def test_consumers_ignore_fields_added_later() -> None:
    event = new_event(
        CodeCreated(code="A", advocate_id="a", program_id="p"), source="/s", tenant_id="t"
    )
    newer = event.model_copy(update={"data": {**event.data, "added_in_v1_1": 7}})
    assert parse_payload(newer) == CodeCreated(code="A", advocate_id="a", program_id="p")


def test_unknown_type_and_missing_tenant_are_refused() -> None:
    event = new_event(
        CodeCreated(code="A", advocate_id="a", program_id="p"), source="/s", tenant_id="t"
    )
    with pytest.raises(UnknownEventType):
        parse_payload(event.model_copy(update={"type": "nope.v1"}))
    with pytest.raises(ValidationError):
        CloudEvent.model_validate({**event.model_dump(), "tenantid": ""})


def test_every_type_name_is_versioned_and_unique() -> None:
    assert all(name.rsplit(".", 1)[-1].startswith("v") for name in PAYLOADS)
    assert len(PAYLOADS) == len({m.TYPE for m in PAYLOADS.values()})


def test_personal_data_fields_exist_on_their_models() -> None:
    for model in PAYLOADS.values():
        assert set(model.model_fields) >= model.PERSONAL_DATA
    assert "email" in AdvocateEnrolled.PERSONAL_DATA
