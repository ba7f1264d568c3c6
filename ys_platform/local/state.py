"""The state folder of the local stack: where each service keeps its data, logs and PID."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "Install the missing pieces with "
    "`apt-get install -y openjdk-17-jre-headless maven postgresql`, or point at existing "
    "services (KAFKA_HOME for a Kafka install, YS_POSTGRES_DSN for a PostgreSQL server), or run "
    "the full stack with deployments/docker-compose.yml."
)


class LocalStackError(RuntimeError):
    """A local service cannot be started, stopped or found; the message says what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the local stack as `status` sees it."""

    name: str
    endpoint: str
    state: str
    """"running", "stopped" or "external" (a server the stack does not manage)."""
    healthy: bool
    pid: int | None = None
    rss_bytes: int | None = None
    """Resident memory of the service's processes (proportional share where readable)."""
    detail: str = ""
    metrics: str = ""
    """The service's Prometheus endpoint (its JMX exporter) while it answers there, else ""."""


@dataclass(frozen=True)
class Layout:
    """Paths under the state folder; creating them is the caller's job."""

    home: Path

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def kafka(self) -> Path:
        return self.home / "kafka"

    @property
    def kafka_cluster_file(self) -> Path:
        return self.kafka / "cluster.json"

    def broker_dir(self, node_id: int) -> Path:
        return self.kafka / f"broker-{node_id}"

    def broker_properties(self, node_id: int) -> Path:
        return self.broker_dir(node_id) / "server.properties"

    def broker_data(self, node_id: int) -> Path:
        return self.broker_dir(node_id) / "data"

    def broker_pid(self, node_id: int) -> Path:
        return self.run / f"kafka-{node_id}.pid"

    def broker_console(self, node_id: int) -> Path:
        """The JVM's own stdout/stderr: crashes before log4j is up land here."""
        return self.logs / f"kafka-{node_id}.out"

    @property
    def connect(self) -> Path:
        """The Connect worker's folder: only its generated worker.properties (its state, the
        connector configs and offsets, lives in Kafka topics)."""
        return self.home / "connect"

    @property
    def connect_properties(self) -> Path:
        return self.connect / "worker.properties"

    @property
    def connect_pid(self) -> Path:
        return self.run / "connect.pid"

    @property
    def connect_console(self) -> Path:
        """The worker JVM's own stdout/stderr: crashes before log4j is up land here."""
        return self.logs / "connect.out"

    @property
    def prometheus_targets(self) -> Path:
        """Prometheus file_sd target lists of the stack's exporters (deployments/prometheus/)."""
        return self.home / "prometheus"

    @property
    def postgres_data(self) -> Path:
        return self.home / "postgres"

    @property
    def mode_file(self) -> Path:
        """Whether the stack in this folder is secure; fixed by its first `up`."""
        return self.home / "stack.json"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"


@dataclass(frozen=True)
class KafkaCluster:
    """What the Kafka storage was formatted with; fixed for the life of the state folder."""

    cluster_id: str
    brokers: int


def read_cluster(layout: Layout) -> KafkaCluster | None:
    try:
        data = json.loads(layout.kafka_cluster_file.read_text())
    except FileNotFoundError:
        return None
    return KafkaCluster(cluster_id=str(data["cluster_id"]), brokers=int(data["brokers"]))


def write_cluster(layout: Layout, cluster: KafkaCluster) -> None:
    layout.kafka.mkdir(parents=True, exist_ok=True)
    tmp = layout.kafka_cluster_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cluster_id": cluster.cluster_id, "brokers": cluster.brokers}))
    tmp.replace(layout.kafka_cluster_file)


def read_secure(layout: Layout) -> bool | None:
    """True for a secure stack, False for a PLAINTEXT one, None for a folder never started.

    A folder from before the mode was recorded (Kafka storage or a PostgreSQL cluster but no
    stack.json) is PLAINTEXT: nothing else existed then.
    """
    try:
        return bool(json.loads(layout.mode_file.read_text())["secure"])
    except FileNotFoundError:
        pass
    if layout.kafka_cluster_file.exists() or (layout.postgres_data / "PG_VERSION").exists():
        return False
    return None


def check_secure(layout: Layout, secure: bool) -> None:
    """Record the mode of a fresh folder; refuse to bring a folder up in the other mode."""
    recorded = read_secure(layout)
    if recorded is None:
        layout.home.mkdir(parents=True, exist_ok=True)
        tmp = layout.mode_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"secure": secure}))
        tmp.replace(layout.mode_file)
        return
    if recorded and not secure:
        raise LocalStackError(
            f"The state folder {layout.home} holds a secure stack (made by `ys-platform local up "
            "--secure`), which never comes up PLAINTEXT: run `ys-platform local up --secure` "
            "(`make dev SECURE=1`), or set YS_HOME to another folder for a plaintext stack."
        )
    if secure and not recorded:
        raise LocalStackError(
            f"The state folder {layout.home} holds a PLAINTEXT stack, whose Kafka storage and "
            "PostgreSQL have no credentials, so it cannot turn secure: set YS_HOME to another "
            f"folder for the secure stack (e.g. YS_HOME={layout.home}-secure), or remove "
            f"{layout.home} (its data is lost) and run `ys-platform local up --secure` again."
        )


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down on one state folder (two terminals, or a test run beside `make dev`)."""
    layout.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.home / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
