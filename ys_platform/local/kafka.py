"""Apache Kafka in KRaft mode: one or three combined broker+controller JVMs on loopback."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ys_platform.local import jmx_exporter, kafka_security, maven, procs
from ys_platform.local.config import (
    CONTROLLER_PORT_OFFSET,
    KafkaNode,
    bootstrap_servers,
    kafka_nodes,
    reaches_nodes,
    server_properties,
)
from ys_platform.local.state import (
    INSTALL_HINT,
    KafkaCluster,
    Layout,
    LocalStackError,
    ServiceStatus,
    read_cluster,
    read_secure,
    write_cluster,
)
from ys_platform.package_files import LOCAL_DEPLOYMENT_DIR
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata

# Package data: the repository's deployments/local/, shipped in the wheel (see package_files).
POM = LOCAL_DEPLOYMENT_DIR / "pom.xml"
LOG4J2_CONFIG = LOCAL_DEPLOYMENT_DIR / "log4j2.properties"

# Kafka 4 brokers need Java 17 or newer.
MIN_JAVA = 17

# What kafka-run-class.sh gives every JVM it starts (brokers and Connect workers alike): Kafka's
# own GC settings, for short pauses on the request path. Beside them, a JVM out of heap should
# die and show as stopped, not limp on answering nothing.
RUN_CLASS_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
# Kafka's start script gives 1 GiB; a development broker's data lives in the page cache, not the
# heap, so 512 MiB is plenty and three brokers plus PostgreSQL and Dagster fit on a laptop.
JVM_OPTIONS = ["-Xmx512m", *RUN_CLASS_OPTIONS]

# Measured on 2 cores: a node answers metadata ~3 s after its JVM starts, a 3-node quorum ~8-13 s
# (three JVMs share the CPUs and the election waits for all). 90 s absorbs a loaded CI machine
# without hiding a real hang.
START_TIMEOUT_S = 90.0

# One metadata round trip on loopback takes milliseconds; 2 s tolerates a GC pause or a busy CPU
# and keeps `status` quick when a broker is hung.
METADATA_TIMEOUT_S = 2.0

# kafka-storage format takes ~2 s (one JVM start); 60 s means it is stuck.
FORMAT_TIMEOUT_S = 60.0


def nodes(settings: Settings, brokers: int) -> list[KafkaNode]:
    return kafka_nodes(settings.local_kafka_port, brokers)


# --- finding Java and the Kafka jars -------------------------------------------------------------
def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise LocalStackError(
            f"Java {MIN_JAVA}+ is needed to run Kafka and was not found. {INSTALL_HINT}"
        )
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', output)
    if match and int(match.group(1)) < MIN_JAVA:
        raise LocalStackError(
            f"{java} is Java {match.group(1)}; Kafka 4 needs Java {MIN_JAVA}+. {INSTALL_HINT}"
        )
    return java


def classpath() -> str:
    """The broker's classpath: $KAFKA_HOME/libs if set, else the jars Maven resolves from POM."""
    return kafka_home_classpath() or _maven_classpath()


def kafka_home_classpath() -> str | None:
    """The jars of the Kafka install $KAFKA_HOME names (brokers and Connect alike); None when
    the variable is unset."""
    kafka_home = os.environ.get("KAFKA_HOME")
    if not kafka_home:
        return None
    libs = Path(kafka_home) / "libs"
    if not libs.is_dir():
        raise LocalStackError(f"KAFKA_HOME={kafka_home} has no libs/ folder of Kafka jars.")
    return str(libs / "*")


def _maven_classpath() -> str:
    return maven.classpath(POM, "kafka-classpath", "the Kafka 4.4 jars")


# --- formatting and starting ---------------------------------------------------------------------
def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, URL-safe base64 without padding (22 characters)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's Uuid.randomUuid skips ids starting with '-' so they never parse as an option.
        if not cid.startswith("-"):
            return cid


def _java_command(
    java: str, cp: str, layout: Layout, node_id: int, agents: Sequence[str] = ()
) -> list[str]:
    return [
        java,
        *JVM_OPTIONS,
        *agents,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Dys.log.file={layout.log(f'kafka-{node_id}')}",
        f"-Dkafka.logs.dir={layout.logs}",
        "-cp",
        cp,
    ]


