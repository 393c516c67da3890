"""What amounts are counted in: ISO 4217 currencies (minor units), points, or a quantity's own
unit (MB, GB, seats), and how a unit named at the edge is read and an amount shown."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

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


UnitKind = Literal["currency", "points", "coupon", "quantity"]


def unit_kind(unit: str) -> UnitKind:
    if is_currency(unit):
        return "currency"
    if unit == POINTS:
        return "points"
    if unit == COUPON:
        return "coupon"
    return "quantity"


# Data quantities are shown in the largest unit that keeps them exact: 16000 MB is "16 GB",
# 1500 MB "1.5 GB", 1234 MB stays "1,234 MB" (a display form never rounds an amount away).
# Decimal (SI) and binary (IEC) ladders; a unit's place on its ladder fixes the step.
_DATA_LADDERS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("B", "KB", "MB", "GB", "TB", "PB"), 1000),
    (("B", "KIB", "MIB", "GIB", "TIB", "PIB"), 1024),
)
_SPELLING = {"KIB": "KiB", "MIB": "MiB", "GIB": "GiB", "TIB": "TiB", "PIB": "PiB"}
# Decimal places a scaled-up data quantity may show.
_DATA_PLACES = 2


def _grouped(value: Decimal) -> str:
    """1234567.5 -> "1,234,567.5"; an integral value without a point."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def _data_display(amount: int, unit: str) -> str | None:
    for ladder, step in _DATA_LADDERS:
        if unit not in ladder:
            continue
        value, place = Decimal(amount), ladder.index(unit)
        while place + 1 < len(ladder):
            bigger = value / step
            if abs(bigger) < 1 or bigger != round(bigger, _DATA_PLACES):
                break
            value, place = bigger, place + 1
        return f"{_grouped(value)} {_SPELLING.get(ladder[place], ladder[place])}"
    return None


def display(amount: int, unit: str) -> str:
    """How an amount of minor units reads to a person, with its unit: "20.00 EUR",
    "1,200 points", "1 coupon", "16 GB", "3 SEATS". Exact: the digits are the amount's (a
    currency's minor units as decimals, a data quantity in the largest unit that keeps it
    whole to two places), grouped by thousands; negative amounts keep their sign."""
    kind = unit_kind(unit)
    if kind == "currency":
        return f"{money.from_minor(amount, unit):,.{money.exponent(unit)}f} {unit}"
    if kind in ("points", "coupon"):
        noun = "point" if kind == "points" else "coupon"
        return f"{amount:,} {noun}{'' if abs(amount) == 1 else 's'}"
    return _data_display(amount, unit) or f"{amount:,} {unit}"
