"""servicekit.secretbox: seals under the newest key, opens under any configured one, reads a
value from before sealing as it is, and names a missing key instead of guessing."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from servicekit.secretbox import PREFIX, SecretBox, SecretKeyMissing, box, key_id


def test_seal_open_and_rotation() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = SecretBox([old])
    sealed = before.seal("whsec_abc")
    assert sealed.startswith(f"{PREFIX}{key_id(old)}:") and "whsec_abc" not in sealed
    assert before.open(sealed) == "whsec_abc"
    assert before.seal("whsec_abc") != sealed  # a fresh IV every time

    during = SecretBox([new, old])
    assert during.open(sealed) == "whsec_abc"
    assert not during.is_current(sealed)
    moved = during.reseal(sealed)
    assert during.is_current(moved) and during.reseal(moved) == moved
    assert SecretBox([new]).open(moved) == "whsec_abc"
    with pytest.raises(SecretKeyMissing, match=key_id(new)):
        before.open(moved)


def test_plaintext_from_before_sealing_reads_as_it_is_and_reseals() -> None:
    b = SecretBox([Fernet.generate_key().decode()])
    assert b.open("shpss_legacy") == "shpss_legacy"
    assert b.open(b.reseal("shpss_legacy")) == "shpss_legacy"


def test_a_tampered_value_or_a_bad_key_is_refused() -> None:
    b = SecretBox([Fernet.generate_key().decode()])
    sealed = b.seal("s3cret")
    with pytest.raises(SecretKeyMissing):
        b.open(sealed[:-4] + "AAAA")
    with pytest.raises(ValueError):
        SecretBox(["not-a-fernet-key"])


def test_box_reads_the_settings_form() -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    b = box(k1, f" {k2} ,")
    assert b.current == key_id(k1)
    assert b.open(SecretBox([k2]).seal("x")) == "x"
