"""Money at the edges: exact conversion, and bounds checked before any arithmetic (a review
found `"1e999990"` costing ~24 s of CPU on the event loop and `"1e999998"` an uncaught
decimal.Overflow)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from servicekit import money
from servicekit.problems import InvalidInput


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("59.90", "USD", 5990),
        ("1000", "JPY", 1000),
        ("1.234", "BHD", 1234),
        (Decimal("0"), "USD", 0),
    ],
)
def test_exact_amounts_convert(amount: str | Decimal, currency: str, minor: int) -> None:
    assert money.to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    "amount",
    [
        "1e999990",
        "1e999998",
        "-1e999998",
        "0e999999",
        "9" * 17,
        "1" + "0" * 100_000,
        "1." + "1" * 30,
        Decimal("1E+999990"),
        "10000000000000.01",  # 10^13 dollars: 10^15 minor units + 1
    ],
)
def test_huge_amounts_are_refused_at_once(amount: str | Decimal) -> None:
    started = time.process_time()
    with pytest.raises(InvalidInput) as refused:
        money.to_minor(amount, "USD")
    assert time.process_time() - started < 0.05
    assert refused.value.field == "/amount"


def test_the_largest_amount_is_accepted() -> None:
    assert money.to_minor("10000000000000.00", "USD") == money.MAX_MINOR


def test_tiny_fractions_are_refused_not_rounded() -> None:
    with pytest.raises(InvalidInput, match="decimal places"):
        money.to_minor("1e-999999", "USD")


def test_minor_units_are_bounded_too() -> None:
    assert money.check_minor(money.MAX_MINOR) == money.MAX_MINOR
    with pytest.raises(InvalidInput) as refused:
        money.check_minor(money.MAX_MINOR + 1, field="amount_minor")
    assert refused.value.field == "/amount_minor"


@pytest.mark.parametrize("amount", ["1e-999999999", "-1e-30", Decimal("1E-999999999")])
def test_fractions_too_small_to_scale_are_refused_not_zero(amount: str | Decimal) -> None:
    # Scaling 1e-999999999 underflows to 0, which passed as a zero amount before.
    with pytest.raises(InvalidInput, match="decimal places") as refused:
        money.to_minor(amount, "USD")
    assert refused.value.field == "/amount"


@pytest.mark.parametrize(
    "amount",
    [10**5000, -(10**16), "0." + "0" * 300 + "1e999999", "x1"],
    ids=["int-5000-digits", "int-minus-1e16", "long-text", "not-a-number"],
)
def test_huge_ints_and_long_text_are_refused_at_once(amount: int | str) -> None:
    # str() of an int past 4300 digits raised ValueError (a 500), not a refusal.
    started = time.process_time()
    with pytest.raises(InvalidInput):
        money.to_minor(amount, "USD")
    assert time.process_time() - started < 0.05


def test_zero_with_any_exponent_is_zero() -> None:
    assert money.to_minor("0E-999999999", "USD") == 0
    assert money.parse(Decimal("-0.00")) == 0
