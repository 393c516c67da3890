"""reward-service's PERSONAL_DATA markers: every text/jsonb/array column of its schema, personal
or not, and each table's part in an export and an erasure (servicekit.privacy).

The ledger keeps every amount: a friend's holder id (their customer id) becomes the same
pseudonym in accounts, rewards, redemptions, payout lines and coupon codes, so each holder's
balance, every transfer and `reward-service verify` are unchanged. An advocate holds under the
advocate id, which link-service keeps (pseudonymous once the advocate's profile is erased).
docs/privacy.md is generated from this."""

from __future__ import annotations

from servicekit.privacy import OUTBOX, PersonalTable, pseudo

# A holder that is the person: the friend by customer id, the advocate by advocate id.
_HOLDER = (
    "t.tenant_id = s.tenant AND ((t.holder_type = 'customer' AND t.holder_id = ANY(s.customers))"
    " OR (t.holder_type = 'advocate' AND t.holder_id = ANY(s.advocates)))"
)
_PSEUDO_HOLDER = (
    f"CASE WHEN t.holder_type = 'customer' THEN {pseudo('holder_id')} ELSE t.holder_id END"
)

# A merchant's idempotency key may be built from anything (a customer id, an address).
_ERASED_KEY = "'erased_' || md5(random()::text)"

PERSONAL_DATA: tuple[PersonalTable, ...] = (
    PersonalTable(
        "accounts",
        personal=frozenset({"holder_id"}),
        other=frozenset({"holder_type", "kind", "purse", "tenant_id", "unit"}),
        match=_HOLDER,
        erase={"holder_id": _PSEUDO_HOLDER},
        note="a friend's accounts under a pseudonymous holder: balances and transfers stay",
    ),
    PersonalTable(
        "rewards",
        personal=frozenset({"holder_id"}),
        other=frozenset(
            {
                "advocate_id",
                "capped_period",
                "capped_reason",
                "clawback",
                "conversion_id",
                "holder_type",
                "id",
                "kind",
                "program_id",
                "purpose",
                "referral_id",
                "role",
                "rule_version_id",
                "segment",
                "source_event_id",
                "state",
                "tenant_id",
                "trigger",
                "unit",
            }
        ),
        match=_HOLDER,
        erase={"holder_id": _PSEUDO_HOLDER},
    ),
    PersonalTable(
        "redemptions",
        personal=frozenset({"holder_id", "reference", "idempotency_key"}),
        other=frozenset({"holder_type", "id", "request_hash", "tenant_id", "unit"}),
        match=_HOLDER,
        erase={
            "holder_id": _PSEUDO_HOLDER,
            "reference": "NULL",
            "idempotency_key": _ERASED_KEY,
        },
        note="`reference` and the idempotency key are the merchant's free text (an order "
        "number, a note, anything)",
    ),
    PersonalTable(
        "payout_lines",
        personal=frozenset({"holder_id", "reference", "reason"}),
        other=frozenset({"batch_id", "holder_type", "id", "status", "tenant_id", "unit"}),
        match=_HOLDER,
        erase={"holder_id": _PSEUDO_HOLDER, "reference": "NULL", "reason": "NULL"},
    ),
    PersonalTable(
        "coupon_codes",
        personal=frozenset({"holder_id"}),
        other=frozenset({"code", "pool_id", "reward_id"}),
        match="t.holder_id = ANY(s.customers || s.advocates) AND t.pool_id IN"
        " (SELECT p.id FROM coupon_pools p WHERE p.tenant_id = s.tenant)",
        erase={
            "holder_id": f"CASE WHEN t.holder_id = ANY(s.customers) THEN {pseudo('holder_id')}"
            " ELSE t.holder_id END"
        },
    ),
    PersonalTable(
        "advocate_attribute_changes",
        personal=frozenset({"changes"}),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
        match="t.tenant_id = s.tenant AND t.advocate_id = ANY(s.advocates)",
        erase=None,
        note="copy of link-service's history of the advocate's attributes (rules' segments)",
    ),
    PersonalTable(
        "advocate_counters",
        personal=frozenset(),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "cap_usage",
        personal=frozenset(),
        other=frozenset({"advocate_id", "period_key", "program_id", "tenant_id", "unit"}),
    ),
    PersonalTable(
        "coupon_pools",
        personal=frozenset(),
        other=frozenset({"id", "name", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "payout_batches", personal=frozenset(), other=frozenset({"id", "tenant_id", "unit"})
    ),
    PersonalTable(
        "program_segments",
        personal=frozenset(),
        other=frozenset({"program_id", "segments", "tenant_id"}),
    ),
    PersonalTable(
        "dev_clock_moves",
        personal=frozenset(),
        other=frozenset({"key_id", "tenant_id"}),
        note="who moved a dev stack's clock (API key ids), never written in production",
    ),
    PersonalTable(
        "programs",
        personal=frozenset(),
        other=frozenset({"program_id", "tenant_id"}),
        note="ids of the programs heard of from link.events (reads under others answer 404)",
    ),
    PersonalTable(
        "advocates",
        personal=frozenset(),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
        note="ids of the advocates heard of from link.events: no name, e-mail or customer id",
    ),
    PersonalTable(
        "program_spend", personal=frozenset(), other=frozenset({"program_id", "tenant_id", "unit"})
    ),
    PersonalTable(
        "refunds",
        personal=frozenset(),
        other=frozenset({"conversion_id", "refund_id", "tenant_id"}),
    ),
    PersonalTable(
        "rule_promotions",
        personal=frozenset(),
        other=frozenset(
            {
                "detail",
                "event_id",
                "experiment_id",
                "field",
                "outcome",
                "program_id",
                "rule_version_id",
                "tenant_id",
                "variant",
            }
        ),
        note="experiment winners promoted to reward rules; detail: why a config was refused",
    ),
    PersonalTable(
        "rule_versions",
        personal=frozenset(),
        other=frozenset({"definition", "id", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "successful_referrals",
        personal=frozenset(),
        other=frozenset({"advocate_id", "conversion_id", "program_id", "referral_id", "tenant_id"}),
    ),
    PersonalTable(
        "transfers",
        personal=frozenset(),
        other=frozenset({"cause", "leg", "reward_id", "tenant_id", "unit"}),
        note="between account ids (uuids): untouched by an erasure",
    ),
    PersonalTable(
        "api_keys",
        personal=frozenset(),
        other=frozenset({"id", "key_hash", "plan", "scopes", "workspace_id"}),
    ),
    PersonalTable(
        "privacy_tombstones", personal=frozenset(), other=frozenset({"digest", "request_id"})
    ),
    PersonalTable(
        "inbox",
        personal=frozenset(),
        other=frozenset({"consumer", "event_id", "event_type", "topic"}),
    ),
    OUTBOX,
)
