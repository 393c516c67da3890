from __future__ import annotations

import pytest

from link_service import domain as shared
from link_service.programs import domain
from servicekit.problems import InvalidInput, pointer

# ---------------------------------------------------------------------------- code format


def test_random_codes_follow_the_format_and_differ() -> None:
    fmt = domain.validate_code_format(10, "ABCDEFGHJK23456789", "jane-")
    assert fmt.prefix == "JANE-"
    codes = {shared.generate_code(fmt) for _ in range(500)}
    assert len(codes) == 500
    for code in codes:
        assert code.startswith("JANE-") and len(code) == 15
        assert set(code[5:]) <= set(fmt.alphabet)
        assert shared.is_well_formed_code(code)


@pytest.mark.parametrize(
    ("length", "alphabet", "prefix", "field"),
    [
        (8, "ABCDEFGHJKO23456789", "", "code_format.alphabet"),  # O looks like 0
        (8, "ABCDEFGHJK1234", "", "code_format.alphabet"),  # 1 looks like I/l
        (8, "abcdefghjk2345", "", "code_format.alphabet"),  # lower case
        (8, "ABCDEFGHJKAA", "", "code_format.alphabet"),  # repeated
        (8, "ABC234", "", "code_format.alphabet"),  # too few
        (5, "ABCDEFGHJK", "", "code_format.length"),  # 10^5 codes only
        (8, "ABCDEFGHJK23456789", "A B", "code_format.prefix"),
        (8, "ABCDEFGHJK23456789", "LOL", "code_format.prefix"),  # look-alikes in prefix
    ],
)
def test_bad_code_formats_name_the_field(length: int, alphabet: str, prefix: str, field: str):
    with pytest.raises(InvalidInput) as err:
        domain.validate_code_format(length, alphabet, prefix)
    assert err.value.field == pointer(field)


# ---------------------------------------------------------------------------- programs


def test_status_changes() -> None:
    domain.check_status_change("active", "paused")
    domain.check_status_change("paused", "active")
    with pytest.raises(InvalidInput) as err:
        domain.check_status_change("ended", "active")
    assert err.value.field == "/status"


def test_domains_and_fallback() -> None:
    assert domain.normalize_domains("https://Shop.Example.com/x", ["Example.COM."]) == [
        "example.com",
        "shop.example.com",
    ]
    with pytest.raises(InvalidInput) as err:
        domain.normalize_domains("https://shop.example.com", [], "https://evil.example.net/")
    assert err.value.field == "/fallback_url"
    with pytest.raises(InvalidInput) as err:
        domain.normalize_domains("javascript:alert(1)", [])
    assert err.value.field == "/landing_url"
    with pytest.raises(InvalidInput) as err:
        domain.normalize_domains("https://a.example", ["bad domain/x"])
    assert err.value.field == "/allowed_domains"


def test_share_templates_are_checked() -> None:
    domain.validate_share_templates({"x": "Try {program} with my code {code}: {link}"})
    with pytest.raises(InvalidInput) as err:
        domain.validate_share_templates({"myspace": "hi"})
    assert err.value.field == "/share_templates/myspace"
    with pytest.raises(InvalidInput) as err:
        domain.validate_share_templates({"email": "{link.__class__}"})
    assert err.value.field == "/share_templates/email"
