"""What amounts are counted in: ISO 4217 currencies (minor units), points, or a quantity's own
unit (MB, GB, seats), and how a unit named at the edge is read and an amount shown."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StrictInt
from pydantic_core import PydanticCustomError

from servicekit import money
from servicekit.problems import InvalidInput

# Far below bigint's range, so sums over many transfers cannot overflow either.
MAX_AMOUNT_MINOR = 10**12
# Points are a unit of their own; any other non-currency unit is a quantity (MB, GB, seats).
POINTS = "POINTS"
COUPON = "COUPON"

# A positive amount in minor units at the edge. Strict: money is an integer of minor units;
# 20.5 or "2000" is refused, never coerced.
Minor = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR)]

_UNIT = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")

format_minor = money.format_minor


def is_currency(unit: str) -> bool:
    return money.is_currency(unit)


def parse_currency(code: str) -> str | None:
    """The upper-cased ISO 4217 code, or None when it names no currency in use today."""
    normalized = code.strip().upper()
    return normalized if money.is_currency(normalized) else None


def currency_field(value: str) -> str:
    """A body field's currency (for pydantic validators, so the bad field is named)."""
    code = parse_currency(value)
    if code is None:
        raise PydanticCustomError(
            "currency", "'{code}' is not an ISO 4217 currency in use", {"code": value}
        )
    return code


def parse_unit(value: str, field: str) -> str:
    """A unit named in a request: a currency in use, POINTS, or a quantity's unit. A three-letter
    code that is no currency in use is refused rather than taken for a quantity."""
    unit = value.strip().upper()
    if is_currency(unit) or unit == POINTS:
        return unit
    if len(unit) == 3 and unit.isalpha():
        raise InvalidInput(f"'{value}' is not an ISO 4217 currency in use", field=field)
    if not _UNIT.match(unit):
        raise InvalidInput(f"'{value}' is not a unit (letters, digits, _)", field=field)
    return unit
