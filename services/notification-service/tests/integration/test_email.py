"""Email end to end inside one process, on real Kafka and Postgres, through a real SMTP server
(aiosmtpd) on loopback whose received messages are parsed: the events link-, attribution- and
reward-service publish go to their topics, the service copies contacts, queues mail and sends
it; the test reads what arrived."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI

from devstack.paths import free_port
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, migrate, new_api_key, read_topic, serve_in_process
from notification_service.config import Settings
from notification_service.main import create_app
from referral_events import CloudEvent, new_event
from referral_events.contracts import attribution, link, reward
from referral_events.envelope import EventPayload

pytestmark = pytest.mark.integration


# --- an SMTP server on loopback -----------------------------------------------------------------


@dataclass
class Mailbox:
    """aiosmtpd handler: keeps every accepted message; refuses `bouncing` recipients with 550
    (a hard bounce) at RCPT."""

    messages: list[EmailMessage] = field(default_factory=list)
    bouncing: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.bouncing:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@contextmanager
def smtp_server(mailbox: Mailbox) -> Iterator[int]:
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


# --- the service --------------------------------------------------------------------------------


class SteppedClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Env:
    ns: Namespace
    key: str
    settings: Settings
    clock: SteppedClock
    producer: AIOKafkaProducer

    @asynccontextmanager
    async def service(self) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        app = create_app(self.settings, clock=self.clock)
        async with serve_in_process(app, self.key) as client:
            yield client, app

    async def publish(
        self, topic: str, payload: EventPayload, key: str, age: timedelta = timedelta(0)
    ) -> CloudEvent:
        event = new_event(
            payload,
            source="/services/test",
            tenant_id="acme",
            subject=key,
            time=self.clock() - age,
        )
        await self.send(topic, event, key)
        return event

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        await self.producer.send_and_wait(
            self.ns.topic_prefix + topic, event.to_json(), key=key.encode()
        )

    async def emails(self, client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
        r = await client.get("/v1/emails", params=params)
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["items"]
        return rows


@pytest.fixture
async def env(namespace: Namespace) -> AsyncIterator[tuple[Env, Mailbox]]:
    await migrate(namespace.database_url, "notification", "notification_service")
    key, entry = new_api_key("acme")
    mailbox = Mailbox(bouncing={"gone@example.com"})
    with smtp_server(mailbox) as port:
        settings = Settings(
            **namespace.settings_env(),
            api_keys=[entry],
            webhook_allow_http=True,
            webhook_allow_private_networks=True,
            webhook_poll_interval_seconds=0.1,
            outbox_poll_interval_seconds=0.2,
            smtp_host="127.0.0.1",
            smtp_port=port,
            email_from="Acme Rewards <rewards@acme.example>",
            public_base_url="http://testserver",
            email_unsubscribe_key="test-unsubscribe-key-0123456789",
            email_poll_interval_seconds=0.1,
            email_retry_schedule_seconds=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            invite_limit_per_day=3,
        )
        producer = AIOKafkaProducer(bootstrap_servers=namespace.kafka_bootstrap_servers)
        await producer.start()
        try:
            yield Env(namespace, key, settings, SteppedClock(), producer), mailbox
        finally:
            await producer.stop()


PROGRAM = link.ProgramCreated(
    program_id="prg_1",
    name="Acme Rewards",
    status="active",
    landing_url="https://acme.example/",
    allowed_domains=["acme.example"],
    default_locale="en",
)


def advocate(
    advocate_id: str, email: str, locale: str | None, link_url: str | None, name: str = "Jane"
) -> link.AdvocateEnrolled:
    return link.AdvocateEnrolled(
        advocate_id=advocate_id,
        program_id="prg_1",
        customer_id=f"cus_{advocate_id}",
        email=email,
        name=name,
        locale=locale,
        marketing_consent=False,
        code="JANE20" if link_url else None,
        link_url=link_url,
    )


def reward_event(
    cls: type[reward.RewardPending] | type[reward.RewardAvailable],
    reward_id: str,
    *,
    role: str = "advocate",
    holder: str = "adv_1",
    amount: int = 2000,
) -> EventPayload:
    extra = (
        {"available_at": datetime(2026, 12, 24, tzinfo=UTC)} if cls is reward.RewardPending else {}
    )
    return cls(
        reward_id=reward_id,
        program_id="prg_1",
        advocate_id="adv_1",
        holder_id=holder,
        role=role,  # type: ignore[arg-type]
        conversion_id="cnv_1",
        kind="cash",
        amount=amount,
        unit="USD",
        **extra,  # type: ignore[arg-type]
    )


# --- tests --------------------------------------------------------------------------------------


async def test_mails_for_advocates_and_friends(env: tuple[Env, Mailbox]) -> None:
    e, mailbox = env
    async with e.service() as (client, app):
        await e.publish("link.events", PROGRAM, "prg_1")
        # German advocate: her link is in the enrollment
        await e.publish(
            "link.events",
            advocate("adv_1", "Jane@Example.com", "de-DE", "https://go.acme.example/r/JANE20"),
            "adv_1",
        )
        # French advocate (no French wording: the program default, English); the link comes
        # with the code event
        await e.publish(
            "link.events", advocate("adv_2", "pierre@example.com", "fr", None, "Pierre"), "adv_2"
        )
        await e.publish(
            "link.events",
            link.CodeCreated(
                code="PIERRE7",
                advocate_id="adv_2",
                program_id="prg_1",
                link_url="https://go.acme.example/r/PIERRE7",
            ),
            "adv_2",
        )
        await eventually(lambda: len(mailbox.messages) == 2, timeout=60)
        [jane] = mailbox.to("jane@example.com")
        assert jane["Subject"] == "Willkommen bei Acme Rewards: Ihr Empfehlungslink"
        assert jane["From"] == "Acme Rewards <rewards@acme.example>"
        assert jane["Content-Language"] == "de"
        assert "https://go.acme.example/r/JANE20" in text_of(jane)
        assert 'href="https://go.acme.example/r/JANE20"' in html_of(jane)
        assert jane["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        [pierre] = mailbox.to("pierre@example.com")
        assert pierre["Subject"] == "Welcome to Acme Rewards: your referral link"
        assert "Hi Pierre" in text_of(pierre) and "PIERRE7" in text_of(pierre)

        # the same advocate again (a newer state, a vanity code): the welcome is keyed on the
        # advocate, so these new events, which the inbox does not dedupe, queue nothing more
        state = advocate("adv_1", "jane@example.com", "de", "https://go.acme.example/r/JANE")
        await e.publish(
            "link.events",
            link.AdvocateUpdated(**{**state.model_dump(), "version": 2}),
            "adv_1",
        )
        await e.publish(
            "link.events",
            link.CodeChanged(
                code="JANE",
                previous_code="JANE20",
                advocate_id="adv_1",
                program_id="prg_1",
                link_url="https://go.acme.example/r/JANE",
            ),
            "adv_1",
        )

        # the program's own German wording of the reward mail
        r = await client.put(
            "/v1/programs/prg_1/email-templates/advocate_reward_available/de",
            json={
                "subject": "Prämie da: {{ reward.amount }}",
                "html": "<p>{{ recipient.name }}: {{ reward.amount }}</p>",
                "text": "{{ recipient.name }}: {{ reward.amount }}\n{{ unsubscribe_url }}",
            },
        )
        assert r.status_code == 200, r.text

        # the same event delivered twice, and a pending reward: two mails, not three
        available = await e.publish(
            "reward.events", reward_event(reward.RewardAvailable, "rwd_1"), "adv_1"
        )
        await e.send("reward.events", available, "adv_1")
        await e.publish("reward.events", reward_event(reward.RewardPending, "rwd_2"), "adv_1")
        await eventually(lambda: len(mailbox.to("jane@example.com")) == 3, timeout=60)
        welcomes = await e.emails(client, recipient_kind="advocate", recipient_id="adv_1")
        assert [w["template"] for w in welcomes].count("advocate_welcome") == 1
        consumer = app.state.runtime.consumers[0]
        await eventually(lambda: consumer.duplicates >= 1)
        await asyncio.sleep(1.0)
        subjects = sorted(m["Subject"] for m in mailbox.to("jane@example.com"))
        assert subjects == [
            "Prämie da: 20.00 USD",
            "Sie haben 20.00 USD bei Acme Rewards verdient",
            "Willkommen bei Acme Rewards: Ihr Empfehlungslink",
        ]
        pending = next(m for m in mailbox.to("jane@example.com") if "verdient" in m["Subject"])
        assert "2026-12-24" in text_of(pending)

        # a friend: the reward event is handled before the friend's address is known (another
        # topic); the mail waits for it rather than being lost
        await e.publish(
            "reward.events",
            reward_event(reward.RewardAvailable, "rwd_f", role="friend", holder="cus_sam"),
            "adv_1",
        )
        await asyncio.sleep(1.0)
        [waiting] = await e.emails(client, recipient_kind="friend")
        assert waiting["status"] == "queued" and waiting["last_error"] == (
            "no address known for the recipient"
        )
        await e.publish(
            "attribution.events",
            attribution.ReferralAttributed(
                referral_id="ref_1",
                program_id="prg_1",
                advocate_id="adv_1",
                friend_customer_id="cus_sam",
                conversion_id="cnv_0",
                evidence="code",
                attributed_at=e.clock(),
                friend_email="sam@example.com",
                friend_locale="de",
            ),
            "adv_1",
        )
        await e.publish(
            "reward.events",
            reward.CouponAllocated(
                coupon_code="FRIEND-7QX2",
                pool_id="pool_1",
                reward_id="rwd_c",
                program_id="prg_1",
                advocate_id="adv_1",
                holder_id="cus_sam",
                conversion_id="cnv_1",
            ),
            "adv_1",
        )
        await e.publish(
            "reward.events",
            reward.MilestoneReached(
                program_id="prg_1",
                advocate_id="adv_1",
                holder_id="adv_1",
                referral_count=10,
                milestone=10,
                amount=5000,
                unit="USD",
            ),
            "adv_1",
        )
        await eventually(lambda: len(mailbox.to("sam@example.com")) == 2, timeout=60)
        sam = {m["Subject"]: m for m in mailbox.to("sam@example.com")}
        assert set(sam) == {
            "Ihre Willkommensprämie von Acme Rewards",
            "Ihr Gutschein von Acme Rewards",
        }
        assert "FRIEND-7QX2" in text_of(sam["Ihr Gutschein von Acme Rewards"])
        assert "Dank Jane" in text_of(sam["Ihre Willkommensprämie von Acme Rewards"])
        await eventually(lambda: len(mailbox.to("jane@example.com")) == 4, timeout=60)
        milestone = mailbox.to("jane@example.com")[-1]
        assert milestone["Subject"] == "10 Empfehlungen erreicht!"
        assert "50.00 USD" in text_of(milestone)

        # one-click unsubscribe from the link in the mail (RFC 8058)
        url = urlsplit(jane["List-Unsubscribe"].strip("<>"))
        assert url.path in text_of(jane) or url.path in html_of(jane)
        page = await client.get(url.path)
        assert page.status_code == 200 and 'method="post"' in page.text
        assert (await client.get("/v1/email-suppressions")).json()["items"] == []  # GET only asks
        done = await client.post(
            url.path,
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded", "Authorization": ""},
        )
        assert done.status_code == 200 and "Acme Rewards" in done.text
        forged = await client.post(url.path[:-3] + "AAA")
        assert forged.status_code == 404
        [suppressed] = (await client.get("/v1/email-suppressions")).json()["items"]
        assert suppressed["email"] == "jane@example.com"
        assert suppressed["reason"] == "unsubscribed"

        # a suppressed address gets nothing more, whatever the template
        before = len(mailbox.messages)
        await e.publish("reward.events", reward_event(reward.RewardAvailable, "rwd_3"), "adv_1")

        async def suppressed_row() -> dict[str, Any] | None:
            rows = await e.emails(client, recipient_kind="advocate", recipient_id="adv_1")
            return next((r for r in rows if r["status"] == "suppressed"), None)

        row = await eventually(suppressed_row, timeout=60)
        assert row["suppressed_reason"] == "unsubscribed"
        await asyncio.sleep(1.0)
        assert len(mailbox.messages) == before

        records = await read_topic(
            e.ns.kafka_bootstrap_servers,
            e.ns.topic_prefix + "notification.events",
            lambda rs: any(b"email.suppressed.v1" in r.value for r in rs),
        )
        types = [json.loads(r.value)["type"] for r in records]
        assert "email.sent.v1" in types and "email.suppressed.v1" in types
        for record in records:  # no addresses in events
            assert b"@example.com" not in record.value


async def test_invites_templates_and_bounces(env: tuple[Env, Mailbox]) -> None:
    e, mailbox = env
    async with e.service() as (client, _app):
        await e.publish("link.events", PROGRAM, "prg_1")
        await e.publish(
            "link.events",
            advocate("adv_1", "jane@example.com", "en", "https://go.acme.example/r/JANE20"),
            "adv_1",
        )
        await eventually(lambda: len(mailbox.to("jane@example.com")) == 1, timeout=60)
        # an event from weeks ago (a first deployment reading topics from the start) mails
        # nobody; the reward event after it does
        await e.publish(
            "reward.events",
            reward_event(reward.RewardAvailable, "rwd_old"),
            "adv_1",
            age=timedelta(days=20),
        )
        await e.publish("reward.events", reward_event(reward.RewardAvailable, "rwd_new"), "adv_1")
        await eventually(lambda: len(mailbox.to("jane@example.com")) == 2, timeout=60)
        mails = await e.emails(client, recipient_kind="advocate", recipient_id="adv_1")
        assert sorted(m["template"] for m in mails) == [
            "advocate_reward_available",
            "advocate_welcome",
        ]

        body: dict[str, Any] = {
            "advocate_id": "adv_1",
            "emails": ["amy@example.com", "AMY@example.com ", "bob@example.com"],
            "message": "<script>alert(1)</script> try it!",
            "consent": True,
        }
        r = await client.post("/v1/invites", json={**body, "consent": False})
        assert r.status_code == 422 and r.json()["field"] == "/consent"
        r = await client.post("/v1/invites", json={**body, "emails": ["nope"]})
        assert r.status_code == 422 and r.json()["field"] == "/emails/0"
        r = await client.post("/v1/invites", json={**body, "advocate_id": "adv_x"})
        assert r.status_code == 404

        r = await client.post("/v1/invites", json=body)
        assert r.status_code == 202, r.text
        assert [(x["email"], x["status"]) for x in r.json()["data"]] == [
            ("amy@example.com", "queued"),
            ("bob@example.com", "queued"),
        ]
        await eventually(lambda: len(mailbox.to("bob@example.com")) == 1, timeout=60)
        [amy] = mailbox.to("amy@example.com")
        assert amy["Subject"] == "Jane invites you to Acme Rewards"
        assert "&lt;script&gt;alert(1)&lt;/script&gt; try it!" in html_of(amy)
        assert "<script>" not in html_of(amy)
        assert "https://go.acme.example/r/JANE20" in text_of(amy)

        # de-duplicated per (advocate, address); the advocate's own address is refused;
        # a suppressed address is not mailed
        r = await client.post(
            "/v1/email-suppressions", json={"email": "Carl@example.com", "reason": "complained"}
        )
        assert r.status_code == 201 and r.json()["email"] == "carl@example.com"
        r = await client.post(
            "/v1/invites",
            json={**body, "emails": ["amy@example.com", "jane@example.com", "carl@example.com"]},
        )
        assert [x["status"] for x in r.json()["data"]] == ["self", "suppressed", "duplicate"]

        # the daily limit is 3: one left, two new addresses -> 429 and nothing sent
        r = await client.post(
            "/v1/invites", json={**body, "emails": ["dan@example.com", "eve@example.com"]}
        )
        assert r.status_code == 429 and r.json()["field"] == "/emails"
        # a hard bounce (550 at RCPT) fails the mail and suppresses the address
        r = await client.post("/v1/invites", json={**body, "emails": ["gone@example.com"]})
        assert r.status_code == 202 and r.json()["data"][0]["status"] == "queued"

        async def bounced() -> list[dict[str, Any]]:
            rows = (await client.get("/v1/email-suppressions")).json()["items"]
            return [s for s in rows if s["reason"] == "bounced"]

        [bounce] = await eventually(bounced, timeout=60)
        assert bounce["email"] == "gone@example.com" and "550" in bounce["detail"]
        invites = await e.emails(client, recipient_kind="invitee")
        assert sorted(i["status"] for i in invites) == ["failed", "sent", "sent"]
        assert not mailbox.to("dan@example.com") and not mailbox.to("eve@example.com")

        # template management: bad syntax and unknown names are 422s naming the part
        r = await client.put(
            "/v1/programs/prg_1/email-templates/invite/de",
            json={"subject": "{% if %}", "html": "h", "text": "t"},
        )
        assert r.status_code == 422 and r.json()["field"] == "/subject"
        r = await client.put(
            "/v1/programs/prg_1/email-templates/invite/de",
            json={"subject": "s", "html": "{{ advocate.nmae.x }}", "text": "t"},
        )
        assert r.status_code == 422 and r.json()["field"] == "/html"
        r = await client.put(
            "/v1/programs/prg_1/email-templates/newsletter/de",
            json={"subject": "s", "html": "h", "text": "t"},
        )
        assert r.status_code == 422 and r.json()["field"] == "/template"
        r = await client.put(
            "/v1/programs/prg_1/email-templates/invite/de_at",
            json={
                "subject": "{{ advocate.name }} empfiehlt {{ program.name }}",
                "html": "<p>{{ invite.message }}</p>",
                "text": "{{ invite.message }}",
            },
        )
        assert r.status_code == 200 and r.json()["locale"] == "de-AT"
        listed = (await client.get("/v1/programs/prg_1/email-templates")).json()["items"]
        assert [(t["template"], t["locale"]) for t in listed] == [("invite", "de-AT")]
        specs = (await client.get("/v1/email-templates")).json()["data"]
        assert {s["template"]: s["category"] for s in specs}["invite"] == "marketing"

        # preview: the program's wording with sample data, a built-in, and a draft
        r = await client.post(
            "/v1/email-templates/invite/preview", json={"program_id": "prg_1", "locale": "de-AT"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["source"] == "program" and r.json()["subject"] == (
            "Jane empfiehlt Acme Rewards"
        )
        r = await client.post("/v1/email-templates/friend_coupon/preview", json={"locale": "de"})
        assert r.json()["source"] == "builtin" and "FRIEND-7QX2" in r.json()["text"]
        r = await client.post(
            "/v1/email-templates/advocate_welcome/preview",
            json={
                "subject": "Hi {{ recipient.name }}",
                "html": "<b>{{ program.name }}</b>",
                "text": "x",
            },
        )
        assert r.json()["source"] == "draft" and r.json()["subject"] == "Hi Sam"
        r = await client.delete("/v1/programs/prg_1/email-templates/invite/de-AT")
        assert r.status_code == 204
        r = await client.get("/v1/programs/prg_1/email-templates/invite/de-AT")
        assert r.status_code == 404

        r = await client.delete("/v1/email-suppressions/carl@example.com")
        assert r.status_code == 204
        r = await client.delete("/v1/email-suppressions/carl@example.com")
        assert r.status_code == 404


async def test_mail_to_a_recipient_without_an_address_is_skipped(
    env: tuple[Env, Mailbox],
) -> None:
    """Issue 17: it stayed `queued`. An advocate enrolled without an address: skipped at once;
    a friend whose copy never comes: skipped after the retry schedule. Never `failed`."""
    e, mailbox = env
    async with e.service() as (client, _app):
        await e.publish("link.events", PROGRAM, "prg_1")
        await e.publish(
            "link.events",
            link.AdvocateEnrolled(
                advocate_id="adv_1",
                program_id="prg_1",
                customer_id="cus_nomail",
                code="NOMAIL1",
                link_url="https://go.acme.example/r/NOMAIL1",
            ),
            "adv_1",
        )
        await e.publish(
            "reward.events",
            reward_event(reward.RewardAvailable, "rwd_nm", holder="adv_1"),
            "adv_1",
        )
        await e.publish(
            "reward.events",
            reward_event(reward.RewardAvailable, "rwd_nf", role="friend", holder="cus_nobody"),
            "adv_1",
        )

        async def settled(kind: str) -> dict[str, Any] | None:
            rows = await e.emails(client, recipient_kind=kind)
            return rows[0] if rows and rows[0]["status"] != "queued" else None

        advocate_mail = await eventually(lambda: settled("advocate"), timeout=60)
        assert advocate_mail["status"] == "skipped", advocate_mail
        assert advocate_mail["skipped_reason"] == "no_address"
        # at once (once its copy is here, another topic): not after the whole schedule
        assert advocate_mail["attempts"] <= 2
        friend_mail = await eventually(lambda: settled("friend"), timeout=60)
        assert friend_mail["status"] == "skipped", friend_mail
        assert friend_mail["skipped_reason"] == "no_address"
        assert friend_mail["attempts"] == len(e.settings.email_retry_schedule_seconds) + 1
        assert mailbox.messages == []


def _referred(n: str, email: str, locale: str | None, at: datetime) -> EventPayload:
    return attribution.ReferralAttributed(
        referral_id=f"ref_{n}",
        program_id="prg_1",
        advocate_id="adv_t",
        friend_customer_id=f"cus_{n}",
        conversion_id=f"cnv_{n}_0",
        evidence="code",
        attributed_at=at,
        friend_email=email,
        friend_locale=locale,
    )


def _converted(n: str, i: int, at: datetime, *, first: bool) -> EventPayload:
    return attribution.ConversionAttributed(
        conversion_id=f"cnv_{n}_{i}",
        referral_id=f"ref_{n}",
        program_id="prg_1",
        advocate_id="adv_t",
        friend_customer_id=f"cus_{n}",
        conversion_type="purchase",
        order_id=f"ord_{n}_{i}",
        amount_minor=5990,
        currency="USD",
        is_first_purchase=first,
        occurred_at=at,
        evidence="code",
    )


async def test_thank_yous_to_the_advocate_and_the_friend_by_mail_and_webhook(
    env: tuple[Env, Mailbox],
) -> None:
    """Before any reward exists: the advocate is thanked once per referral, the friend on
    their first purchase, each in their locale; a suppressed address gets no mail; the
    merchant's webhook gets `referral.thank_you.v1` for each; redelivery adds nothing."""
    from starlette.requests import Request
    from starlette.responses import Response

    from devstack.testing import http_receiver

    received: list[dict[str, Any]] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        body = await Request(scope, receive).body()
        received.append(json.loads(body))
        await Response(status_code=204)(scope, receive, send)

    e, mailbox = env
    async with http_receiver(receiver) as url, e.service() as (client, _app):
        r = await client.post(
            "/v1/webhook-endpoints", json={"url": url, "event_types": ["referral.thank_you.v1"]}
        )
        assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/email-suppressions", json={"email": "gone.friend@example.com", "reason": "manual"}
        )
        assert r.status_code in (200, 201), r.text
        now = e.clock()
        await e.publish("link.events", PROGRAM, "prg_1")
        await e.publish(
            "link.events",
            advocate("adv_t", "tina@example.com", "en", "https://go.acme.example/r/TINA", "Tina"),
            "adv_t",
        )
        await e.publish(
            "attribution.events", _referred("fred", "fred@example.com", "de", now), "adv_t"
        )
        converted = await e.publish(
            "attribution.events", _converted("fred", 1, now, first=True), "adv_t"
        )
        # a later purchase of the same friend, and the first one delivered again
        await e.publish("attribution.events", _converted("fred", 2, now, first=False), "adv_t")
        await e.send("attribution.events", converted, "adv_t")
        # a friend whose address is suppressed
        await e.publish(
            "attribution.events", _referred("gil", "gone.friend@example.com", None, now), "adv_t"
        )
        await e.publish("attribution.events", _converted("gil", 1, now, first=True), "adv_t")

        # welcome + two thank-yous to the advocate (one per referral), one to fred
        await eventually(lambda: len(mailbox.to("tina@example.com")) == 3, timeout=60)
        await eventually(lambda: len(mailbox.to("fred@example.com")) == 1, timeout=60)
        await eventually(lambda: len(received) == 4, timeout=60)
        await asyncio.sleep(1.0)
        tina = sorted(m["Subject"] for m in mailbox.to("tina@example.com"))
        assert tina == [
            "Thank you: a friend you referred just bought",
            "Thank you: a friend you referred just bought",
            "Welcome to Acme Rewards: your referral link",
        ]
        [fred] = mailbox.to("fred@example.com")
        assert fred["Subject"] == "Danke für Ihre erste Bestellung bei Acme Rewards"
        assert fred["Content-Language"] == "de"
        assert "Tina" in text_of(fred)
        assert not mailbox.to("gone.friend@example.com")

        async def gils_mail_settled() -> Any:
            # the sender settles a suppressed address when it claims the mail, in its own time
            mails = await e.emails(client, recipient_kind="friend", recipient_id="cus_gil")
            return mails if mails and mails[0]["status"] != "queued" else None

        [gil] = await eventually(gils_mail_settled, timeout=30)
        assert gil["template"] == "friend_thank_you" and gil["status"] == "suppressed"

        thanks = sorted(
            (m["data"]["recipient_kind"], m["data"]["recipient_id"], m["data"]["referral_id"])
            for m in received
        )
        assert thanks == [
            ("advocate", "adv_t", "ref_fred"),
            ("advocate", "adv_t", "ref_gil"),
            ("friend", "cus_fred", "ref_fred"),
            ("friend", "cus_gil", "ref_gil"),
        ]
        assert all(m["type"] == "referral.thank_you.v1" for m in received)


