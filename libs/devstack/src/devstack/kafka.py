"""A single-node Apache Kafka broker (KRaft) from Maven Central's jars; no Docker needed."""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from devstack.paths import cache_dir, free_port

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
    """One broker+controller process on loopback ports, its data in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, heap: str = "768m") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
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
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
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
