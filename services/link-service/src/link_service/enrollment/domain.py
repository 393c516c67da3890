"""Bulk enrollment files (CSV or NDJSON): parsing, row validation and the outcome of each row,
pure so they are unit-tested without infrastructure. Row numbers are 1-based data rows (a CSV
header is not a row); line numbers are the file's own, for people opening it in an editor."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from link_service.advocates.schemas import AdvocateIn
from servicekit.problems import InvalidInput

COLUMNS = (
    "customer_id",
    "email",
    "name",
    "locale",
    "marketing_consent",
    # attributes: the built-in ones as columns (tags separated by ";"), custom ones as a JSON
    # object in `attributes` (NDJSON rows carry one `attributes` object)
    "plan",
    "country",
    "language",
    "tags",
    "attributes",
)
ATTRIBUTE_COLUMNS = ("plan", "country", "language", "tags")
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
            field="/format",
        )
    return "csv" if fmt == "csv" else "ndjson"


class TooManyRows(InvalidInput):
    """Past the row cap: the upload is refused while it streams in."""

    status = 413
    title = "Payload too large"
    type = "body-too-large"


def parse_file(
    raw: bytes, fmt: Literal["csv", "ndjson"], max_rows: int | None = None
) -> ParsedFile:
    """A whole file at once (the CLI, tests): the same parser the upload streams through."""
    parser = StreamParser(fmt, max_rows)
    parser.feed(raw)
    return parser.finish()


class StreamParser:
    """Parses an upload as it arrives, chunk by chunk: UTF-8 decoded incrementally, split into
    lines, rows read from complete lines (a CSV record whose quotes are still open waits for
    its next line), and refused past `max_rows` rows (TooManyRows, 413) without reading on.
    Only the rows are kept (at most `max_rows`), never the file."""

    def __init__(self, fmt: Literal["csv", "ndjson"], max_rows: int | None = None) -> None:
        self.format = fmt
        self._max_rows = max_rows
        self._sha = hashlib.sha256()
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._read = 0
        self._tail = ""  # text after the last newline
        self._line_no = 0
        self._record: list[str] = []  # CSV: the lines of a record whose quotes are open
        self._record_line = 0
        self._quotes = 0
        self._names: list[str] | None = None
        self._broken = False  # CSV: a broken quote; the rest cannot be read
        self._row_no = 0
        self.rows: list[ParsedRow] = []

    def feed(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"the file is not UTF-8 (byte {self._read + exc.start})", field="/file"
            ) from exc
        self._read += len(chunk)
        self._take(text)

    def finish(self) -> ParsedFile:
        try:
            text = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"the file is not UTF-8 (byte {self._read + exc.start})", field="/file"
            ) from exc
        self._take(text)
        if self._tail:
            self._line(self._tail)
            self._tail = ""
        if self._record:
            # The file ended inside a quoted CSV field: that row is malformed.
            self._csv_record(self._record_line, "\n".join(self._record), final=True)
        if self.format == "csv" and self._names is None:
            raise InvalidInput("the file is empty", field="/file")
        if not self.rows:
            raise InvalidInput("the file holds no rows", field="/file")
        return ParsedFile(self.format, self._sha.hexdigest(), self.rows)

    def _take(self, text: str) -> None:
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        self._line_no += 1
        line = line.removesuffix("\r")
        if self.format == "ndjson":
            self._ndjson(line)
            return
        if self._broken:
            return
        if not self._record:
            self._record_line = self._line_no
            self._quotes = 0
        self._record.append(line)
        self._quotes += line.count('"')
        if self._quotes % 2 == 0:  # quotes balanced: the record is complete
            record = "\n".join(self._record)
            self._record = []
            self._csv_record(self._record_line, record)

    def _add(self, line_no: int, data: str | None, error: str | None, field: str | None) -> None:
        self._row_no += 1
        if self._max_rows is not None and self._row_no > self._max_rows:
            raise TooManyRows(f"the file holds more than {self._max_rows} rows", field="/file")
        self.rows.append(ParsedRow(self._row_no, line_no, data, error, field))

    def _csv_record(self, line_no: int, record: str, final: bool = False) -> None:
        error: csv.Error | None = None
        try:
            parsed = list(csv.reader(io.StringIO(record, newline=""), strict=final))
        except csv.Error as exc:
            parsed, error = [], exc
        if self._names is None:
            if error is not None:
                raise InvalidInput(f"the header line is not CSV: {error}", field="/file")
            if parsed:
                self._names = _header(parsed[0])
            return
        if error is not None or len(parsed) > 1:
            # The csv module cannot resynchronise after a broken quote: report it, stop there.
            self._broken = True
            self._add(line_no, None, f"malformed CSV: {error or 'unbalanced quotes'}", "row")
            return
        fields = parsed[0] if parsed else []
        if not fields or all(not f.strip() for f in fields):
            return  # blank lines are not rows
        names = self._names
        if len(fields) != len(names):
            self._add(
                line_no,
                None,
                f"malformed CSV row: {len(fields)} fields, the header has {len(names)}",
                "row",
            )
            return
        self._add(line_no, json.dumps(dict(zip(names, fields, strict=True))), None, None)

    def _ndjson(self, line: str) -> None:
        if not line.strip():
            return
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            self._add(self._line_no, None, f"not JSON: {exc.msg}", "row")
            return
        if not isinstance(data, dict):
            self._add(self._line_no, None, "a line must be a JSON object", "row")
            return
        self._add(self._line_no, json.dumps(data), None, None)


def _header(header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    if "customer_id" not in names:
        raise InvalidInput("the header has no customer_id column", field="/file")
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InvalidInput(
            f"unknown column '{unknown[0][:40]}' (known: {', '.join(COLUMNS)})", field="/file"
        )
    if len(set(names)) != len(names):
        raise InvalidInput("the header repeats a column", field="/file")
    return names


# C0 and C1 control characters (NUL among them: Postgres refuses it in text) and lone
# surrogates (not encodable as UTF-8): refused in any value of a row, as its field's error.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_row(data: dict[str, Any]) -> AdvocateIn | RowError:
    """One row as an enrollment, or the first thing wrong with it (and its field)."""
    for key, value in data.items():
        if _UNSTORABLE.search(key):
            return RowError("row", "a column name holds a control character")
        if isinstance(value, str) and (bad := _UNSTORABLE.search(value)):
            return RowError(
                key if key in COLUMNS else "row",
                f"{key[:40]} holds a control character (U+{ord(bad.group()):04X})",
            )
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
    attrs = values.pop("attributes", None)
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except json.JSONDecodeError:
            return RowError("/attributes", "attributes is not a JSON object")
    if attrs is not None and not isinstance(attrs, dict):
        return RowError("/attributes", "attributes is not a JSON object")
    attrs = dict(attrs or {})
    for key in ATTRIBUTE_COLUMNS:
        if key in values:
            value = values.pop(key)
            if key == "tags" and isinstance(value, str):
                value = [t.strip() for t in value.split(";") if t.strip()]
            elif isinstance(value, str):
                value = value.strip()
            attrs[key] = value
    if attrs:
        values["attributes"] = attrs
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
