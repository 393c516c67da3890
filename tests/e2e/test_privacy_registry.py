"""Every text, jsonb, varchar, array and bytea column of every service's schema is marked:
personal (its `PERSONAL_DATA` registry, which export and erasure run) or not, so a new column
cannot be forgotten. docs/privacy.md is generated from those registries, the event contracts'
`PERSONAL_DATA` and the topics' retention.

Regenerate the document:
`UPDATE_PRIVACY_DOC=1 uv run --frozen pytest tests/e2e/test_privacy_registry.py -k doc`.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from attribution_service.privacy.registry import PERSONAL_DATA as ATTRIBUTION
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate
from link_service.privacy.registry import PERSONAL_DATA as LINK
from notification_service.privacy.registry import PERSONAL_DATA as NOTIFICATION
from referral_events.registry import PAYLOADS
from referral_events.topics import ALL_TOPICS, DAY_MS
from reward_service.privacy.registry import PERSONAL_DATA as REWARD
from servicekit.privacy import PersonalTable, Subject, erase, export

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"

# schema -> (service, package, registry)
SCHEMAS: dict[str, tuple[str, str, tuple[PersonalTable, ...]]] = {
    "link": ("link-service", "link_service", LINK),
    "attribution": ("attribution-service", "attribution_service", ATTRIBUTION),
    "reward": ("reward-service", "reward_service", REWARD),
    "notification": ("notification-service", "notification_service", NOTIFICATION),
}
TYPES = ("text", "jsonb", "json", "character varying", "ARRAY", "bytea")
# Topics whose events carry personal data, and why (the contracts' PERSONAL_DATA and ids).
PERSONAL_TOPICS = {
    "link.events": "advocates' e-mail, name, customer id and attributes; sightings' keyed IP and"
    " device hashes; privacy requests' identifiers",
    "link.clicks": "visitors' keyed IP hashes",
    "attribution.events": "friends' customer ids and e-mail; export parts",
    "reward.events": "friends' customer ids as holders; export parts",
    "notification.events": "friends' customer ids as mail recipients; export parts",
}


@pytest.mark.integration
async def test_every_column_is_marked_personal_or_not(namespace: Namespace) -> None:
    for schema, (_, package, _) in SCHEMAS.items():
        await migrate(namespace.database_url, schema, package)
    conn = await asyncpg.connect(namespace.database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = ANY($1) AND c.data_type = ANY($2)
              AND t.table_type = 'BASE TABLE' AND c.table_name <> 'alembic_version'
            """,
            list(SCHEMAS),
            list(TYPES),
        )
    finally:
        await conn.close()
    unmarked = []
    for r in rows:
        tables = {t.table: t for t in SCHEMAS[r["table_schema"]][2]}
        t = tables.get(r["table_name"])
        if t is None or r["column_name"] not in t.columns():
            unmarked.append(f"{r['table_schema']}.{r['table_name']}.{r['column_name']}")
    assert not unmarked, (
        "columns in no PERSONAL_DATA registry (services/<svc>/src/<pkg>/privacy/registry.py): "
        "mark each personal (and say how export and erasure reach it) or not personal: "
        + ", ".join(sorted(unmarked))
    )
    existing = {(r["table_schema"], r["table_name"], r["column_name"]) for r in rows}
    stale = [
        f"{schema}.{t.table}.{c}"
        for schema, (_, _, registry) in SCHEMAS.items()
        for t in registry
        for c in t.columns()
        if (schema, t.table, c) not in existing
    ]
    assert not stale, f"registry names columns the schema does not have: {stale}"


