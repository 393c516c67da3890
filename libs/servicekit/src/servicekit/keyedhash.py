"""The keyed hash that replaces IP addresses and device ids wherever they are kept or compared
(link-service's clicks, attribution-service's conversions): HMAC-SHA256 under IP_HASH_KEY.

Rotation overlap: with IP_HASH_PREVIOUS_KEY set, a value is also hashed under the previous key
(and only then: the hot paths pay for one HMAC otherwise), so a hash stored before the rotation
still matches the same address seen after it (`KeyedHash.matches`)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache


def keyed_hash(key: bytes, value: str | None) -> str | None:
    """HMAC-SHA256 of `value` under `key`, hex; None for no value."""
    if not value:
        return None
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyedHash:
    """The service's hash keys: `key` hashes what is stored; `previous` (during a rotation)
    only what is compared."""

    key: bytes
    previous: bytes | None = None

    @classmethod
    def of(cls, key: str, previous: str | None = None) -> KeyedHash:
        return _cached(key, previous or None)

    def __call__(self, value: str | None) -> str | None:
        """The hash to store: under the current key."""
        return keyed_hash(self.key, value)

    def under_previous(self, value: str | None) -> str | None:
        """The same value under the previous key; None outside a rotation."""
        return keyed_hash(self.previous, value) if self.previous is not None else None


def matches(stored: str | None, current: str | None, previous: str | None = None) -> bool:
    """Whether a stored hash is the hash of the value whose hashes under the current and the
    previous key are `current` and `previous`: the one comparison of keyed hashes."""
    return stored is not None and (
        stored == current or (previous is not None and stored == previous)
    )


@lru_cache(maxsize=8)
def _cached(key: str, previous: str | None) -> KeyedHash:
    return KeyedHash(key.encode(), previous.encode() if previous is not None else None)
