from __future__ import annotations

import json
import re

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
    assert err.value.field == "/file"
    with pytest.raises(InvalidInput) as err:
        bulk.parse_file(b"", "csv")
    assert err.value.field == "/file"
    with pytest.raises(InvalidInput) as err:
        bulk.detect_format("application/json", None)
    assert err.value.field == "/format"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"customer_id": "cus_\x00nul"}, "customer_id"),
        ({"customer_id": "cus_1", "name": "Ann\x1b[31m"}, "name"),
        ({"customer_id": "cus_1", "email": "a@example.com\x85"}, "email"),
        ({"customer_id": "cus_1", "name": "\ud800"}, "name"),
        ({"customer_id": "cus_1", "\x00": "x"}, "row"),
    ],
)
def test_control_characters_are_refused_per_row_naming_the_field(
    row: dict[str, str], field: str
) -> None:
    # The review: a NUL passed validation, Postgres refused the row and the worker retried
    # the chunk forever.
    refused = bulk.validate_row(row)
    assert isinstance(refused, bulk.RowError) and refused.field == field
    assert "\x00" not in refused.message


def test_a_nul_in_a_csv_upload_is_that_row_s_error() -> None:
    parsed = bulk.parse_file(b"customer_id,name\ncus_1,Ann\ncus_2,B\x00b\n", "csv")
    outcomes = bulk.read_chunk((r.row_no, r.data) for r in parsed.rows if r.data)
    assert [(o.row_no, o.status, o.field) for o in outcomes.settled] == [(2, "error", "name")]
    assert list(outcomes.wanted) == ["cus_1"]


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_uploads_are_parsed_as_a_stream_and_capped_in_rows(fmt: str) -> None:
    lines = [b'{"customer_id": "c%d"}\n' % i if fmt == "ndjson" else b"c%d\n" % i for i in range(5)]
    head = b"customer_id\n" if fmt == "csv" else b""
    parser = bulk.StreamParser(fmt, max_rows=3)  # type: ignore[arg-type]
    parser.feed(head)
    for line in lines[:3]:
        for i in range(len(line)):  # byte by byte: lines cut anywhere
            parser.feed(line[i : i + 1])
    assert [r.row_no for r in parser.rows] == [1, 2, 3]
    with pytest.raises(bulk.TooManyRows) as refused:
        parser.feed(lines[3])
    assert refused.value.status == 413 and refused.value.field == "/file"


def test_a_quoted_newline_and_a_multibyte_character_cut_between_chunks() -> None:
    raw = 'customer_id,name\ncus_1,"Zoë\nSmith"\ncus_2,Bo\n'.encode()
    parser = bulk.StreamParser("csv")
    cut = raw.index("ë".encode()) + 1
    parser.feed(raw[:cut])
    parser.feed(raw[cut:])
    parsed = parser.finish()
    assert [(r.row_no, r.line_no, json.loads(r.data or "{}").get("name")) for r in parsed.rows] == [
        (1, 2, "Zoë\nSmith"),
        (2, 4, "Bo"),
    ]
    assert parsed.sha256 == bulk.parse_file(raw, "csv").sha256


def test_the_ingress_body_limit_is_the_documented_upload_size() -> None:
    # The review: the ingress refused uploads above 1m while the service documented 64 MiB.
    import pathlib

    import yaml

    from link_service.config import Settings

    root = pathlib.Path(__file__).resolve().parents[4]
    docs = list(yaml.safe_load_all((root / "deploy/k8s/base/ingress.yaml").read_text()))
    [upload] = [d for d in docs if d["metadata"]["name"] == "enrollment-uploads"]
    size = upload["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()]
    assert limit == Settings.model_fields["enrollment_max_upload_bytes"].default
    [path] = upload["spec"]["rules"][0]["http"]["paths"]
    assert re.fullmatch(path["path"].rstrip("$"), "/v1/programs/prg_1/enrollment-jobs")
