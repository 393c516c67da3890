"""attribution-service's PERSONAL_DATA markers: every text/jsonb/array column of its schema,
personal or not, and each table's part in an export and an erasure (servicekit.privacy). The
order matters: tables found through the person's conversions come before the conversions are
pseudonymised. docs/privacy.md is generated from this."""

from __future__ import annotations

from servicekit.privacy import OUTBOX, PersonalTable, pseudo

# The person's conversions (as the friend), by customer id or e-mail.
_CONVERSIONS = (
    "SELECT c.id FROM conversions c WHERE c.tenant_id = s.tenant AND (c.customer_id ="
    " ANY(s.customers) OR lower(c.email) = ANY(s.emails) OR c.email_norm = ANY(s.emails))"
)
_CLICKS_OF_CONVERSIONS = (
    "SELECT c.click_id FROM conversions c WHERE c.tenant_id = s.tenant AND c.click_id IS NOT NULL"
    " AND (c.customer_id = ANY(s.customers) OR lower(c.email) = ANY(s.emails)"
    " OR c.email_norm = ANY(s.emails))"
)
_ADVOCATE = "t.advocate_id = ANY(s.advocates)"
_CUSTOMER = "t.tenant_id = s.tenant AND t.customer_id = ANY(s.customers)"

PERSONAL_DATA: tuple[PersonalTable, ...] = (
    PersonalTable(
        "clicks",
        personal=frozenset({"ip_hash"}),
        other=frozenset(
            {
                "advocate_id",
                "code",
                "device_class",
                "id",
                "inactive_reason",
                "program_id",
                "tenant_id",
            }
        ),
        match=f"t.tenant_id = s.tenant AND (t.id IN ({_CLICKS_OF_CONVERSIONS}) OR t.id IN"  # noqa: S608
        " (SELECT cc.click_id FROM customer_clicks cc WHERE cc.tenant_id = s.tenant"
        f" AND cc.customer_id = ANY(s.customers)) OR {_ADVOCATE})",
        erase={"ip_hash": "NULL"},
        note="the friend's clicks (by their conversions) and the clicks on the advocate's links",
    ),
    PersonalTable(
        "analytics_members",
        personal=frozenset({"member"}),
        other=frozenset({"channel", "kind", "program_id"}),
        match="t.kind = 'visitor' AND t.member IN (SELECT c.ip_hash FROM conversions c WHERE"
        " c.tenant_id = s.tenant AND c.ip_hash IS NOT NULL AND (c.customer_id = ANY(s.customers)"
        " OR c.email_norm = ANY(s.emails)))",
        erase={"member": "'erased_' || md5(t.member)"},
        note="distinct visitors (IP hashes) and sharers (advocate ids) per day: a visitor's hash "
        "becomes a pseudonym, so distinct counts stay",
    ),
    PersonalTable(
        "reviews",
        personal=frozenset({"decision_reason"}),
        other=frozenset(
            {
                "advocate_id",
                "conversion_id",
                "decided_by",
                "id",
                "program_id",
                "reasons",
                "status",
                "tenant_id",
            }
        ),
        match=f"t.tenant_id = s.tenant AND t.conversion_id IN ({_CONVERSIONS})",
        erase={"decision_reason": "NULL"},
        note="a reviewer's free text about the conversion",
    ),
    PersonalTable(
        "review_audit",
        personal=frozenset({"reason"}),
        other=frozenset(
            {"changed_ids", "decided_by", "decision", "id", "key_id", "review_ids", "tenant_id"}
        ),
        match="t.tenant_id = s.tenant AND t.review_ids && ARRAY(SELECT r.id FROM reviews r"  # noqa: S608
        f" WHERE r.tenant_id = s.tenant AND r.conversion_id IN ({_CONVERSIONS}))",
        erase={"reason": "''"},
        note="a reviewer's free text on a bulk decision that took in the person's conversions",
    ),
    PersonalTable(
        "advocate_sightings",
        personal=frozenset({"ip_hash", "device_hash"}),
        other=frozenset({"advocate_id", "id", "source", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase=None,
        note="copy of link-service's sightings of the advocate (keyed hashes): deleted",
    ),
    PersonalTable(
        "advocate_risk",
        personal=frozenset(),
        other=frozenset({"advocate_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase={},
        note="exported; counts and scores under the advocate id stay",
    ),
    PersonalTable(
        "customer_clicks",
        personal=frozenset({"customer_id"}),
        other=frozenset({"click_id", "tenant_id"}),
        match=_CUSTOMER,
        erase=None,
    ),
    PersonalTable(
        "conversions",
        personal=frozenset(
            {
                "customer_id",
                "email",
                "email_norm",
                "ip_hash",
                "device_hash",
                "ip_prefix_hash",
                "ua_network_hash",
                "address_hash",
                "payment_hash",
                "email_stem_hash",
                "email_domain_hash",
                "country",
                "locale",
                "explanation",
                "request_hash",
                "idempotency_key",
            }
        ),
        other=frozenset(
            {
                "advocate_id",
                "click_id",
                "code_key",
                "currency",
                "custom_type",
                "decision",
                "evidence",
                "id",
                "order_id",
                "program_id",
                "referral_id",
                "source",
                "status",
                "subscription_id",
                "tenant_id",
                "type",
            }
        ),
        match="t.tenant_id = s.tenant AND (t.customer_id = ANY(s.customers)"
        " OR lower(t.email) = ANY(s.emails) OR t.email_norm = ANY(s.emails))",
        erase={
            "customer_id": pseudo("customer_id"),
            "email": "NULL",
            "email_norm": "NULL",
            "ip_hash": "NULL",
            "device_hash": "NULL",
            "ip_prefix_hash": "NULL",
            "ua_network_hash": "NULL",
            "address_hash": "NULL",
            "payment_hash": "NULL",
            "email_stem_hash": "NULL",
            "email_domain_hash": "NULL",
            "country": "NULL",
            "locale": "NULL",
            "explanation": "'{}'::jsonb",
            "request_hash": "'erased'",
            # the merchant's key may be built from anything (a customer id, an address)
            "idempotency_key": "CASE WHEN t.idempotency_key IS NULL THEN NULL"
            " ELSE 'erased_' || md5(random()::text) END",
        },
        note="the friend's conversions: amounts, decisions and ids stay (analytics, refunds)",
    ),
    PersonalTable(
        "referrals",
        personal=frozenset({"friend_customer_id"}),
        other=frozenset({"advocate_id", "click_id", "evidence", "id", "program_id", "tenant_id"}),
        match="t.tenant_id = s.tenant AND t.friend_customer_id = ANY(s.customers)",
        erase={"friend_customer_id": pseudo("friend_customer_id")},
    ),
    PersonalTable(
        "advocates",
        personal=frozenset({"customer_id", "email", "email_norm"}),
        other=frozenset({"id", "program_id", "tenant_id"}),
        match="t.tenant_id = s.tenant AND (t.id = ANY(s.advocates) OR t.customer_id ="
        " ANY(s.customers) OR lower(t.email) = ANY(s.emails) OR t.email_norm = ANY(s.emails))",
        erase={
            "customer_id": pseudo("customer_id"),
            "email": "NULL",
            "email_norm": "NULL",
            "blocked": "true",
        },
        note="copy of link-service's advocates (self-referral screening)",
    ),
    PersonalTable(
        "analytics_advocates",
        personal=frozenset({"display_name"}),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase={"display_name": "NULL"},
    ),
    PersonalTable(
        "analytics_referrals",
        personal=frozenset({"friend_customer_id"}),
        other=frozenset({"advocate_id", "program_id"}),
        match="t.friend_customer_id = ANY(s.customers) AND t.program_id IN"
        " (SELECT p.id FROM programs p WHERE p.tenant_id = s.tenant)",
        erase={"friend_customer_id": pseudo("friend_customer_id")},
        note="pseudonymised, so K-factor and funnel counts stay",
    ),
    PersonalTable(
        "analytics_customers",
        personal=frozenset({"customer_id"}),
        other=frozenset({"referred_program_id", "tenant_id"}),
        match=_CUSTOMER,
        erase={"customer_id": pseudo("customer_id")},
        note="pseudonymised, so cohort counts stay",
    ),
    PersonalTable(
        "analytics_customer_days",
        personal=frozenset({"customer_id"}),
        other=frozenset({"currency", "tenant_id"}),
        match=_CUSTOMER,
        erase={"customer_id": pseudo("customer_id")},
        note="pseudonymised, so cohort sums stay",
    ),
    PersonalTable(
        "subscription_cancellations",
        personal=frozenset({"customer_id"}),
        other=frozenset({"subscription_id", "tenant_id"}),
        match=_CUSTOMER,
        erase={"customer_id": pseudo("customer_id")},
    ),
    PersonalTable(
        "analytics_emitted",
        personal=frozenset({"payload"}),
        other=frozenset({"event_id"}),
        note="this service's own events waiting (seconds) to be folded into analytics",
        rewritten_by="privacy.handlers.scrub_waiting",
    ),
    PersonalTable(
        "codes",
        personal=frozenset(),
        other=frozenset({"advocate_id", "alias_of", "code", "code_key", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "analytics_advocate_counters",
        personal=frozenset(),
        other=frozenset({"advocate_id", "metric", "program_id", "unit"}),
    ),
    PersonalTable(
        "analytics_counters",
        personal=frozenset(),
        other=frozenset({"channel", "metric", "program_id", "tenant_id", "unit"}),
    ),
    PersonalTable(
        "analytics_leaderboard",
        personal=frozenset(),
        other=frozenset({"advocate_id", "metric", "period", "program_id"}),
    ),
    PersonalTable(
        "analytics_leaderboard_counts",
        personal=frozenset(),
        other=frozenset({"block", "metric", "period", "program_id"}),
    ),
    PersonalTable(
        "analytics_programs",
        personal=frozenset(),
        other=frozenset({"program_id", "tenant_id", "time_zone"}),
    ),
    PersonalTable(
        "analytics_rewards",
        personal=frozenset(),
        other=frozenset({"program_id", "reward_id", "unit"}),
    ),
    PersonalTable(
        "api_keys",
        personal=frozenset(),
        other=frozenset({"id", "key_hash", "plan", "scopes", "workspace_id"}),
    ),
    PersonalTable(
        "experiments",
        personal=frozenset(),
        other=frozenset(
            {
                "id",
                "kind",
                "name",
                "program_id",
                "salt",
                "status",
                "tenant_id",
                "variants",
                "winner",
            }
        ),
    ),
    PersonalTable(
        "expired_evidence",
        personal=frozenset(),
        other=frozenset({"kind", "tenant_id", "value"}),
        note="codes and click ids whose window ended",
    ),
    PersonalTable(
        "integrations",
        personal=frozenset(),
        other=frozenset({"account", "id", "provider", "secret", "tenant_id"}),
        note="the merchant's Shopify/Stripe accounts",
    ),
    PersonalTable(
        "program_settings",
        personal=frozenset(),
        other=frozenset({"program_id", "settings", "tenant_id"}),
    ),
    PersonalTable(
        "programs",
        personal=frozenset(),
        other=frozenset({"friend_countries", "id", "name", "status", "tenant_id"}),
    ),
    PersonalTable(
        "refunds",
        personal=frozenset(),
        other=frozenset(
            {"conversion_id", "currency", "external_id", "id", "request_hash", "tenant_id"}
        ),
    ),
    PersonalTable(
        "webhook_receipts",
        personal=frozenset(),
        other=frozenset({"delivery_id", "integration_id", "outcome", "topic"}),
        note="which Shopify/Stripe deliveries were handled, and the conversion ids they made",
    ),
    PersonalTable(
        "privacy_tombstones",
        personal=frozenset(),
        other=frozenset({"digest", "request_id"}),
        note="keyed hashes",
    ),
    PersonalTable(
        "inbox",
        personal=frozenset(),
        other=frozenset({"consumer", "event_id", "event_type", "topic"}),
    ),
    OUTBOX,
)