@pytest.mark.integration
async def test_export_and_erasure_reach_the_newer_personal_columns(namespace: Namespace) -> None:
    """Each service's registry runs (export, then erasure) on its migrated schema: the sightings'
    hashes, the advocate's attribute history and the conversions' ring hashes are exported and
    then gone; a bulk review decision about the person loses its reason."""
    for schema, (_, package, _) in SCHEMAS.items():
        await migrate(namespace.database_url, schema, package)
    subject = Subject("t1", ["cus_pat"], ["pat@example.com"], ["adv_pat"])
    seed = {
        "link": """
            INSERT INTO advocate_sightings (id, tenant_id, advocate_id, day, ip_hash, device_hash,
                                            source, seen_at)
            VALUES ('s1', 't1', 'adv_pat', current_date, 'iph', 'devh', 'portal', now());
            INSERT INTO click_days (advocate_id, day, tenant_id, program_id, human)
            VALUES ('adv_pat', current_date, 't1', 'p1', 3);
        """,
        "attribution": """
            INSERT INTO advocate_sightings (id, tenant_id, advocate_id, seen_at, source, ip_hash,
                                            device_hash)
            VALUES ('s1', 't1', 'adv_pat', now(), 'portal', 'iph', 'devh');
            INSERT INTO advocate_risk (advocate_id, tenant_id, denied) VALUES ('adv_pat', 't1', 2);
            INSERT INTO conversions (id, tenant_id, type, customer_id, occurred_at, request_hash,
                                     status, program_id, advocate_id, ip_prefix_hash,
                                     ua_network_hash, address_hash, payment_hash,
                                     email_stem_hash, email_domain_hash, country)
            VALUES ('cv1', 't1', 'purchase', 'cus_pat', now(), 'rh', 'review', 'p1', 'adv_x',
                    'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'AT');
            INSERT INTO reviews (id, tenant_id, conversion_id, program_id, advocate_id, status,
                                 reasons)
            VALUES ('rv1', 't1', 'cv1', 'p1', 'adv_x', 'denied', ARRAY['ring']);
            INSERT INTO review_audit (id, tenant_id, decision, review_ids, changed_ids, reason)
            VALUES ('ra1', 't1', 'deny', ARRAY['rv1', 'rv2'], ARRAY['rv1'], 'Pat again'),
                   ('ra2', 't1', 'deny', ARRAY['rv2'], ARRAY['rv2'], 'someone else');
        """,
        "reward": """
            INSERT INTO advocate_attribute_changes (tenant_id, advocate_id, change, program_id,
                                                    effective_at, changes)
            VALUES ('t1', 'adv_pat', 1, 'p1', now(), '{"city": "Graz"}');
        """,
    }
    hashes = (
        "ip_prefix_hash, ua_network_hash, address_hash, payment_hash, email_stem_hash,"
        " email_domain_hash, country"
    )
    for schema, sql in seed.items():
        registry = SCHEMAS[schema][2]
        conn = await asyncpg.connect(
            namespace.database_url, server_settings={"search_path": schema}
        )
        try:
            await conn.execute(sql)
            document = await export(conn, registry, subject)
            rows = await erase(conn, registry, subject)
            if schema == "link":
                assert document["advocate_sightings"][0]["ip_hash"] == "iph"
                assert document["click_days"][0]["human"] == 3
                assert rows["advocate_sightings"] == 1
                assert await conn.fetchval("SELECT count(*) FROM advocate_sightings") == 0
                assert await conn.fetchval("SELECT count(*) FROM click_days") == 1
            elif schema == "attribution":
                assert document["advocate_sightings"][0]["device_hash"] == "devh"
                assert document["advocate_risk"][0]["denied"] == 2
                assert document["conversions"][0]["address_hash"] == "h3"
                assert [r["id"] for r in document["review_audit"]] == ["ra1"]
                assert await conn.fetchval("SELECT count(*) FROM advocate_sightings") == 0
                left = await conn.fetchrow(f"SELECT {hashes} FROM conversions")  # noqa: S608
                assert left is not None and set(left.values()) == {None}
                reasons = dict(await conn.fetch("SELECT id, reason FROM review_audit"))
                assert reasons == {"ra1": "", "ra2": "someone else"}
            else:
                assert document["advocate_attribute_changes"][0]["changes"] == {"city": "Graz"}
                assert await conn.fetchval("SELECT count(*) FROM advocate_attribute_changes") == 0
        finally:
            await conn.close()


