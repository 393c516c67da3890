from __future__ import annotations

import json

from referral_events import new_event
from referral_events.contracts.link import CodeCreated
from referral_events.outbox import _event_type


def test_the_published_metric_reads_the_envelope_type_without_parsing() -> None:
    event = new_event(
        CodeCreated(code="ANN123", advocate_id="adv_1", program_id="prg_1"),
        source='/odd "type":"fake.v1" source',
        tenant_id="acme",
    )
    # An escaped quote inside a value cannot pass for the envelope's own key.
    assert _event_type(event.to_json()) == CodeCreated.TYPE == json.loads(event.to_json())["type"]


def test_other_layouts_fall_back_to_parsing() -> None:
    data_first = json.dumps(
        {"data": {"type": "inner"}, "type": "outer.v1"}, separators=(",", ":")
    ).encode()
    spaced = json.dumps({"id": "1", "type": "spaced.v1", "data": {}}).encode()
    assert _event_type(data_first) == "outer.v1"
    assert _event_type(spaced) == "spaced.v1"
    assert _event_type(b"not json") == "unknown"
    assert _event_type(b"[1, 2]") == "unknown"
    assert _event_type(b'{"data": {}}') == "unknown"
