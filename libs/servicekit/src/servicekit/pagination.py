"""Cursor pagination, one shape for every list of every service.

A list answers `{"items": [...], "next_cursor": "..." | null}` (`Page`) and, when there is a
next page, a `Link: <...>; rel="next"` header naming it. Pages are read in keyset order: by an
immutable key of the row, its creation time then its id (`Keyset`), never by OFFSET, so a walk
sees every row that existed when it started exactly once, whatever is inserted meanwhile (a row
committed during the walk may or may not be seen: it sorts where its key puts it).

The cursor is opaque to callers: base64url of the last row's key, versioned. One we did not give
(altered, truncated, another shape) answers 422 with `field: "/cursor"`. `limit` defaults to
`DEFAULT_LIMIT`, at most `MAX_LIMIT` (more answers 422, `field: "/limit"`). Lists filter by
creation time with `created_after` (inclusive) and `created_before` (exclusive): `CreatedParams`.

A route takes `page: PageParams` (it reads `cursor` and `limit` from the query) and answers
`page.answer(rows, item)`; its repository reads `page.fetch_limit` rows (one more than the page,
which tells whether another follows) with the WHERE and ORDER BY of `Keyset.clause`/`order_by`
(or writes the whole statement with `select_page`)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
from fastapi import Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from servicekit.problems import InvalidInput
from servicekit.routes import route_access

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Longest cursor we hand out (a timestamp and an id of up to ~100 characters), with room.
MAX_CURSOR_LENGTH = 400
_VERSION = "k1"

ItemT = TypeVar("ItemT")
BAD_CURSOR = "not a cursor this API gave: pass next_cursor of the previous page unchanged"


class Page(BaseModel, Generic[ItemT]):
    """One page of a list: its items in the list's order, and where the next page starts."""

    items: list[ItemT]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


@dataclass(frozen=True)
class Keyset:
    """The immutable, unique key a list is ordered by: a time column (None: the id alone), then
    a tie-breaking id column (text, or bigint with `numeric_id`), oldest first or
    (`descending`) newest first. `id_sql` is the id's SQL where it is an expression (the row
    holds it as `id`)."""

    time: str | None = "created_at"
    id: str = "id"
    numeric_id: bool = False
    descending: bool = False
    id_sql: str | None = None

    def encode(self, row: Any) -> str:
        """The cursor after `row`: a record (a mapping) or an object with the key's attributes."""
        at = None if self.time is None else _field(row, self.time).isoformat()
        raw = json.dumps([_VERSION, at, _field(row, self.id)], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> tuple[Any, ...]:
        """The key a cursor names (time and id, or the id alone); 422 (`/cursor`) for anything
        we did not give."""
        try:
            raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            version, at, key = raw
            id_ok = (
                isinstance(key, int) and not isinstance(key, bool)
                if self.numeric_id
                else isinstance(key, str)
            )
            if version == _VERSION and id_ok and self.time is None and at is None:
                return (key,)
            if version == _VERSION and id_ok and self.time is not None and isinstance(at, str):
                when = datetime.fromisoformat(at)
                if when.tzinfo is not None:
                    return when, key
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            pass
        raise InvalidInput(BAD_CURSOR, field="/cursor")

    def _columns(self, alias: str) -> list[str]:
        p = f"{alias}." if alias else ""
        key = self.id_sql or f"{p}{self.id}"
        return [key] if self.time is None else [f"{p}{self.time}", key]

    def clause(self, first: int, alias: str = "") -> str:
        """`(time, id) > ($first, $first+1)` (`<` newest first): the rows after the cursor's."""
        types = ([] if self.time is None else ["timestamptz"]) + [
            "bigint" if self.numeric_id else "text"
        ]
        params = ", ".join(f"${first + i}::{t}" for i, t in enumerate(types))
        after = "<" if self.descending else ">"
        return f"({', '.join(self._columns(alias))}) {after} ({params})"

    def order_by(self, alias: str = "") -> str:
        way = " DESC" if self.descending else ""
        return "ORDER BY " + ", ".join(f"{c}{way}" for c in self._columns(alias))


CREATED = Keyset()
# Logs read newest first.
NEWEST = Keyset(descending=True)


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping | asyncpg.Record) else getattr(row, name)


@dataclass
class Where:
    """A WHERE clause built from conditions and their values, numbered in order: `add("x =
    {}", v)` appends `x = $n`; `maybe` only when the value is not None."""

    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, condition: str, *values: Any) -> Where:
        refs = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.conditions.append(condition.format(*refs))
        self.args.extend(values)
        return self

    def maybe(self, condition: str, value: Any) -> Where:
        return self if value is None else self.add(condition, value)

    def sql(self) -> str:
        return " AND ".join(self.conditions) or "TRUE"


