from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from link_service import domain as shared
from link_service.advocates import domain
from servicekit.problems import InvalidInput

# ---------------------------------------------------------------------------- vanity codes


@pytest.mark.parametrize("code", ["JANE20", "jane-20", "Bob2024", "CLASSIC", "GRASS20", "TITLE99"])
def test_acceptable_vanity_codes(code: str) -> None:
    assert domain.validate_vanity_code(code) == code


@pytest.mark.parametrize(
    "code",
    ["FUCK20", "fuck", "f4ck-you", "SH1T99", "5HIT", "a55hole", "BITCH1", "phuck", "CUNT"],
)
def test_offensive_vanity_codes_are_refused_including_leetspeak(code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        domain.validate_vanity_code(code)
    assert err.value.field == "/code" and "offensive" in err.value.detail


@pytest.mark.parametrize("code", ["admin", "API-", "help", "Sup-port", "abc", "a" * 21, "no--x"])
def test_reserved_or_malformed_vanity_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        domain.validate_vanity_code(code)
    assert err.value.field == "/code"


# ---------------------------------------------------------------------------- share links


def test_share_links_carry_utm_and_intents_carry_the_message() -> None:
    url = shared.share_link("https://go.example.com/", "JANE20", "whatsapp", "prg_1")
    parts = urlsplit(url)
    assert parts.path == "/r/JANE20/whatsapp"
    assert parse_qs(parts.query) == {
        "utm_source": ["whatsapp"],
        "utm_medium": ["referral"],
        "utm_campaign": ["prg_1"],
    }
    message = domain.render_template("Hi from {name}, use {code}", {"name": "Jane", "code": "J"})
    assert message == "Hi from Jane, use J"  # no {link}: nothing appended without a link value
    message = domain.render_template("Hi {name}", {"name": "Jane", "link": url})
    assert message == f"Hi Jane {url}"
    wa = domain.share_intent("whatsapp", message, url, "Shop")
    assert wa is not None and wa.startswith("https://wa.me/?text=")
    assert parse_qs(urlsplit(wa).query)["text"] == [message]
    fb = domain.share_intent("facebook", message, url, "Shop")
    assert fb is not None and parse_qs(urlsplit(fb).query)["u"] == [url]
    mail = domain.share_intent("email", message, url, "Shop")
    assert mail is not None and mail.startswith("mailto:?subject=Shop&body=")
    assert domain.share_intent("copy", message, url, "Shop") is None
