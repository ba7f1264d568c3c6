"""Prometheus' JMX exporter agent on the local brokers and the Connect worker.

Each JVM loads ``io.prometheus.jmx:jmx_prometheus_javaagent`` (resolved by Maven from
deployments/local/jmx-exporter-pom.xml, like the Kafka jars) with a rules file that names the
metrics as ys_platform.monitoring.names lists them, and serves them on a loopback port:
broker i on YS_LOCAL_JMX_EXPORTER_PORT+i-1 (the seed's 9101..9103) and Connect on that port+9.
"""

from __future__ import annotations

import json
from pathlib import Path

from ys_platform.local import maven, procs
from ys_platform.local.config import LOOPBACK
from ys_platform.local.state import LocalStackError
from ys_platform.package_files import LOCAL_DEPLOYMENT_DIR

POM = LOCAL_DEPLOYMENT_DIR / "jmx-exporter-pom.xml"
KAFKA_RULES = LOCAL_DEPLOYMENT_DIR / "jmx-exporter-kafka.yml"
CONNECT_RULES = LOCAL_DEPLOYMENT_DIR / "jmx-exporter-connect.yml"

VERSION = "1.0.1"

# Brokers take base..base+2 (at most 3, config.SUPPORTED_BROKER_COUNTS); Connect sits clear of
# them at 9110, below the workers' 9400.. (ys_platform.monitoring.names).
CONNECT_PORT_OFFSET = 9


def broker_port(base_port: int, node_id: int) -> int:
    """The exporter port of broker node_id (1-based): base_port+node_id-1."""
    return base_port + node_id - 1


def connect_port(base_port: int) -> int:
    return base_port + CONNECT_PORT_OFFSET


def metrics_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}/metrics"


def serving_url(port: int) -> str:
    """metrics_url(port) while something listens there, else "" (a JVM started without it)."""
    return metrics_url(port) if procs.port_open(port) else ""


def check_port_free(port: int, label: str) -> None:
    """Refuse to start a JVM whose agent could not bind: the JVM would abort at once."""
    if procs.port_open(port):
        raise LocalStackError(
            f"{label}: the JMX exporter's port 127.0.0.1:{port} is already in use by another "
            "process. Stop it, or set YS_LOCAL_JMX_EXPORTER_PORT (brokers use port..port+2, "
            f"Connect port+{CONNECT_PORT_OFFSET})."
        )


def agent_option(agent_jar: str, port: int, rules: Path) -> str:
    """The JVM option that loads the agent, serving on loopback only (the agent's default host
    is every interface)."""
    return f"-javaagent:{agent_jar}={LOOPBACK}:{port}:{rules}"


def agent_jar() -> str:
    """The agent jar's path in ~/.m2, resolved by Maven once per pom content."""
    return maven.classpath(POM, "jmx-exporter-classpath", f"the JMX exporter agent {VERSION}")


def scrape_targets(
    base_port: int, brokers: int, connect: bool
) -> dict[str, list[dict[str, object]]]:
    """Prometheus file_sd lists, by file name, of the exporters a stack runs.

    deployments/prometheus/prometheus.yml reads kafka.json (job kafka, one entry per broker with
    its node id as the broker label) and kafka-connect.json (empty without a running worker), so
    only the brokers that exist are scraped and can be reported down.
    """
    kafka = [
        {
            "targets": [f"{LOOPBACK}:{broker_port(base_port, node_id)}"],
            "labels": {"broker": str(node_id)},
        }
        for node_id in range(1, brokers + 1)
    ]
    worker = [{"targets": [f"{LOOPBACK}:{connect_port(base_port)}"]}] if connect else []
    return {"kafka.json": kafka, "kafka-connect.json": worker}


def write_scrape_targets(folder: Path, targets: dict[str, list[dict[str, object]]]) -> None:
    """Write each list atomically: Prometheus re-reads a file_sd file whenever it changes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, entries in targets.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        tmp.replace(folder / name)
