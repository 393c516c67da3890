"""Tombstone digests: keyed, scoped to the workspace, e-mails compared case-insensitively, and
every identifier field of a payload checked."""

from __future__ import annotations

from referral_events.privacy import digest, digests_of, pseudonym

KEY = b"k" * 16


def test_digests_are_keyed_and_scoped() -> None:
    d = digest(KEY, "t1", "customer", "cus_1")
    assert d == digest(KEY, "t1", "customer", "cus_1")
    assert d != digest(b"another-key-here", "t1", "customer", "cus_1")
    assert d != digest(KEY, "t2", "customer", "cus_1")
    assert d != digest(KEY, "t1", "email", "cus_1")
    assert digest(KEY, "t1", "email", " Pat@Example.com") == digest(
        KEY, "t1", "email", "pat@example.com"
    )


def test_every_identifier_field_of_a_payload_is_hashed() -> None:
    data = {"friend_customer_id": "cus_1", "friend_email": "a@b.c", "holder_id": "h", "amount": 5}
    got = set(digests_of(KEY, "t1", data))
    assert digest(KEY, "t1", "customer", "cus_1") in got
    assert digest(KEY, "t1", "email", "a@b.c") in got
    assert {digest(KEY, "t1", "customer", "h"), digest(KEY, "t1", "advocate", "h")} <= got
    assert len(got) == 4


def test_pseudonyms_are_stable_and_say_what_they_are() -> None:
    p = pseudonym(KEY, "t1", "cus_1")
    assert p == pseudonym(KEY, "t1", "cus_1") and p.startswith("erased_") and "cus_1" not in p
