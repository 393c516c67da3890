"""Ids derived from their cause. Everything a redelivery could otherwise duplicate (reward ids,
transfer ids, account ids, event ids) is a name-based UUID of what caused it, so one conversion
always maps to the same rows and events, and the database's unique keys turn a replay into a
no-op instead of a second posting.

The namespaces are fixed: changing one would re-key every derived id, so they never change."""

from __future__ import annotations

import base64
import uuid

_ROOT = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-platform:reward-service")


def namespace(kind: str) -> uuid.UUID:
    """The namespace of one kind of id (reward, event, account, transfer)."""
    return uuid.uuid5(_ROOT, kind)


def derive(ns: uuid.UUID, *parts: str) -> uuid.UUID:
    return uuid.uuid5(ns, "\x1f".join(parts))


def short_id(prefix: str, ns: uuid.UUID, *parts: str) -> str:
    # Same look as servicekit.ids.new_id (prefix + 24 base32 chars), but derived, not random.
    token = base64.b32encode(derive(ns, *parts).bytes[:15]).decode().lower()
    return f"{prefix}_{token}"
