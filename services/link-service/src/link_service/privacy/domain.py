"""Rules of personal data requests, without I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from referral_events.privacy import digest, pseudonym

# Every service that holds personal data answers every request (docs/privacy.md).
SERVICES: tuple[str, ...] = (
    "link-service",
    "attribution-service",
    "reward-service",
    "notification-service",
)


@dataclass(frozen=True)
class Identifiers:
    """The person's identifiers: what the caller named plus what link-service's advocates
    with those identifiers carry (an advocate named by e-mail brings their customer id)."""

    customer_ids: list[str]
    emails: list[str]
    advocate_ids: list[str]

    def tombstones(self, key: bytes, tenant_id: str) -> list[str]:
        return sorted(
            {digest(key, tenant_id, "customer", c) for c in self.customer_ids}
            | {digest(key, tenant_id, "email", e) for e in self.emails}
            | {digest(key, tenant_id, "advocate", a) for a in self.advocate_ids}
        )

    def pseudonyms(self, key: bytes, tenant_id: str) -> dict[str, str]:
        """Customer ids only: advocate ids stay (the ledger holds under them; nothing outside
        the platform knows them once the advocate's profile is gone)."""
        return {c: pseudonym(key, tenant_id, c) for c in self.customer_ids}


def identifiers(
    customer_id: str | None, email: str | None, advocates: Iterable[Mapping[str, Any]]
) -> Identifiers:
    customers = [customer_id] if customer_id else []
    emails = [email.strip().lower()] if email else []
    advocate_ids: list[str] = []
    for a in advocates:
        advocate_ids.append(a["id"])
        customers.append(a["customer_id"])
        if a["email"]:
            emails.append(a["email"].strip().lower())
    return Identifiers(
        list(dict.fromkeys(customers)),
        list(dict.fromkeys(emails)),
        list(dict.fromkeys(advocate_ids)),
    )


@dataclass(frozen=True)
class Part:
    service: str
    part: int
    parts: int
    chunk: str
    row_counts: dict[str, int]
    done_at: Any


def progress(parts: Iterable[Part]) -> dict[str, dict[str, Any]]:
    """Each service's state: pending (nothing yet), receiving (some of an export's chunks),
    done (all)."""
    by_service: dict[str, list[Part]] = {s: [] for s in SERVICES}
    for p in parts:
        by_service.setdefault(p.service, []).append(p)
    out: dict[str, dict[str, Any]] = {}
    for service, got in by_service.items():
        if not got:
            out[service] = {"status": "pending", "parts_received": 0}
            continue
        total = got[0].parts
        out[service] = {
            "status": "done" if len(got) >= total else "receiving",
            "parts_received": len(got),
            "parts": total,
            "done_at": max(p.done_at for p in got),
            "rows": got[0].row_counts,
        }
    return out


def complete(parts: Iterable[Part]) -> bool:
    return all(p["status"] == "done" for p in progress(parts).values())


def document(parts: Iterable[Part]) -> dict[str, Any]:
    """An export's whole document: each service's chunks joined in order and parsed."""
    by_service: dict[str, list[Part]] = {}
    for p in parts:
        by_service.setdefault(p.service, []).append(p)
    return {
        service: json.loads("".join(p.chunk for p in sorted(got, key=lambda p: p.part)) or "{}")
        for service, got in sorted(by_service.items())
    }
