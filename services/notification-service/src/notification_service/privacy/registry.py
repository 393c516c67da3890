"""notification-service's PERSONAL_DATA markers: every text/jsonb/array column of its schema,
personal or not, and each table's part in an export and an erasure (servicekit.privacy).
Webhook message bodies are copies of events: `privacy.handlers` rewrites those naming the
person (their personal fields emptied, their ids pseudonymised) after these declarations ran.
docs/privacy.md is generated from this."""

from __future__ import annotations

from servicekit.privacy import OUTBOX, PersonalTable, pseudo


# Any of the person's identifiers inside a text column `col` of `t`.
def _names(col: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM unnest(s.customers || s.emails || s.advocates) AS i"  # noqa: S608
        f" WHERE strpos(lower(t.{col}), lower(i)) > 0)"
    )


# An invitee's recipient id is the SHA-256 of the lower-cased address.
_INVITEE_IDS = "SELECT encode(sha256(convert_to(e, 'UTF8')), 'hex') FROM unnest(s.emails) AS e"

_TO_THEM = (
    "(t.recipient_id = ANY(s.customers || s.advocates) OR lower(t.to_address) = ANY(s.emails)"
    f" OR t.recipient_id IN ({_INVITEE_IDS}))"
)

PERSONAL_DATA: tuple[PersonalTable, ...] = (
    PersonalTable(
        "webhook_attempts",
        personal=frozenset({"response_body", "error"}),
        other=frozenset({"delivery_id", "outcome"}),
        match="t.delivery_id IN (SELECT d.id FROM webhook_deliveries d JOIN webhook_messages m"
        " ON m.id = d.message_id AND m.tenant_id = d.tenant_id WHERE d.tenant_id = s.tenant"
        " AND EXISTS (SELECT 1 FROM unnest(s.customers || s.emails || s.advocates) AS i"
        " WHERE strpos(lower(m.body), lower(i)) > 0))",
        erase={"response_body": "NULL", "error": "NULL"},
        note="what the receiver answered to a delivery of a message naming the person",
    ),
    PersonalTable(
        "webhook_messages",
        personal=frozenset({"body"}),
        other=frozenset({"event_type", "id", "tenant_id"}),
        match=f"t.tenant_id = s.tenant AND {_names('body')}",
        erase={},
        note="event copies delivered to webhooks",
        rewritten_by="privacy.handlers.scrub_messages",
    ),
    PersonalTable(
        "emails",
        personal=frozenset({"to_address", "context", "recipient_id", "locale", "last_error"}),
        other=frozenset(
            {
                "advocate_id",
                "cause_key",
                "id",
                "program_id",
                "recipient_kind",
                "status",
                "skipped_reason",
                "suppressed_reason",
                "template",
                "tenant_id",
            }
        ),
        match="t.tenant_id = s.tenant AND (t.recipient_id = ANY(s.customers || s.advocates)"
        f" OR lower(t.to_address) = ANY(s.emails) OR t.recipient_id IN ({_INVITEE_IDS})"
        " OR t.advocate_id = ANY(s.advocates))",
        erase={
            # a mail to someone else about the person (an advocate named to a friend) keeps
            # its recipient; its rendered facts go
            "to_address": f"CASE WHEN {_TO_THEM} THEN NULL ELSE t.to_address END",
            "context": "'{}'::jsonb",
            "recipient_id": f"CASE WHEN t.recipient_id = ANY(s.customers)"
            f" OR t.recipient_id IN ({_INVITEE_IDS}) THEN {pseudo('recipient_id')}"
            " ELSE t.recipient_id END",
            "locale": "NULL",
            "last_error": "NULL",
            "status": "CASE WHEN t.status = 'queued' THEN 'suppressed' ELSE t.status END",
            "suppressed_reason": "CASE WHEN t.status = 'queued' THEN 'erased'"
            " ELSE t.suppressed_reason END",
            "next_attempt_at": "CASE WHEN t.status = 'queued' THEN NULL ELSE t.next_attempt_at END",
        },
        note="mails to the person and mails about them (an advocate named to friends): the "
        "address and the rendered facts go, the row stays as a count; unsent ones are suppressed",
    ),
    PersonalTable(
        "email_contacts",
        personal=frozenset({"contact_id", "email", "name", "locale", "code", "link_url"}),
        other=frozenset({"kind", "program_id", "tenant_id"}),
        match="t.tenant_id = s.tenant AND (t.contact_id = ANY(s.customers || s.advocates)"
        " OR lower(t.email) = ANY(s.emails))",
        erase=None,
    ),
    PersonalTable(
        "email_suppressions",
        personal=frozenset({"address", "detail"}),
        other=frozenset({"reason", "tenant_id"}),
        match="t.tenant_id = s.tenant AND lower(t.address) = ANY(s.emails)",
        erase=None,
    ),
    PersonalTable(
        "email_programs",
        personal=frozenset(),
        other=frozenset({"default_locale", "name", "program_id", "tenant_id"}),
    ),
    PersonalTable(
        "email_templates",
        personal=frozenset(),
        other=frozenset(
            {"html", "locale", "program_id", "subject", "template", "tenant_id", "text_body"}
        ),
        note="the merchant's templates",
    ),
    PersonalTable(
        "webhook_deliveries",
        personal=frozenset(),
        other=frozenset({"endpoint_id", "id", "last_error", "message_id", "status", "tenant_id"}),
    ),
    PersonalTable(
        "webhook_endpoint_secrets", personal=frozenset(), other=frozenset({"endpoint_id", "secret"})
    ),
    PersonalTable(
        "webhook_endpoints",
        personal=frozenset(),
        other=frozenset(
            {"description", "disabled_reason", "event_types", "id", "tenant_id", "url"}
        ),
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
