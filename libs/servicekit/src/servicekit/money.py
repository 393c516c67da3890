"""Money at the edges: ISO 4217 codes and their minor-unit exponents come from Babel's CLDR data
(maintained upstream), amounts are Decimal in and integer minor units inside; never float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies

from servicekit.problems import InvalidInput


def _currencies_in_use() -> frozenset[str]:
    # Legal tender somewhere today: drops withdrawn codes (DEM), funds, metals and XXX/XTS.
    territories = get_global("territory_currencies")
    return frozenset(
        code for territory in territories for code in get_territory_currencies(territory)
    )


CURRENCIES = _currencies_in_use()


def is_currency(code: str) -> bool:
    return code in CURRENCIES


def validate_currency(code: str, field: str = "/currency") -> str:
    code = code.strip().upper()
    if code not in CURRENCIES:
        raise InvalidInput(f"'{code}' is not an ISO 4217 currency code", field=field)
    return code


def exponent(unit: str) -> int:
    """Decimal places of a unit's minor units: 2 for USD, 0 for JPY, 3 for BHD; 0 for units
    that are not currencies (points, MB), which count whole units."""
    return int(get_currency_precision(unit)) if unit in CURRENCIES else 0


# The largest amount any input may name, in minor units: far beyond any real order or reward
# (ten trillion dollars), and well inside Postgres' bigint, so sums of many stay exact there too.
MAX_MINOR = 10**15
# Significant digits an amount may carry (integer and fraction together).
MAX_DIGITS = 24
_OUT_OF_RANGE = f"amount out of range (at most {MAX_DIGITS} digits, below 10^16)"
# Longer text is no amount either (and Decimal() of a megabyte of digits is not free).
_MAX_TEXT = 200


def check_minor(minor: int, field: str = "/amount_minor") -> int:
    """An amount already in minor units (an API's `amount_minor`, Stripe's integer amounts),
    bounded as `to_minor` bounds decimal ones."""
    if not -MAX_MINOR <= minor <= MAX_MINOR:
        raise InvalidInput(f"amount out of range (at most {MAX_MINOR} minor units)", field=field)
    return minor


def parse(amount: Decimal | str | int, field: str = "/amount") -> Decimal:
    """A decimal amount, bounded before any arithmetic: Decimal holds exponents up to a million,
    and scaling or converting such a value to int costs seconds of CPU (or overflows) on the
    event loop; `str()` of a huge int raises. At most MAX_DIGITS significant digits, below
    10^16, and no finer than 10^-MAX_DIGITS (so sums of bounded amounts are exact)."""
    if isinstance(amount, int) and not isinstance(amount, bool):
        if not -(10**16) < amount < 10**16:
            raise InvalidInput(_OUT_OF_RANGE, field=field)
        return Decimal(amount)
    try:
        text = "" if isinstance(amount, Decimal) else str(amount)
        if len(text) > _MAX_TEXT:
            raise InvalidInput(_OUT_OF_RANGE, field=field)
        value = amount if isinstance(amount, Decimal) else Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"'{str(amount)[:40]}' is not a number", field=field) from None
    if not value.is_finite():
        raise InvalidInput("amount must be a finite number", field=field)
    # adjusted(): the exponent of the most significant digit, known without expanding the value.
    adjusted = value.adjusted()
    if len(value.as_tuple().digits) > MAX_DIGITS or adjusted >= 16:
        raise InvalidInput(_OUT_OF_RANGE, field=field)
    if value.is_zero():
        return Decimal(0)  # 0E-999999999 is zero, however many places it names
    if adjusted < -MAX_DIGITS:
        # Refused, not rounded to zero as scaling it would (1e-999999999 underflows to 0).
        raise InvalidInput(
            f"'{str(amount)[:40]}' has more decimal places than any currency", field=field
        )
    return value


def to_minor(amount: Decimal | str | int, currency: str, field: str = "/amount") -> int:
    """Exact conversion: more decimals than the currency has (float noise such as 19.9900000001)
    is refused rather than rounded, because rounding money silently is how ledgers drift.
    Bounded first (`parse`)."""
    value = parse(amount, field)
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidInput(
            f"{currency} has {exponent(currency)} decimal places; '{str(amount)[:40]}' has more",
            field=field,
        )
    return check_minor(int(scaled), field)


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_minor(minor: int, currency: str) -> str:
    """20.00 for 2000 USD minor units; 500 for 500 JPY."""
    exp = exponent(currency)
    return f"{from_minor(minor, currency):.{exp}f}"
