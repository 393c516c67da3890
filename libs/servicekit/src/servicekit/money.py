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


def validate_currency(code: str, field: str = "currency") -> str:
    code = code.strip().upper()
    if code not in CURRENCIES:
        raise InvalidInput(f"'{code}' is not an ISO 4217 currency code", field=field)
    return code


def exponent(unit: str) -> int:
    """Decimal places of a unit's minor units: 2 for USD, 0 for JPY, 3 for BHD; 0 for units
    that are not currencies (points, MB), which count whole units."""
    return int(get_currency_precision(unit)) if unit in CURRENCIES else 0


def to_minor(amount: Decimal | str | int, currency: str, field: str = "amount") -> int:
    """Exact conversion: more decimals than the currency has (float noise such as 19.9900000001)
    is refused rather than rounded, because rounding money silently is how ledgers drift."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise InvalidInput(f"'{amount}' is not a number", field=field) from None
    if not value.is_finite():
        raise InvalidInput("amount must be a finite number", field=field)
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidInput(
            f"{currency} has {exponent(currency)} decimal places; '{amount}' has more", field=field
        )
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_minor(minor: int, currency: str) -> str:
    """20.00 for 2000 USD minor units; 500 for 500 JPY."""
    exp = exponent(currency)
    return f"{from_minor(minor, currency):.{exp}f}"
