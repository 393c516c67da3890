from __future__ import annotations

import json

import pytest

from link_service.enrollment import domain as bulk
from servicekit.problems import InvalidInput

# ---------------------------------------------------------------------------- bulk files


def test_csv_rows_are_numbered_and_malformed_rows_reported() -> None:
    raw = (
        b"customer_id,email,marketing_consent\n"
        b"cus_1,a@example.com,yes\n"
        b"\n"
        b'cus_2,"b@example.com",no,extra\n'
        b"cus_3,not-an-email,\n"
        b",c@example.com,true\n"
        b"cus_5,e@example.com,maybe\n"
    )
    parsed = bulk.parse_file(raw, "csv")
    assert [r[:2] for r in parsed.rows] == [(1, 2), (2, 4), (3, 5), (4, 6), (5, 7)]
    assert parsed.rows[1][3] is not None and "malformed CSV row" in parsed.rows[1][3]
    assert parsed.rows[1][4] == "row"
    outcomes = [bulk.validate_row(json.loads(r[2])) for r in parsed.rows if r[2] is not None]
    ok = outcomes[0]
    assert not isinstance(ok, bulk.RowError) and ok.marketing_consent is True
    assert [o.field for o in outcomes[1:] if isinstance(o, bulk.RowError)] == [
        "email",
        "customer_id",
        "marketing_consent",
    ]


def test_ndjson_rows_and_file_level_errors() -> None:
    parsed = bulk.parse_file(
        b'{"customer_id": "c1"}\n[1]\n{nope\n{"customer_id": "c2"}\n', "ndjson"
    )
    assert [(r[0], r[3] is None) for r in parsed.rows] == [
        (1, True),
        (2, False),
        (3, False),
        (4, True),
    ]
    with pytest.raises(InvalidInput) as err:
        bulk.parse_file(b"email\nx@example.com\n", "csv")
    assert err.value.field == "file"
    with pytest.raises(InvalidInput) as err:
        bulk.parse_file(b"", "csv")
    assert err.value.field == "file"
    with pytest.raises(InvalidInput) as err:
        bulk.detect_format("application/json", None)
    assert err.value.field == "format"
