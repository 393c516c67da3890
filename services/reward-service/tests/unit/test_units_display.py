"""The display form of an amount (issue 17: quantity rewards showed raw numbers, `16000`)."""

from __future__ import annotations

import pytest

from reward_service.units import display, unit_kind


@pytest.mark.parametrize(
    ("amount", "unit", "shown"),
    [
        (2000, "EUR", "20.00 EUR"),
        (123456789, "USD", "1,234,567.89 USD"),
        (-2000, "USD", "-20.00 USD"),
        (0, "USD", "0.00 USD"),
        (500, "JPY", "500 JPY"),
        (1234, "BHD", "1.234 BHD"),
        (1200, "POINTS", "1,200 points"),
        (1, "POINTS", "1 point"),
        (-1, "POINTS", "-1 point"),
        (1, "COUPON", "1 coupon"),
        (16000, "MB", "16 GB"),
        (1500, "MB", "1.5 GB"),
        (1250, "MB", "1.25 GB"),
        (1234, "MB", "1,234 MB"),
        (500, "MB", "500 MB"),
        (-16000, "MB", "-16 GB"),
        (2_000_000, "MB", "2 TB"),
        (2048, "MIB", "2 GiB"),
        (1000, "MIB", "1,000 MiB"),
        (3, "SEATS", "3 SEATS"),
        (12000, "MINUTES", "12,000 MINUTES"),
    ],
)
def test_display_reads_as_a_person_would_say_it(amount: int, unit: str, shown: str) -> None:
    assert display(amount, unit) == shown


def test_unit_kinds() -> None:
    assert [unit_kind(u) for u in ("USD", "POINTS", "COUPON", "GB")] == [
        "currency",
        "points",
        "coupon",
        "quantity",
    ]