def test_registries_mark_each_column_once() -> None:
    for schema, (_, _, registry) in SCHEMAS.items():
        names = [t.table for t in registry]
        assert len(names) == len(set(names)), schema
        for t in registry:
            assert not (t.personal & t.other), f"{schema}.{t.table}: both personal and not"


def render() -> str:
    lines = [
        "# Personal data",
        "",
        "<!-- GENERATED by tests/e2e/test_privacy_registry.py from each service's",
        "privacy/registry.py (PERSONAL_DATA), the event contracts and referral_events.topics;",
        "regenerate with UPDATE_PRIVACY_DOC=1 (see the test's docstring). -->",
        "",
        "Who holds what about a person, and how an export (`POST /v1/privacy/exports`) and an",
        "erasure (`POST /v1/privacy/erasures`, link-service, scope `privacy:admin`) reach it:",
        "[design](design/privacy.md).",
        "",
        "## Columns",
        "",
        "Every text, jsonb, varchar, array and bytea column of every schema is in one of its",
        "service's registry's two sets; the test fails on a column in neither. *Erasure*:",
        "what the service does to the person's rows (`delete`, or the columns it rewrites).",
        "",
        "| schema.table | personal columns | erasure | note |",
        "| --- | --- | --- | --- |",
    ]
    for schema, (_, _, registry) in SCHEMAS.items():
        for t in sorted(registry, key=lambda t: t.table):
            if not t.personal:
                continue
            if t.rewritten_by:
                erasure = f"rewritten (`{t.rewritten_by}`)"
            elif t.match is None:
                erasure = "(not per person)"
            elif t.erase is None:
                erasure = "delete"
            elif t.erase == {}:
                erasure = "exported only"
            else:
                erasure = ", ".join(sorted(c for c in t.erase if c in t.personal))
            lines.append(
                f"| `{schema}.{t.table}` | {', '.join(f'`{c}`' for c in sorted(t.personal))} "
                f"| {erasure} | {t.note} |"
            )
    lines += [
        "",
        "Not personal (ids of things, codes, states, settings, templates): every other column,",
        "listed in the registries' `other` sets.",
        "",
        "## Events",
        "",
        "Payload fields marked `PERSONAL_DATA` in `libs/events/src/referral_events/contracts/`,",
        "besides the identifiers every consumer checks against the tombstones",
        "(`referral_events.privacy.SUBJECT_FIELDS`: customer ids, e-mails, advocate and holder",
        "ids).",
        "",
        "| event type | personal fields |",
        "| --- | --- |",
    ]
    for name, model in sorted(PAYLOADS.items()):
        if model.PERSONAL_DATA:
            fields = ", ".join(f"`{f}`" for f in sorted(model.PERSONAL_DATA))
            lines.append(f"| `{name}` | {fields} |")
    lines += [
        "",
        "## Topics",
        "",
        "An erased person's events stay in Kafka until the topic's retention drops them: that is",
        "the bound on how long erased data stays in the log. Meanwhile no consumer writes them",
        "again (tombstones). No topic is compacted: each key (an advocate, a code, a request)",
        "carries many event types that do not supersede one another, so compaction would drop",
        "events a replay needs, and would not remove an erased key's data sooner than the",
        "retention unless the producer wrote null-value tombstones per key, which these topics",
        "(keyed by advocate or code, not by person) cannot do for a friend.",
        "",
        "| topic | retention | compaction | personal data |",
        "| --- | --- | --- | --- |",
    ]
    for topic in ALL_TOPICS:
        base = topic.name.removesuffix(".dlq")
        why = PERSONAL_TOPICS.get(base)
        if why is None:
            continue
        if topic.name.endswith(".dlq"):
            why = f"as {base} (dead letters)"
        lines.append(f"| `{topic.name}` | {topic.retention_ms // DAY_MS} days | none | {why} |")
    return "\n".join(lines) + "\n"


def test_doc_is_generated_from_the_code() -> None:
    text = render()
    if os.environ.get("UPDATE_PRIVACY_DOC"):
        DOC.write_text(text)
    assert DOC.read_text() == text, (
        "docs/privacy.md is stale: regenerate it (see this test module's docstring)"
    )
