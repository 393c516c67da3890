"""servicekit.keyedhash: one HMAC for IP addresses and device ids, and the rotation overlap: a
hash stored under the previous key matches the same value while IP_HASH_PREVIOUS_KEY is set."""

from __future__ import annotations

from servicekit.keyedhash import KeyedHash, keyed_hash, matches


def test_overlap_matches_hashes_under_either_key() -> None:
    old, new = KeyedHash.of("old-key-123"), KeyedHash.of("new-key-456", "old-key-123")
    stored_before = old("203.0.113.9")
    assert new("203.0.113.9") != stored_before  # what is stored now is under the new key
    assert new.under_previous("203.0.113.9") == stored_before
    assert matches(stored_before, new("203.0.113.9"), new.under_previous("203.0.113.9"))
    assert matches(new("203.0.113.9"), new("203.0.113.9"), new.under_previous("203.0.113.9"))
    assert not matches(stored_before, new("198.51.100.1"), new.under_previous("198.51.100.1"))
    # outside a rotation there is no second hash, so nothing stored under an old key matches
    after = KeyedHash.of("new-key-456")
    assert after.under_previous("203.0.113.9") is None
    assert not matches(stored_before, after("203.0.113.9"), after.under_previous("203.0.113.9"))
    assert not matches(None, None) and keyed_hash(b"k", None) is None and new(None) is None
