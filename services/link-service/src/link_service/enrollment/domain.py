"""Bulk enrollment files (CSV or NDJSON): parsing, row validation and the outcome of each row,
pure so they are unit-tested without infrastructure. Row numbers are 1-based data rows (a CSV
header is not a row); line numbers are the file's own, for people opening it in an editor."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from link_service.advocates.schemas import AdvocateIn
from servicekit.problems import InvalidInput

COLUMNS = ("customer_id", "email", "name", "locale", "marketing_consent")
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f", ""}


class ParsedRow(NamedTuple):
    row_no: int
    line_no: int
    data: str | None  # the row as a JSON object; None when it could not be read
    error: str | None
    field: str | None


@dataclass(frozen=True)
class ParsedFile:
    format: Literal["csv", "ndjson"]
    sha256: str
    rows: list[ParsedRow]


@dataclass(frozen=True)
class RowError:
    field: str | None
    message: str


def detect_format(content_type: str | None, explicit: str | None) -> Literal["csv", "ndjson"]:
    fmt = (explicit or "").lower()
    if not fmt and content_type:
        ct = content_type.split(";")[0].strip().lower()
        fmt = {
            "text/csv": "csv",
            "application/csv": "csv",
            "application/x-ndjson": "ndjson",
            "application/ndjson": "ndjson",
            "application/jsonl": "ndjson",
            "application/x-jsonlines": "ndjson",
        }.get(ct, "")
    if fmt not in ("csv", "ndjson"):
        raise InvalidInput(
            "send the file as text/csv or application/x-ndjson (or ?format=csv|ndjson)",
            field="format",
        )
    return "csv" if fmt == "csv" else "ndjson"


def parse_file(raw: bytes, fmt: Literal["csv", "ndjson"]) -> ParsedFile:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the file is not UTF-8 (byte {exc.start})", field="file") from exc
    rows = _parse_csv(text) if fmt == "csv" else _parse_ndjson(text)
    if not rows:
        raise InvalidInput("the file holds no rows", field="file")
    return ParsedFile(fmt, hashlib.sha256(raw).hexdigest(), rows)


def _parse_csv(text: str) -> list[ParsedRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("the file is empty", field="file") from None
    except csv.Error as exc:
        raise InvalidInput(f"the header line is not CSV: {exc}", field="file") from None
    names = [h.strip().lower() for h in header]
    if "customer_id" not in names:
        raise InvalidInput("the header has no customer_id column", field="file")
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InvalidInput(
            f"unknown column '{unknown[0]}' (known: {', '.join(COLUMNS)})", field="file"
        )
    if len(set(names)) != len(names):
        raise InvalidInput("the header repeats a column", field="file")
    rows: list[ParsedRow] = []
    row_no = 0
    line_no = reader.line_num
    while True:
        start_line = line_no + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The csv module cannot resynchronise after a broken quote: report it, stop there.
            row_no += 1
            rows.append(ParsedRow(row_no, start_line, None, f"malformed CSV: {exc}", "row"))
            break
        line_no = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue  # blank lines are not rows
        row_no += 1
        if len(fields) != len(names):
            rows.append(
                ParsedRow(
                    row_no,
                    start_line,
                    None,
                    f"malformed CSV row: {len(fields)} fields, the header has {len(names)}",
                    "row",
                )
            )
            continue
        data = {n: f for n, f in zip(names, fields, strict=True)}
        rows.append(ParsedRow(row_no, start_line, json.dumps(data), None, None))
    return rows


def _parse_ndjson(text: str) -> list[ParsedRow]:
    rows: list[ParsedRow] = []
    row_no = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row_no += 1
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(ParsedRow(row_no, line_no, None, f"not JSON: {exc.msg}", "row"))
            continue
        if not isinstance(data, dict):
            rows.append(ParsedRow(row_no, line_no, None, "a line must be a JSON object", "row"))
            continue
        rows.append(ParsedRow(row_no, line_no, json.dumps(data), None, None))
    return rows


def validate_row(data: dict[str, Any]) -> AdvocateIn | RowError:
    """One row as an enrollment, or the first thing wrong with it (and its field)."""
    values = {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() == "")}
    consent = values.get("marketing_consent")
    if isinstance(consent, str):
        lowered = consent.strip().lower()
        if lowered in TRUE:
            values["marketing_consent"] = True
        elif lowered in FALSE:
            values["marketing_consent"] = False
        else:
            return RowError("marketing_consent", f"'{consent}' is not true/false")
    for key in ("customer_id", "email", "name", "locale"):
        if isinstance(values.get(key), str):
            values[key] = values[key].strip()
    try:
        return AdvocateIn.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        return RowError(field, first.get("msg", "invalid"))


# ---------------------------------------------------------------------------- row outcomes

RowStatus = Literal["enrolled", "existing", "error"]


class RowOutcome(NamedTuple):
    row_no: int
    status: RowStatus
    error: str | None = None
    field: str | None = None
    advocate_id: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A chunk's rows as read: those settled already (errors, and a customer's repeats within
    the chunk), and the first row of each customer, to enroll."""

    settled: list[RowOutcome]
    wanted: dict[str, tuple[int, AdvocateIn]]  # customer_id -> (row_no, enrollment)


def read_chunk(rows: Iterable[tuple[int, str]]) -> Chunk:
    """`rows`: (row_no, data) of pending rows."""
    settled: list[RowOutcome] = []
    wanted: dict[str, tuple[int, AdvocateIn]] = {}
    for row_no, data in rows:
        outcome = validate_row(json.loads(data))
        if isinstance(outcome, RowError):
            settled.append(RowOutcome(row_no, "error", outcome.message, outcome.field))
        elif outcome.customer_id in wanted:
            settled.append(RowOutcome(row_no, "existing"))
        else:
            wanted[outcome.customer_id] = (row_no, outcome)
    return Chunk(settled, wanted)


def outcomes(chunk: Chunk, enrolled: dict[str, str], existing: dict[str, str]) -> list[RowOutcome]:
    """Every row of the chunk settled, given the advocate ids by customer of those the chunk
    enrolled and of those enrolled before."""
    result = list(chunk.settled)
    for customer_id, (row_no, _) in chunk.wanted.items():
        if customer_id in enrolled:
            result.append(RowOutcome(row_no, "enrolled", advocate_id=enrolled[customer_id]))
        else:
            result.append(RowOutcome(row_no, "existing", advocate_id=existing.get(customer_id)))
    return result
