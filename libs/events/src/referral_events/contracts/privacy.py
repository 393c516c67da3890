"""Personal data requests (issue 19): link-service's `privacy` feature asks on `link.events`,
every service answers on its own topic.

The request carries the subject's identifiers in clear (each service has to find its rows), so
`link.events` holds personal data until its retention drops it (docs/privacy.md); it also
carries what the services record instead: the tombstones (keyed hashes) and the pseudonyms the
ids become, computed once by link-service with PRIVACY_HASH_KEY so every service agrees.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from referral_events.envelope import EventPayload

RequestKind = Literal["export", "erasure"]


class PrivacyRequested(EventPayload):
    """Export or erase everything about one person in one workspace. `advocate_ids` are the
    advocates link-service found for the subject (in every program); `customer_ids` and
    `emails` include those advocates' own."""

    TYPE: ClassVar[str] = "privacy.requested.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"customer_ids", "emails"})

    request_id: str
    kind: RequestKind
    customer_ids: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    advocate_ids: list[str] = Field(default_factory=list)
    # erasure only: keyed hashes of every identifier above (referral_events.privacy.digest)
    tombstones: list[str] = Field(default_factory=list)
    # erasure only: id -> the pseudonym it becomes (customer ids and advocate ids)
    pseudonyms: dict[str, str] = Field(default_factory=dict)
    # export only: the most JSON one part carries (link-service's PRIVACY_EXPORT_CHUNK_BYTES)
    chunk_bytes: int = 256 * 1024
    requested_at: datetime


class PrivacyPartDone(EventPayload):
    """One service did its part of a request. An export's document travels in `count` chunks of
    at most PRIVACY_EXPORT_CHUNK_BYTES (Kafka's message limit is 1 MB): `chunk` is the
    `index`-th slice of the service's JSON document; the service is done when all `count` have
    arrived. An erasure sends one part with `rows` (table -> rows erased) and no chunk."""

    TYPE: ClassVar[str] = "privacy.part_done.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"chunk"})

    request_id: str
    service: str
    kind: RequestKind
    index: int = 0
    count: int = 1
    chunk: str = ""
    rows: dict[str, int] = Field(default_factory=dict)
    done_at: datetime