@dataclass(frozen=True)
class PageQuery:
    """What a list request asked for: the position after which to start, and how many."""

    cursor: str | None
    limit: int
    request: Request | None = None
    response: Response | None = None

    @property
    def fetch_limit(self) -> int:
        # One more than the page: its presence says a next page exists.
        return self.limit + 1

    def after(self, keyset: Keyset = CREATED) -> tuple[Any, ...] | None:
        return keyset.decode(self.cursor) if self.cursor else None

    def answer(
        self,
        rows: Sequence[Any],
        item: Callable[[Any], ItemT],
        keyset: Keyset = CREATED,
        record: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> Page[ItemT]:
        """The page of `rows` (read with `fetch_limit`), and the Link header to the next.
        `record` finds a row's database record (holding the keyset's columns) when the rows
        are views built on one."""
        more = len(rows) > self.limit
        shown = list(rows[: self.limit])
        last = shown[-1] if shown else None
        if last is not None and record is not None:
            last = record(last)
        next_cursor = keyset.encode(last) if more and last is not None else None
        if next_cursor is not None and self.request is not None and self.response is not None:
            url = self.request.url.include_query_params(cursor=next_cursor, limit=self.limit)
            self.response.headers["Link"] = f'<{url}>; rel="next"'
        return Page[Any](items=[item(r) for r in shown], next_cursor=next_cursor)


def page_query(
    request: Request,
    response: Response,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="`next_cursor` of the previous page (absent: the first page)",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (at most {MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
) -> PageQuery:
    return PageQuery(cursor or None, limit, request, response)


PageParams = Annotated[PageQuery, Depends(page_query)]


@dataclass(frozen=True)
class CreatedRange:
    """`created_after <= created_at < created_before`, each bound optional."""

    after: datetime | None = None
    before: datetime | None = None

    def apply(self, where: Where, column: str = "created_at") -> Where:
        return where.maybe(f"{column} >= {{}}", self.after).maybe(f"{column} < {{}}", self.before)


def _aware(at: datetime | None) -> datetime | None:
    # A time without an offset is read as UTC, as every time this API answers is.
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def created_range(
    created_after: Annotated[
        datetime | None, Query(description="created at or after this time (ISO 8601)")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="created before this time (ISO 8601)")
    ] = None,
) -> CreatedRange:
    return CreatedRange(_aware(created_after), _aware(created_before))


CreatedParams = Annotated[CreatedRange, Depends(created_range)]


def select_page(
    select: str, where: Where, page: PageQuery, keyset: Keyset = CREATED, alias: str = ""
) -> tuple[str, list[Any]]:
    """`select` (`SELECT ... FROM ...`, no WHERE) with `where`, after the cursor, in keyset
    order, `page.fetch_limit` rows: the statement and its arguments."""
    args = list(where.args)
    conditions = [where.sql()]
    after = page.after(keyset)
    if after is not None:
        conditions.append(keyset.clause(len(args) + 1, alias))
        args.extend(after)
    args.append(page.fetch_limit)
    sql = f"{select} WHERE {' AND '.join(conditions)} {keyset.order_by(alias)} LIMIT ${len(args)}"
    return sql, args


async def fetch_page(
    conn: asyncpg.Connection,
    select: str,
    where: Where,
    page: PageQuery,
    keyset: Keyset = CREATED,
    alias: str = "",
) -> list[asyncpg.Record]:
    """The rows of one page (up to `page.fetch_limit`) of `select` filtered by `where`."""
    sql, args = select_page(select, where, page, keyset, alias)
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


# ---------------------------------------------------------------------------- the rule, checked


def is_page_model(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, Page)


def collections(app: FastAPI) -> list[str]:
    """The app's collections: the paths of its GET routes answering a `Page`."""
    return sorted(
        a.path
        for a in route_access(app)
        if a.method == "GET" and is_page_model(getattr(a.route, "response_model", None))
    )


def unlisted_creates(app: FastAPI, exempt: Mapping[str, str]) -> list[str]:
    """POST routes that create (answer 201, or 202 for a job) a resource of a collection
    without a list: no GET on the same path answering a `Page`. `exempt` names the paths
    that create something not kept as a collection, each with why."""
    listed = set(collections(app))
    return sorted(
        a.path
        for a in route_access(app)
        if a.method == "POST"
        and getattr(a.route, "status_code", None) in (201, 202)
        and a.path not in listed
        and a.path not in exempt
    )
