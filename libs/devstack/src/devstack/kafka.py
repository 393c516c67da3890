"""A single-node Apache Kafka broker (KRaft) from Maven Central's jars; no Docker needed. Plaintext
by default; with `scram_users` a SASL_PLAINTEXT SCRAM-SHA-512 listener and the StandardAuthorizer,
as production runs it (docs/security.md), for the tests that ask for it."""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from devstack.paths import cache_dir, free_port
from referral_events.kafka import KafkaSecurity, make_admin
from referral_events.topics import Acl

KAFKA_VERSION = "4.1.1"
SLF4J_VERSION = "1.7.36"

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>referral.devstack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def ensure_jars() -> Path:
    """Kafka's jars, fetched once with Maven into the cache and reused by every run."""
    home = cache_dir() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs download once
        if (home / ".complete").exists():
            return libs
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch Kafka's jars")
        (home / "pom.xml").write_text(POM)
        staging = home / "libs.staging"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(home / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
            ],
            check=True,
        )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (home / ".complete").touch()
    return libs


class KafkaBroker:
    """One broker+controller process on loopback ports, its data in `data_dir`.

    With `scram_users` (name -> password) the client listener is SASL_PLAINTEXT with
    SCRAM-SHA-512 only, the users are created at format time (StorageTool --add-scram), ACLs are
    enforced by KRaft's StandardAuthorizer and only the super users bypass them: `ADMIN` (also
    the inter-broker principal; give it a password in `scram_users`) and ANONYMOUS, the
    principal of the controller listener, which is plaintext on loopback and answers
    controller requests only."""

    ADMIN = "admin"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        heap: str = "768m",
        scram_users: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.scram_users = dict(scram_users or {})
        if self.scram_users and self.ADMIN not in self.scram_users:
            raise ValueError(f"scram_users needs a password for the super user {self.ADMIN!r}")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def security(self, user: str | None = None, password: str | None = None) -> KafkaSecurity:
        """How a client connects: plaintext, or as `user` (default: the admin) over SCRAM."""
        if not self.scram_users:
            return KafkaSecurity()
        user = user or self.ADMIN
        return KafkaSecurity(
            "SASL_PLAINTEXT",
            "SCRAM-SHA-512",
            user,
            password if password is not None else self.scram_users[user],
        )

    def _listener_properties(self) -> list[str]:
        controller = f"CONTROLLER://127.0.0.1:{self.controller_port}"
        if not self.scram_users:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        admin = self.scram_users[self.ADMIN]
        return [
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{self.port},{controller}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.ADMIN}" password="{admin}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{self.ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                *self._listener_properties(),
                "controller.listener.names=CONTROLLER",
                f"log.dirs={self.data_dir / 'log'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    def start(self, timeout: float = 90.0) -> None:
        libs = ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        classpath = f"{libs}/*"
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = _cluster_id()
            subprocess.run(
                [
                    "java",
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    *(
                        arg
                        for name, password in self.scram_users.items()
                        for arg in (
                            "--add-scram",
                            f"SCRAM-SHA-512=[name={name},password={password}]",
                        )
                    ),
                ],
                check=True,
                capture_output=True,
            )
        log_path = self.data_dir / "kafka.log"
        env = {**os.environ, "KAFKA_HEAP_OPTS": f"-Xmx{self.heap}"}
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    "java",
                    f"-Xmx{self.heap}",
                    "-Xms128m",
                    "-XX:+UseSerialGC",
                    f"-Dkafka.logs.dir={self.data_dir}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(props),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka exited early; see {log_path}:\n" + log_path.read_text()[-3000:]
                )
            if b"Kafka Server started" in log_path.read_bytes():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Kafka did not start within {timeout}s; see {log_path}")

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# Kafka's codes for the resource types, pattern types and operations of referral_events.topics.Acl
_RESOURCE_TYPES = {"topic": 2, "group": 3}
_PATTERN_TYPES = {"literal": 3, "prefix": 4}
_OPERATIONS = {"Read": 3, "Write": 4, "Describe": 8}
_ALLOW = 3


async def create_acls(
    bootstrap_servers: str, security: KafkaSecurity, principal: str, rules: Iterable[Acl]
) -> int:
    """Allow `principal` (e.g. "User:link-service") what `rules` say, as the super user given by
    `security`. aiokafka's admin client has no ACL call, so this sends Kafka's CreateAcls request
    (API 30) through it, one binding per request. Returns how many bindings were created."""
    admin: AIOKafkaAdminClient = make_admin(bootstrap_servers, security)
    await admin.start()
    created = 0
    try:
        for rule in rules:
            for operation in rule.operations:
                request = CreateAclsRequest(
                    _RESOURCE_TYPES[rule.resource],
                    rule.name,
                    _PATTERN_TYPES[rule.pattern],
                    principal,
                    "*",
                    _OPERATIONS[operation],
                    _ALLOW,
                )
                response = await admin._send_request(request)
                for result in response.creation_responses:
                    error_code, message = result[0], result[1]
                    if error_code:
                        raise for_code(error_code)(f"{principal} {operation} {rule}: {message}")
                created += 1
    finally:
        await admin.close()
    return created


def _cluster_id() -> str:
    """A random cluster id StorageTool accepts: one starting with '-' is read as an option
    (`-t -abc…` fails the format), so, like Kafka's own Uuid.randomUuid, draw again."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
