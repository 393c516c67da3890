"""link-service's PERSONAL_DATA markers: every text/jsonb/array column of its schema, personal
or not, and each table's part in an export and an erasure (servicekit.privacy).
docs/privacy.md is generated from this; tests/e2e/test_privacy_registry.py fails on a column
that is in neither set."""

from __future__ import annotations

from servicekit.privacy import OUTBOX, PersonalTable, pseudo

_ADVOCATE = "t.advocate_id = ANY(s.advocates)"

PERSONAL_DATA: tuple[PersonalTable, ...] = (
    PersonalTable(
        "advocates",
        personal=frozenset(
            {"customer_id", "email", "name", "locale", "block_reason", "attributes"}
        ),
        other=frozenset({"id", "program_id", "referred_by", "tenant_id"}),
        match="t.tenant_id = s.tenant AND (t.id = ANY(s.advocates)"
        " OR t.customer_id = ANY(s.customers) OR lower(t.email) = ANY(s.emails))",
        erase={
            "customer_id": pseudo("customer_id"),
            "email": "NULL",
            "name": "NULL",
            "locale": "NULL",
            "block_reason": "NULL",
            "attributes": "'{}'::jsonb",
            "marketing_consent": "false",
            "blocked": "true",
            "blocked_at": "coalesce(t.blocked_at, now())",
        },
        note="the advocate row stays (its id holds ledger lines elsewhere), blocked, under a "
        "pseudonymous customer id",
    ),
    PersonalTable(
        "advocate_attribute_changes",
        personal=frozenset({"changes"}),
        other=frozenset({"advocate_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase=None,
        note="the history of the advocate's attributes (the merchant's facts about them)",
    ),
    PersonalTable(
        "advocate_sightings",
        personal=frozenset({"ip_hash", "device_hash"}),
        other=frozenset({"advocate_id", "id", "source", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase=None,
        note="where the advocate was seen (enrolment, their page), as keyed IP and device hashes",
    ),
    PersonalTable(
        "click_days",
        personal=frozenset(),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase={},
        note="exported; the daily click counts left of pruned clicks stay",
    ),
    PersonalTable(
        "clicks",
        personal=frozenset({"ip_hash", "referrer_host"}),
        other=frozenset(
            {
                "advocate_id",
                "channel",
                "code",
                "device_class",
                "id",
                "inactive_reason",
                "program_id",
                "tenant_id",
                "user_agent_family",
            }
        ),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase={"ip_hash": "NULL", "referrer_host": "NULL"},
        note="visitors of the advocate's links, as keyed IP hashes",
    ),
    PersonalTable(
        "codes",
        personal=frozenset(),
        other=frozenset({"advocate_id", "code", "code_key", "kind", "program_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase={},
        note="exported; codes stay (clicks and conversions name them)",
    ),
    PersonalTable(
        "enrollment_job_rows",
        personal=frozenset({"data", "error"}),
        other=frozenset({"advocate_id", "field", "job_id", "status"}),
        match=_ADVOCATE,
        erase={"data": "NULL", "error": "NULL"},
        note="the uploaded CSV/JSON row of a bulk enrollment",
    ),
    PersonalTable(
        "portal_referrals",
        personal=frozenset({"friend_label"}),
        other=frozenset({"advocate_id", "referral_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase=None,
        note="the advocate's read model; friends appear masked ('b•••@e•••.com')",
    ),
    PersonalTable(
        "portal_rewards",
        personal=frozenset(),
        other=frozenset({"advocate_id", "conversion_id", "reward_id", "state", "unit"}),
        match=_ADVOCATE,
        erase=None,
    ),
    PersonalTable(
        "portal_redemptions",
        personal=frozenset(),
        other=frozenset({"advocate_id", "redemption_id", "unit"}),
        match=_ADVOCATE,
        erase=None,
    ),
    PersonalTable(
        "portal_milestones",
        personal=frozenset(),
        other=frozenset({"advocate_id"}),
        match=_ADVOCATE,
        erase=None,
    ),
    PersonalTable(
        "portal_reminders",
        personal=frozenset(),
        other=frozenset({"advocate_id", "program_id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_ADVOCATE}",
        erase=None,
        note="an erased advocate is reminded of nothing",
    ),
    PersonalTable(
        "privacy_request_parts",
        personal=frozenset({"chunk"}),
        other=frozenset({"request_id", "service", "row_counts"}),
        match="t.request_id IN (SELECT r.id FROM privacy_requests r WHERE r.tenant_id = s.tenant"
        " AND r.kind = 'export' AND r.subject && s.tombstones)",
        erase={"chunk": "''"},
        note="export documents; an erasure empties the person's earlier exports",
    ),
    PersonalTable(
        "privacy_requests",
        personal=frozenset(),
        other=frozenset({"id", "tenant_id", "kind", "subject", "requested_by"}),
        note="the audit of requests: the subject only as tombstones (keyed hashes)",
    ),
    PersonalTable(
        "privacy_tombstones",
        personal=frozenset(),
        other=frozenset({"digest", "request_id"}),
        note="keyed hashes",
    ),
    PersonalTable(
        "audit_log",
        personal=frozenset(),
        other=frozenset({"action", "actor_key_id", "details", "target_id", "workspace_id"}),
        note="key and workspace changes; privacy requests by id only",
    ),
    PersonalTable(
        "api_keys",
        personal=frozenset(),
        other=frozenset(
            {"created_by", "id", "key_hash", "name", "plan", "prefix", "scopes", "workspace_id"}
        ),
    ),
    PersonalTable(
        "enrollment_jobs",
        personal=frozenset(),
        other=frozenset({"file_sha256", "format", "id", "program_id", "status", "tenant_id"}),
    ),
    PersonalTable(
        "programs",
        personal=frozenset(),
        other=frozenset(
            {
                "allowed_domains",
                "code_alphabet",
                "code_prefix",
                "default_locale",
                "fallback_url",
                "id",
                "landing_url",
                "name",
                "share_templates",
                "status",
                "tenant_id",
            }
        ),
    ),
    PersonalTable(
        "program_audiences",
        personal=frozenset(),
        other=frozenset({"attributes", "eligibility", "program_id", "segments", "tenant_id"}),
        note="a program's attribute definitions, segments and eligibility",
    ),
    PersonalTable(
        "portal_settings",
        personal=frozenset(),
        other=frozenset({"allowed_origins", "auto_enroll", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "portal_conversions",
        personal=frozenset(),
        other=frozenset({"conversion_id", "referral_id"}),
    ),
    PersonalTable(
        "workspaces", personal=frozenset(), other=frozenset({"created_by", "id", "name", "plan"})
    ),
    PersonalTable(
        "inbox",
        personal=frozenset(),
        other=frozenset({"consumer", "event_id", "event_type", "topic"}),
    ),
    OUTBOX,
)
