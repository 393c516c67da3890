"""Bulk enrollment files (CSV or NDJSON): parsing and row validation, pure so they are
unit-tested without infrastructure. Row numbers are 1-based data rows (a CSV header is not a
row); line numbers are the file's own, for people opening it in an editor."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from link_service.schemas import AdvocateIn
from servicekit.problems import InvalidInput

COLUMNS = ("customer_id", "email", "name", "locale", "marketing_consent")
TRUE = {"true", "1", "yes", "y", "t"}
FALSE = {"false", "0", "no", "n", "f", ""}


@dataclass(frozen=True)
class ParsedFile:
    format: Literal["csv", "ndjson"]
    sha256: str
    # (row_no, line_no, data as JSON text or None, error, field)
    rows: list[tuple[int, int, str | None, str | None, str | None]]


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


def _parse_csv(text: str) -> list[tuple[int, int, str | None, str | None, str | None]]:
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
    rows: list[tuple[int, int, str | None, str | None, str | None]] = []
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
            rows.append((row_no, start_line, None, f"malformed CSV: {exc}", "row"))
            break
        line_no = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue  # blank lines are not rows
        row_no += 1
        if len(fields) != len(names):
            rows.append(
                (
                    row_no,
                    start_line,
                    None,
                    f"malformed CSV row: {len(fields)} fields, the header has {len(names)}",
                    "row",
                )
            )
            continue
        data = {n: f for n, f in zip(names, fields, strict=True)}
        rows.append((row_no, start_line, json.dumps(data), None, None))
    return rows


def _parse_ndjson(text: str) -> list[tuple[int, int, str | None, str | None, str | None]]:
    rows: list[tuple[int, int, str | None, str | None, str | None]] = []
    row_no = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row_no += 1
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((row_no, line_no, None, f"not JSON: {exc.msg}", "row"))
            continue
        if not isinstance(data, dict):
            rows.append((row_no, line_no, None, "a line must be a JSON object", "row"))
            continue
        rows.append((row_no, line_no, json.dumps(data), None, None))
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
