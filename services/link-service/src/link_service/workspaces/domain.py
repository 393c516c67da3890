"""Pure rules of workspaces and keys."""

from __future__ import annotations

from datetime import datetime

from servicekit.auth import LIVE_PREFIX, TEST_PREFIX, generate_key, hash_key
from servicekit.problems import InvalidInput

# Characters of a secret shown in lists: the mode prefix and four of the random part, enough
# to tell keys apart, far too few to guess the rest.
DISPLAY_PREFIX_LENGTH = len(LIVE_PREFIX) + 4


def new_secret(test: bool) -> tuple[str, str, str]:
    """A new key's secret (shown once), its SHA-256 (stored) and its display prefix."""
    secret = generate_key(TEST_PREFIX if test else LIVE_PREFIX)
    return secret, hash_key(secret), secret[:DISPLAY_PREFIX_LENGTH]


def check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future", field="/expires_at")