async def test_a_converted_friend_gets_their_own_link_and_reminders_go_to_consenting_advocates(
    env: tuple[Env, Mailbox],
) -> None:
    """Issue 18's viral loop by mail: a friend auto-enrolled when they converted gets their own
    new link (once, however often the event comes); the program's share reminders reach an
    advocate who consented to marketing mail, once per reminder, and not one who did not."""
    e, mailbox = env
    async with e.service() as (client, _app):
        now = e.clock()
        await e.publish("link.events", PROGRAM, "prg_1")
        friend = advocate("adv_f", "fay@example.com", "de", "https://go.acme.example/r/FAY1")
        await e.publish("link.events", friend, "adv_f")
        consenting = advocate(
            "adv_c", "carl@example.com", "en", "https://go.acme.example/r/CARL1", "Carl"
        ).model_copy(update={"marketing_consent": True})
        await e.publish("link.events", consenting, "adv_c")
        await e.publish(
            "link.events",
            advocate("adv_n", "nina@example.com", "en", "https://go.acme.example/r/NINA1", "Nina"),
            "adv_n",
        )
        converted = link.FriendConverted(
            advocate_id="adv_t",
            program_id="prg_1",
            friend_advocate_id="adv_f",
            friend_customer_id="cus_adv_f",
            friend_code="FAY1",
            friend_link_url="https://go.acme.example/r/FAY1",
            conversion_id="cnv_f1",
            conversion_type="purchase",
            converted_at=now,
        )
        sent = await e.publish("link.events", converted, "adv_t")
        await e.send("link.events", sent, "adv_t")  # delivered again
        for who, code in (("adv_c", "CARL1"), ("adv_n", "NINA1")):
            for n in (1, 2):
                await e.publish(
                    "link.events",
                    link.ShareReminderDue(
                        advocate_id=who, program_id="prg_1", reminder=n, max_reminders=2,
                        code=code, link_url=f"https://go.acme.example/r/{code}", due_at=now,
                    ),
                    who,
                )  # fmt: skip

        def subjects(address: str) -> list[str]:
            return sorted(m["Subject"] for m in mailbox.to(address))

        # the welcome, then the share prompt with the friend's own link (in German)
        await eventually(lambda: len(mailbox.to("fay@example.com")) == 2, timeout=60)
        await eventually(lambda: len(mailbox.to("carl@example.com")) == 3, timeout=60)
        await asyncio.sleep(1.0)
        prompt = next(
            m for m in mailbox.to("fay@example.com") if "Danke für Ihre Bestellung" in m["Subject"]
        )
        assert "https://go.acme.example/r/FAY1" in text_of(prompt)
        assert subjects("carl@example.com") == [
            "Welcome to Acme Rewards: your referral link",
            "Your Acme Rewards link is waiting to be shared",
            "Your Acme Rewards link is waiting to be shared",
        ]
        assert subjects("nina@example.com") == ["Welcome to Acme Rewards: your referral link"]
        nina = await e.emails(client, recipient_kind="advocate", recipient_id="adv_n")
        reminders = [m for m in nina if m["template"] == "advocate_share_reminder"]
        assert len(reminders) == 2 and all(m["status"] == "suppressed" for m in reminders)
        assert len(mailbox.to("fay@example.com")) == 2