def _format(
    java: str,
    cp: str,
    layout: Layout,
    todo: list[KafkaNode],
    cluster_id: str,
    extra: Sequence[str] = (),
) -> None:
    """Format the log dirs of the nodes in todo, all at once: each is a JVM start of ~2 s.

    ``extra``: more arguments, the secure stack's ``@file`` of SCRAM users to bootstrap.
    """
    procs.progress(
        f"kafka: formatting storage of {', '.join(n.name for n in todo)} (cluster id {cluster_id})"
    )
    running = {
        node.name: subprocess.Popen(
            [
                *_java_command(java, cp, layout, node.node_id),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(layout.broker_properties(node.node_id)),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in todo
    }
    failures = []
    for name, process in running.items():
        try:
            output, _ = process.communicate(timeout=FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if process.returncode != 0:
            failures.append(f"{name}: {output.strip()[-2000:]}")
    if failures:
        raise LocalStackError("Formatting the Kafka storage failed:\n" + "\n".join(failures))


def _is_formatted(layout: Layout, node_id: int) -> bool:
    return (layout.broker_data(node_id) / "meta.properties").exists()


def running_pid(layout: Layout, node_id: int) -> int | None:
    """The PID of our broker node_id if it runs; a stale PID file is removed."""
    return procs.owned_pid(layout.broker_pid(node_id), str(layout.broker_properties(node_id)))


def _running_nodes(layout: Layout) -> list[int]:
    return [
        int(path.stem.split("-")[1])
        for path in sorted(layout.run.glob("kafka-*.pid"))
        if running_pid(layout, int(path.stem.split("-")[1])) is not None
    ]


def _check_port_free(port: int, label: str) -> None:
    procs.check_port_free(
        port,
        label,
        main_class="kafka.Kafka",
        config_suffix="server.properties",
        others="Kafka brokers",
        remedy="YS_LOCAL_KAFKA_PORT (brokers use port..port+2, controllers "
        f"port+{CONTROLLER_PORT_OFFSET}..)",
    )


def _resolve_brokers(layout: Layout, cluster: KafkaCluster | None, brokers: int | None) -> int:
    running = _running_nodes(layout)
    wanted = brokers or (cluster.brokers if cluster else 1)
    if cluster is None or cluster.brokers == wanted:
        return wanted
    if running:
        raise LocalStackError(
            f"Kafka is running with {cluster.brokers} broker(s) in {layout.home}; run "
            f"`ys-platform local down` first to switch to {wanted}."
        )
    raise LocalStackError(
        f"The Kafka storage in {layout.kafka} was formatted for {cluster.brokers} broker(s). To "
        f"switch to {wanted}, remove {layout.kafka} (its topics are lost) or use another YS_HOME."
    )


def check_clients_reach(settings: Settings, cluster_nodes: list[KafkaNode]) -> None:
    """Refuse a stack the clients would not use: YS_KAFKA_BOOTSTRAP_SERVERS and
    YS_LOCAL_KAFKA_PORT both set, naming different brokers. (With only the port set the clients
    follow it; with only the servers set they name a cluster of their own.)"""
    bootstrap = settings.kafka_bootstrap_servers
    if (
        settings.kafka_bootstrap_given
        and settings.local_kafka_port_given
        and not reaches_nodes(bootstrap, cluster_nodes)
    ):
        local = ",".join(node.address for node in cluster_nodes)
        raise LocalStackError(
            f"YS_KAFKA_BOOTSTRAP_SERVERS={bootstrap} and YS_LOCAL_KAFKA_PORT="
            f"{settings.local_kafka_port} disagree: the local brokers would listen on {local}, "
            "but the clients would connect elsewhere. Unset YS_KAFKA_BOOTSTRAP_SERVERS (the "
            f"clients then follow YS_LOCAL_KAFKA_PORT) or set it to {local}."
        )


def up(
    settings: Settings, layout: Layout, brokers: int | None, secure: bool = False
) -> list[ServiceStatus]:
    """Start the nodes not running. ``secure``: the state folder's mode (stack.check_secure has
    refused a mismatch), SASL_SSL with the secrets of :mod:`kafka_security`."""
    cluster = read_cluster(layout)
    count = _resolve_brokers(layout, cluster, brokers)
    cluster_nodes = nodes(settings, count)
    check_clients_reach(settings, cluster_nodes)
    secured = (
        kafka_security.prepare(
            layout,
            bootstrap_servers(settings.local_kafka_port, count),
            formatted=any(_is_formatted(layout, n.node_id) for n in cluster_nodes),
        )
        if secure
        else None
    )
    if secured and secured.made:
        procs.progress(
            f"kafka: generated {', '.join(secured.made)} in {secured.security.truststore.parent}"
        )
    to_start = [n for n in cluster_nodes if running_pid(layout, n.node_id) is None]
    if to_start:
        java, cp, agent_jar = java_binary(), classpath(), jmx_exporter.agent_jar()
        if cluster is None:
            cluster = KafkaCluster(cluster_id=new_cluster_id(), brokers=count)
            write_cluster(layout, cluster)
        layout.logs.mkdir(parents=True, exist_ok=True)
        started: dict[int, subprocess.Popen[bytes]] = {}
        for node in to_start:
            _check_port_free(node.broker_port, node.name)
            _check_port_free(node.controller_port, f"{node.name} controller")
            jmx_exporter.check_port_free(_exporter_port(settings, node), node.name)
            properties = layout.broker_properties(node.node_id)
            properties.parent.mkdir(parents=True, exist_ok=True)
            properties.write_text(
                server_properties(
                    node,
                    cluster_nodes,
                    layout.broker_data(node.node_id),
                    secured.security if secured else None,
                )
            )
        unformatted = [n for n in to_start if not _is_formatted(layout, n.node_id)]
        if unformatted and secured:
            # The SCRAM users go into the metadata log at format time (the only way to have a
            # user before any broker runs); their passwords reach kafka-storage in a 0600 file.
            with kafka_security.format_arguments(layout, secured) as scram_arguments:
                _format(java, cp, layout, unformatted, cluster.cluster_id, scram_arguments)
        elif unformatted:
            _format(java, cp, layout, unformatted, cluster.cluster_id)
        for node in to_start:
            agent = jmx_exporter.agent_option(
                agent_jar, _exporter_port(settings, node), jmx_exporter.KAFKA_RULES
            )
            started[node.node_id] = _spawn(java, cp, layout, node, agent)
        try:
            # Nodes of a 3-node quorum only become ready together, so all start before any wait.
            for node in to_start:
                process = started[node.node_id]
                procs.wait_ready(
                    node.name,
                    node.address,
                    ready=lambda node=node: _lists_broker(layout, node.address, node.node_id),
                    alive=lambda process=process: process.poll() is None,
                    timeout_s=START_TIMEOUT_S,
                    log=layout.log(node.name),
                )
        except LocalStackError:
            # A half-started quorum is no use to anyone; the logs stay for reading.
            procs.stop([p.pid for p in started.values()])
            for node_id in started:
                layout.broker_pid(node_id).unlink(missing_ok=True)
            raise
    return status(settings, layout)


def _exporter_port(settings: Settings, node: KafkaNode) -> int:
    return jmx_exporter.broker_port(settings.jmx_exporter_port, node.node_id)


def _spawn(
    java: str, cp: str, layout: Layout, node: KafkaNode, agent: str
) -> subprocess.Popen[bytes]:
    return procs.spawn(
        [
            # The exporter agent only here: StorageTool's JVM would claim the same port.
            *_java_command(java, cp, layout, node.node_id, agents=[agent]),
            "kafka.Kafka",
            str(layout.broker_properties(node.node_id)),
        ],
        layout.broker_console(node.node_id),
        layout.broker_pid(node.node_id),
        cwd=layout.home,
    )


# --- health and stopping -------------------------------------------------------------------------
def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection to stderr; while polling for readiness that is
    # expected, so its log lines go to a logger without handlers.
    logger = logging.getLogger("ys_platform.local.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def client_config(layout: Layout, address: str) -> dict[str, str]:
    """How the stack's own checks reach the broker at ``address``: PLAINTEXT, or on a secure
    state folder as its administrator (secrets included: hand to a client, never print)."""
    if read_secure(layout):
        return kafka_security.admin_client_config(layout, address)
    return {"bootstrap.servers": address}


def metadata(
    address: str, timeout_s: float = METADATA_TIMEOUT_S, config: dict[str, str] | None = None
) -> ClusterMetadata:
    """Cluster metadata as seen by the broker at address; raises KafkaException when it fails.

    ``config``: the connection settings (:func:`client_config`); unset, PLAINTEXT to address.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            **(config or {"bootstrap.servers": address}),
            "logger": _quiet_logger(),
            "error_cb": lambda _error: None,
        }
    )
    return admin.list_topics(timeout=timeout_s)


def _lists_broker(layout: Layout, address: str, node_id: int) -> bool:
    from confluent_kafka import KafkaException

    if not procs.port_open(int(address.rsplit(":", 1)[1])):
        return False
    try:
        return node_id in metadata(address, config=client_config(layout, address)).brokers
    except KafkaException:
        return False


def status(settings: Settings, layout: Layout) -> list[ServiceStatus]:
    from confluent_kafka import KafkaException

    cluster = read_cluster(layout)
    result = []
    for node in nodes(settings, cluster.brokers if cluster else 1):
        pid = running_pid(layout, node.node_id)
        if pid is None:
            result.append(ServiceStatus(node.name, node.address, "stopped", healthy=False))
            continue
        try:
            md = metadata(node.address, config=client_config(layout, node.address))
            healthy = node.node_id in md.brokers
            detail = f"{len(md.brokers)} broker(s), {len(md.topics)} topic(s)"
        except KafkaException as exc:
            healthy, detail = False, f"no metadata: {exc.args[0].str()}"
        result.append(
            ServiceStatus(
                node.name,
                node.address,
                "running",
                healthy,
                pid,
                procs.memory_bytes(pid),
                detail,
                metrics=jmx_exporter.serving_url(_exporter_port(settings, node)),
            )
        )
    return result


def down(layout: Layout) -> list[str]:
    """Stop every broker this state folder started; returns the names of those stopped."""
    running = {node_id: running_pid(layout, node_id) for node_id in _running_nodes(layout)}
    pids = [pid for pid in running.values() if pid is not None]
    if pids:
        procs.progress(f"kafka: stopping {', '.join(f'kafka-{n}' for n in running)} ...")
        for pid in procs.stop(pids):
            procs.progress(f"kafka: pid {pid} ignored SIGTERM and was killed")
    for node_id in running:
        layout.broker_pid(node_id).unlink(missing_ok=True)
    return [f"kafka-{node_id}" for node_id in running]
