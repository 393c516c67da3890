"""Producer/consumer factories with the settings the guarantees rely on, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    OutOfOrderSequenceNumber,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from referral_events.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]


@dataclass(frozen=True)
class KafkaSecurity:
    """How every client of a service authenticates to the brokers (docs/security.md): PLAINTEXT
    (devstack, tests), SASL/SCRAM over plaintext or TLS, or TLS with a client certificate (mTLS).
    The one place that turns these settings into aiokafka arguments."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol.startswith("SASL_") and not (self.username and self.password):
            raise ValueError(f"{self.protocol} needs a SASL username and password")
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("a TLS client certificate needs its key (and the key its certificate)")

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of AIOKafkaProducer/Consumer/AdminClient for this security."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.cafile, certfile=self.certfile, keyfile=self.keyfile
            )
        if self.protocol.startswith("SASL_"):
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return kwargs


PLAINTEXT = KafkaSecurity()


class KafkaCredentialsRefused(RuntimeError):
    """The brokers refused who we said we are (wrong user or password, mechanism not enabled,
    untrusted broker certificate): retrying cannot help, unlike a broker that is not up yet."""


async def check_credentials(
    bootstrap_servers: str, security: KafkaSecurity, *, timeout_ms: int = 10_000
) -> None:
    """Authenticate once to each bootstrap server. Raises KafkaCredentialsRefused when one
    refuses the credentials; a server that cannot be reached is skipped (the caller retries).
    aiokafka's bootstrap folds an authentication failure into "Unable to bootstrap", which a
    caller waiting for the brokers would retry for minutes: this tells the two apart."""
    if security.protocol == "PLAINTEXT":
        return
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id="credentials-check",
                request_timeout_ms=timeout_ms,
                **security.client_kwargs(),
            )
        except (
            AuthenticationFailedError,
            SaslAuthenticationFailed,
            UnsupportedSaslMechanismError,
            ssl.SSLCertVerificationError,
        ) as exc:
            how = security.sasl_mechanism if security.protocol.startswith("SASL_") else "TLS"
            raise KafkaCredentialsRefused(
                f"Kafka at {server} refused the {security.protocol} {how} credentials "
                f"of user {security.username!r}: {exc}"
            ) from exc
        except (OSError, TimeoutError) as exc:
            log.debug("credentials check: %s not reachable: %r", server, exc)
            continue
        conn.close()


def make_producer(
    bootstrap_servers: str, client_id: str, security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaProducer:
    # Idempotent + acks=all: a retried send can neither duplicate nor reorder within a partition.
    return AIOKafkaProducer(
        **security.client_kwargs(),
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        request_timeout_ms=30_000,
    )


class RenewableProducer:
    """An idempotent producer that starts over when its idempotent state breaks: after a long
    broker outage the broker can refuse a batch's sequence number (OutOfOrderSequenceNumber),
    aiokafka does not reset the sequence, and every later send is refused the same way. The
    send that met it is made again once on a new producer (a new producer id, sequences from
    0); concurrent senders share one renewal. The dead letters' (InboxConsumer: rare sends that
    must not fail for good on a producer that broke meanwhile) and the outbox relay's, which
    renews between batches and publishes the unmarked rows again (OutboxRelay.run)."""

    def __init__(
        self, producer: AIOKafkaProducer, new: Callable[[], AIOKafkaProducer] | None
    ) -> None:
        """`new` makes (unstarted) a replacement; None: this one is never replaced."""
        self.producer = producer
        self._new = new
        self._renewing = asyncio.Lock()
        self.renewals = 0

    @property
    def renewable(self) -> bool:
        return self._new is not None

    async def send_and_wait(self, topic: str, **kwargs: Any) -> Any:
        producer = self.producer
        try:
            return await producer.send_and_wait(topic, **kwargs)
        except OutOfOrderSequenceNumber as exc:
            if not self.renewable:
                raise
            log.warning("producer broken (%r), starting a new one", exc)
            await self.renew(producer)
            return await self.producer.send_and_wait(topic, **kwargs)

    async def renew(self, broken: AIOKafkaProducer) -> None:
        """Replace `broken` by a new started producer, unless it was replaced already; raises
        (and keeps `broken`) when the new one cannot start: the next try renews again."""
        assert self._new is not None
        async with self._renewing:
            if self.producer is not broken:
                return  # another sender renewed it meanwhile
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broken.stop(), timeout=10)
            fresh = self._new()
            try:
                await fresh.start()
            except BaseException:
                await fresh.stop()
                raise  # the broker still away: the next send tries again
            self.producer = fresh
            self.renewals += 1

    async def stop(self) -> None:
        await self.producer.stop()


def make_consumer(
    bootstrap_servers: str,
    group_id: str | None,
    topics: Iterable[str] = (),
    security: KafkaSecurity = PLAINTEXT,
    **overrides: Any,
) -> AIOKafkaConsumer:
    # Offsets are committed by hand after the inbox transaction, never automatically.
    # `overrides` for readers outside a group (client_id, ...).
    options: dict[str, Any] = {
        "group_id": group_id,
        "client_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 500,
    }
    return AIOKafkaConsumer(
        *topics,
        **security.client_kwargs(),
        bootstrap_servers=bootstrap_servers,
        **(options | overrides),
    )


def make_admin(bootstrap_servers: str, security: KafkaSecurity = PLAINTEXT) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security.client_kwargs())


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic] = ALL_TOPICS,
    *,
    prefix: str = "",
    replication_factor: int = 1,
    partitions: int | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create missing topics; existing ones are left as they are (partitions are ops' call)."""
    admin = make_admin(bootstrap_servers, security)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=prefix + t.name,
                num_partitions=partitions or t.partitions,
                replication_factor=replication_factor,
                topic_configs={"retention.ms": str(t.retention_ms)},
            )
            for t in topics
            if prefix + t.name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by another service")
    finally:
        await admin.close()
