from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicekit.pagination import CREATED, Keyset, PageQuery, Where, select_page
from servicekit.problems import InvalidInput

AT = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_a_cursor_names_the_last_rows_key_and_reads_back() -> None:
    cursor = CREATED.encode({"created_at": AT, "id": "adv_1"})
    assert CREATED.decode(cursor) == (AT, "adv_1")
    numeric = Keyset(time="at", id="seq", numeric_id=True)
    offset = AT.astimezone(timezone(timedelta(hours=2)))
    assert numeric.decode(numeric.encode({"at": offset, "seq": 7})) == (AT, 7)


@pytest.mark.parametrize(
    "bad",
    ["", "zz", "!!!", "W10", "eyJhIjoxfQ", "WyJrMSIsIngiLCJ5Il0"],  # [], {"a":1}, ["k1","x","y"]
)
def test_anything_else_is_refused_naming_the_cursor(bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CREATED.decode(bad)
    assert refused.value.field == "/cursor"


def test_cursor_types_are_checked_against_the_keyset() -> None:
    numeric = Keyset(time="at", id="seq", numeric_id=True)
    with pytest.raises(InvalidInput):
        numeric.decode(CREATED.encode({"created_at": AT, "id": "adv_1"}))
    with pytest.raises(InvalidInput):
        CREATED.decode(numeric.encode({"at": AT, "seq": 3}))
    naive = CREATED.encode({"created_at": AT.replace(tzinfo=None), "id": "x"})
    with pytest.raises(InvalidInput):
        CREATED.decode(naive)


def test_a_page_statement_numbers_filters_then_the_key_then_the_limit() -> None:
    where = Where().add("tenant_id = {}", "t").maybe("program_id = {}", None)
    where.maybe("status = {}", "open")
    page = PageQuery(CREATED.encode({"created_at": AT, "id": "x"}), 10)
    sql, args = select_page("SELECT * FROM t", where, page)
    assert sql == (
        "SELECT * FROM t WHERE tenant_id = $1 AND status = $2 AND "
        "(created_at, id) > ($3::timestamptz, $4::text) ORDER BY created_at, id LIMIT $5"
    )
    assert args == ["t", "open", AT, "x", 11]
    sql, args = select_page("SELECT * FROM t", Where(), PageQuery(None, 5))
    assert sql == "SELECT * FROM t WHERE TRUE ORDER BY created_at, id LIMIT $1" and args == [6]


def test_the_page_holds_limit_items_and_a_cursor_only_when_more_follow() -> None:
    rows = [{"created_at": AT + timedelta(seconds=i), "id": f"r{i}"} for i in range(4)]
    page = PageQuery(None, 3)
    full = page.answer(rows, lambda r: r["id"])
    assert full.items == ["r0", "r1", "r2"]
    assert full.next_cursor is not None and CREATED.decode(full.next_cursor)[1] == "r2"
    last = page.answer(rows[:3], lambda r: r["id"])
    assert last.next_cursor is None
    assert page.answer([], lambda r: r).model_dump() == {"items": [], "next_cursor": None}


def test_a_cursor_is_read_from_a_mapping_or_an_object() -> None:
    @dataclass
    class Item:
        id: str
        created_at: datetime

    cursor = CREATED.encode(Item("x", AT))
    assert cursor == CREATED.encode({"created_at": AT, "id": "x"})


def test_newest_first_and_an_id_expression() -> None:
    by_hash = Keyset(descending=True, id="address_key", id_sql="md5(s.address)")
    page = PageQuery(by_hash.encode({"created_at": AT, "address_key": "ab"}), 3)
    sql, args = select_page("SELECT s.* FROM s", Where(), page, by_hash, alias="s")
    assert sql.endswith(
        "WHERE TRUE AND (s.created_at, md5(s.address)) < ($1::timestamptz, $2::text) "
        "ORDER BY s.created_at DESC, md5(s.address) DESC LIMIT $3"
    )
    assert args == [AT, "ab", 4]


def test_a_keyset_of_the_id_alone() -> None:
    by_row = Keyset(time=None, id="row_no", numeric_id=True)
    cursor = by_row.encode({"row_no": 12})
    assert by_row.decode(cursor) == (12,)
    with pytest.raises(InvalidInput):
        by_row.decode(CREATED.encode({"created_at": AT, "id": "x"}))
    with pytest.raises(InvalidInput):
        CREATED.decode(cursor)
    sql, args = select_page("SELECT * FROM r", Where(), PageQuery(cursor, 2), by_row)
    assert sql == "SELECT * FROM r WHERE TRUE AND (row_no) > ($1::bigint) ORDER BY row_no LIMIT $2"
    assert args == [12, 3]
