"""Topic names and their layout. Keys are chosen so the entity whose order matters stays on one
partition: the advocate for attribution and rewards, the code for clicks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    retention_ms: int


DAY_MS = 24 * 3600 * 1000

LINK_EVENTS = "link.events"
LINK_CLICKS = "link.clicks"
ATTRIBUTION_EVENTS = "attribution.events"
REWARD_EVENTS = "reward.events"
NOTIFICATION_EVENTS = "notification.events"

# Every topic carries personal data (docs/privacy.md, "Topics"): its retention is the stated
# bound on how long an erased person's events stay in the log; none is compacted (a key carries
# many event types that do not supersede one another).
TOPICS: tuple[Topic, ...] = (
    Topic(LINK_EVENTS, 6, 30 * DAY_MS),
    Topic(LINK_CLICKS, 12, 14 * DAY_MS),
    Topic(ATTRIBUTION_EVENTS, 12, 30 * DAY_MS),
    Topic(REWARD_EVENTS, 12, 30 * DAY_MS),
    Topic(NOTIFICATION_EVENTS, 6, 7 * DAY_MS),
)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS: tuple[Topic, ...] = TOPICS + tuple(Topic(dlq(t.name), 1, 90 * DAY_MS) for t in TOPICS)


# ---- who may do what (docs/security.md) ---------------------------------------------------------
# The one table of Kafka permissions. deploy/tools/render_kafka_users.py renders the prod overlay's
# Strimzi KafkaUsers from it (deploy/check.sh keeps them current), and the SASL test broker
# (devstack.kafka) gets the same ACLs. A consumer trusts the `tenantid` of an envelope because only
# the topic's producer below can write to that topic.


@dataclass(frozen=True)
class ClientAccess:
    """One service's Kafka user: the topics its outbox produces to, the topics its consumer groups
    (named after the service: `<service>` and `<service>.dlq-replay`) read, and topics it reads
    without a group (link-service's cache reader)."""

    service: str
    produces: tuple[str, ...]
    consumes: tuple[str, ...] = ()
    tails: tuple[str, ...] = ()

    @property
    def writes(self) -> tuple[str, ...]:
        """Its own topics and the dead-letter topics of what it consumes (its inbox writes them)."""
        return self.produces + tuple(dlq(t) for t in self.consumes)

    @property
    def reads(self) -> tuple[str, ...]:
        """What it consumes or tails, and its dead letters (replay-dlq reads them back)."""
        return tuple(
            dict.fromkeys(self.consumes + self.tails + tuple(dlq(t) for t in self.consumes))
        )


ACCESS: tuple[ClientAccess, ...] = (
    # link-service: the advocate portal's read model folds attribution and reward events; the
    # keys' last uses come from every other service's topic (api_keys.used.v1)
    # privacy feature folds every service's part of a request (notification's too)
    ClientAccess(
        "link-service",
        produces=(LINK_EVENTS, LINK_CLICKS),
        tails=(LINK_EVENTS,),
        consumes=(ATTRIBUTION_EVENTS, REWARD_EVENTS, NOTIFICATION_EVENTS),
    ),
    # attribution-service: growth analytics folds reward events (reward cost)
    ClientAccess(
        "attribution-service",
        produces=(ATTRIBUTION_EVENTS,),
        consumes=(LINK_EVENTS, LINK_CLICKS, REWARD_EVENTS),
    ),
    # reward-service: link.events for its copy of the API keys, segments and attributes
    ClientAccess(
        "reward-service", produces=(REWARD_EVENTS,), consumes=(ATTRIBUTION_EVENTS, LINK_EVENTS)
    ),
    ClientAccess(
        "notification-service",
        produces=(NOTIFICATION_EVENTS,),
        consumes=(LINK_EVENTS, ATTRIBUTION_EVENTS, REWARD_EVENTS),
    ),
)


@dataclass(frozen=True)
class Acl:
    """An allow rule in Kafka's terms: resource type (topic, group), name, pattern (literal,
    prefix) and operations (Write, Read, Describe)."""

    resource: str
    name: str
    pattern: str
    operations: tuple[str, ...]


def acls(access: ClientAccess, prefix: str = "") -> list[Acl]:
    """The allow rules of one service's user; `prefix` is KAFKA_TOPIC_PREFIX (topics and groups).
    Write implies the idempotent producer's IdempotentWrite (KIP-679); nothing may Create,
    Delete or Alter: topics are declared by operators."""
    operations: dict[str, list[str]] = {}
    for topic in access.writes:
        operations.setdefault(topic, []).extend(("Write", "Describe"))
    for topic in access.reads:
        operations.setdefault(topic, []).extend(("Read", "Describe"))
    rules = [
        Acl("topic", prefix + topic, "literal", tuple(dict.fromkeys(ops)))
        for topic, ops in operations.items()
    ]
    if access.consumes:
        rules.append(Acl("group", prefix + access.service, "prefix", ("Read",)))
    return rules


def access_of(service: str) -> ClientAccess:
    return next(a for a in ACCESS if a.service == service)
