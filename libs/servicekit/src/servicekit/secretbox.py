"""Secrets at rest: what a service must keep and use again (an integration's webhook secret, an
endpoint's signing secret) is stored sealed under an envelope key from the settings, never in
clear.

A sealed value is text, `sb1:<key id>:<Fernet token>`, so it fits the text columns the
plaintext lived in. Fernet (`cryptography`) is authenticated encryption with a random IV per
token, nothing to get wrong by hand; the key id names which configured key sealed it, so a read
picks that key at once and the rotation job finds the rows still under an older one with a
`NOT LIKE` on the current prefix.

Rotation: configure the new key as the service's `SECRETS_KEY` and keep the previous ones in
`SECRETS_OLD_KEYS`; reads accept any of them, writes seal under the newest, and the `Resealer`
worker re-seals, in bounded batches, every row not yet under it. Values written before this
existed (plaintext, no prefix) are read as they are and sealed by the same worker on its first
run; once it has gone over a table, no secret of it is in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import asyncpg
from cryptography.fernet import Fernet, InvalidToken
from prometheus_client import Counter

from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

PREFIX = "sb1:"
# Public (it is in this repository): accepted only with ENVIRONMENT=dev (refuse_dev_defaults).
DEV_SECRETS_KEY = "ZGV2LW9ubHktc2VjcmV0cy1rZXktMzItYnl0ZXMhISE="
# Opened values kept per process: the webhook dispatcher and the commerce webhooks open the
# same few secrets on every request.
_OPENED_MAX = 10_000

RESEALED = Counter(
    "referral_secrets_resealed_total",
    "Stored secrets sealed again under the newest SECRETS_KEY (rotation, or plaintext from "
    "before sealing), by table.",
    ["table"],
)


class SecretKeyMissing(RuntimeError):
    """A value sealed under a key that is no longer configured: it cannot be read."""


def key_id(key: str) -> str:
    """A short public name of a key (not the key): which one sealed a value."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class SecretBox:
    """Seals under the first key, opens under any (`keys`: Fernet keys, newest first)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key")
        # Fernet() refuses a key that is not 32 url-safe base64 bytes: at start, not at use.
        self._fernets = {key_id(k): Fernet(k) for k in keys}
        self.current = key_id(keys[0])
        self.current_prefix = f"{PREFIX}{self.current}:"
        self._opened: dict[str, str] = {}

    def seal(self, plaintext: str) -> str:
        token = self._fernets[self.current].encrypt(plaintext.encode()).decode()
        return self.current_prefix + token

    def open(self, stored: str) -> str:
        """The plaintext of a sealed value; a value from before sealing (no prefix) as it is."""
        if not stored.startswith(PREFIX):
            return stored
        hit = self._opened.get(stored)
        if hit is not None:
            return hit
        kid, _, token = stored[len(PREFIX) :].partition(":")
        fernet = self._fernets.get(kid)
        if fernet is None:
            raise SecretKeyMissing(
                f"a secret is sealed under key {kid}, which neither SECRETS_KEY nor "
                "SECRETS_OLD_KEYS holds"
            )
        try:
            plain = fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMissing(f"a secret sealed under key {kid} does not open") from exc
        if len(self._opened) >= _OPENED_MAX:
            self._opened.clear()
        self._opened[stored] = plain
        return plain

    def is_current(self, stored: str) -> bool:
        return stored.startswith(self.current_prefix)

    def reseal(self, stored: str) -> str:
        """The value sealed under the newest key (itself if it already is)."""
        return stored if self.is_current(stored) else self.seal(self.open(stored))


@lru_cache(maxsize=8)
def box(key: str, old_keys: str = "") -> SecretBox:
    """The box of a service's settings: `key` (SECRETS_KEY) and `old_keys` (SECRETS_OLD_KEYS,
    comma-separated), one per process."""
    return SecretBox([key, *(k.strip() for k in old_keys.split(",") if k.strip())])


@dataclass(frozen=True)
class SealedColumn:
    """A column holding sealed values, and its table's primary key (one column)."""

    table: str
    key: str
    column: str


async def reseal_batch(
    conn: asyncpg.Connection, sealer: SecretBox, col: SealedColumn, limit: int
) -> int:
    """Seals again under the newest key up to `limit` values of `col` that are not yet (rows
    locked SKIP LOCKED: replicas take others). Returns how many."""
    # The identifiers come from the services' own SealedColumn constants, never from input.
    select = (
        f"SELECT {col.key} AS k, {col.column} AS v FROM {col.table} "  # noqa: S608
        f"WHERE {col.column} NOT LIKE $1 LIMIT $2 FOR UPDATE SKIP LOCKED"
    )
    rows = await conn.fetch(
        select,
        sealer.current_prefix + "%",
        limit,
    )
    if not rows:
        return 0
    key_type = "bigint" if isinstance(rows[0]["k"], int) else "text"
    update = (
        f"UPDATE {col.table} t SET {col.column} = u.v "  # noqa: S608
        f"FROM unnest($1::{key_type}[], $2::text[]) AS u(k, v) WHERE t.{col.key} = u.k"
    )
    await conn.execute(
        update,
        [r["k"] for r in rows],
        [sealer.reseal(r["v"]) for r in rows],
    )
    RESEALED.labels(table=col.table).inc(len(rows))
    return len(rows)


class Resealer:
    """Background worker: keeps every sealed column under the newest key (rotation, and the
    first sealing of values stored in clear before), a bounded batch per transaction; sleeps
    `interval` once nothing is left."""

    def __init__(
        self,
        rt: Runtime,
        sealer: SecretBox,
        columns: Sequence[SealedColumn],
        *,
        batch: int = 500,
        interval: float = 60.0,
    ) -> None:
        self._rt = rt
        self._box = sealer
        self._columns = list(columns)
        self._batch = batch
        self._interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # a bad row must not stop the worker; it is retried next round
                log.exception("resealing secrets failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def run_once(self) -> int:
        """Re-seals everything not under the newest key; returns how many values."""
        done = 0
        for col in self._columns:
            while not self._stop.is_set():
                async with self._rt.transaction() as conn:
                    n = await reseal_batch(conn, self._box, col, self._batch)
                done += n
                if n < self._batch:
                    break
        return done

    async def stop(self) -> None:
        self._stop.set()
