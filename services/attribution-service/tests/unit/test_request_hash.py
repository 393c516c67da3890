"""The conversion's request hash is the one idempotent retries are compared by: orjson's canonical
form must be byte for byte the stdlib's for the documents it writes (ASCII-only), or a retry of a
request stored before would answer 409."""

from __future__ import annotations

import hashlib
import json
import random
import string
from datetime import UTC, datetime
from decimal import Decimal

from attribution_service.conversions.handlers import request_hash
from attribution_service.conversions.schemas import ConversionIn


def _stdlib(cmd: ConversionIn) -> str:
    canonical = json.dumps(cmd.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Printable ASCII and the control characters both encoders escape (each its own way to check).
ALPHABET = string.printable + '\x00\x01\x1f\x7f"\\/'


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, n)))


def test_the_hash_is_the_stdlib_canonical_forms() -> None:
    rng = random.Random(7)
    for i in range(500):
        cmd = ConversionIn.model_validate(
            {
                "type": "purchase",
                "customer_id": _text(rng, 30),
                "code": "CODE" + str(i),
                "order_id": _text(rng, 20),
                "amount": str(Decimal(rng.randint(1, 10**6)) / 100),
                "currency": "USD",
                "email": f"friend{i}@example.com",
                "occurred_at": datetime(2026, 1, 1, 12, rng.randint(0, 59), tzinfo=UTC),
                "user_agent": _text(rng, 40),
            }
        )
        assert request_hash(cmd) == _stdlib(cmd)


def test_non_ascii_documents_hash_as_the_stdlib_escapes_them() -> None:
    cmd = ConversionIn.model_validate(
        {"type": "signup", "customer_id": "müller-ß-東京", "email": "zoë@exämple.org"}
    )
    assert request_hash(cmd) == _stdlib(cmd)
