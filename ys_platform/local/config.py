"""Configuration files of the local services, as pure functions of ports, paths and counts.

Nothing here touches the disk or the network, so the exact text each service gets is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ys_platform.clients.jaas import jaas_config

LOOPBACK = "127.0.0.1"
# Host names that mean "this machine".
LOCAL_HOSTS = (LOOPBACK, "localhost")

# Controllers listen this far above their broker: 9092 -> 9192 (the layout Settings documents).
CONTROLLER_PORT_OFFSET = 100

# The seed's cluster has 3 brokers; a bigger local cluster buys nothing on one machine and the
# port layout (port .. port+brokers-1 below port+100) would start to collide beyond 100.
SUPPORTED_BROKER_COUNTS = (1, 3)


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker+controller process of the local cluster."""

    node_id: int
    broker_port: int
    controller_port: int

    @property
    def name(self) -> str:
        return f"kafka-{self.node_id}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.broker_port}"


def kafka_nodes(base_port: int, brokers: int) -> list[KafkaNode]:
    """Node i (1-based) listens on base_port+i-1 and its controller on base_port+100+i-1."""
    if brokers not in SUPPORTED_BROKER_COUNTS:
        raise ValueError(f"brokers must be one of {SUPPORTED_BROKER_COUNTS}, not {brokers}")
    return [
        KafkaNode(
            node_id=i,
            broker_port=base_port + i - 1,
            controller_port=base_port + CONTROLLER_PORT_OFFSET + i - 1,
        )
        for i in range(1, brokers + 1)
    ]


def bootstrap_servers(base_port: int, brokers: int) -> str:
    return ",".join(node.address for node in kafka_nodes(base_port, brokers))


def reaches_nodes(bootstrap: str, nodes: list[KafkaNode]) -> bool:
    """Whether every host:port of a bootstrap list is a listener of ``nodes`` on this machine."""
    listeners = {node.broker_port for node in nodes}
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if host not in LOCAL_HOSTS or not port.isdigit() or int(port) not in listeners:
            return False
    return True


def replication_factor(brokers: int) -> int:
    """Internal topics get the seed's RF 3 where there are 3 brokers, else what exists."""
    return min(3, brokers)


def min_insync_replicas(rf: int) -> int:
    """2 survives one broker loss with acks=all; on RF 1 it must be 1 or transactions fail."""
    return min(2, rf)


# --- the secure stack (`local up --secure`) -------------------------------------------------------
# Listener names of the secure stack: clients and brokers meet on BROKER (SASL_SSL), the KRaft
# quorum on CONTROLLER (SSL with client certificates: controllers cannot authenticate with SCRAM,
# whose credentials live in the metadata log they serve, KAFKA-15513).
COORDINATOR_PARTITIONS = 10
BROKER_LISTENER = "BROKER"
CONTROLLER_LISTENER = "CONTROLLER"
SCRAM_MECHANISM = "SCRAM-SHA-512"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
FILE_CONFIG_PROVIDER = "org.apache.kafka.common.config.provider.FileConfigProvider"
# The name of the config provider that reads the brokers' own credential from the secrets folder.
SECRETS_PROVIDER = "secrets"
# The key of the JAAS line in the broker's credential file.
JAAS_KEY = "sasl.jaas.config"
# A certificate's subject "CN=<name>" is the principal <name>: the brokers' TLS identity on the
# controller listener is then the same User:ys-broker as their SCRAM identity between brokers,
# and one super user entry covers both. Any other subject keeps Kafka's default (the full DN).
SSL_PRINCIPAL_RULES = "RULE:^CN=([a-z0-9._-]+)$/$1/,DEFAULT"


@dataclass(frozen=True)
class BrokerSecurity:
    """What a secure node needs: its PEM files, its own SCRAM credential's file, super users."""

    keystore: Path
    """The private key and certificate chain, one PEM file (ssl.keystore.location)."""
    truststore: Path
    """The local CA's certificate (ssl.truststore.location)."""
    credential_file: Path
    """A properties file whose sasl.jaas.config line logs the broker in to the other brokers;
    read through a FileConfigProvider so the password is in no file outside the secrets."""
    super_users: tuple[str, ...]
    """User names (without "User:") the authorizer lets do everything."""


def server_properties(
    node: KafkaNode,
    nodes: list[KafkaNode],
    log_dir: Path,
    security: BrokerSecurity | None = None,
) -> str:
    """server.properties of one KRaft node that is both broker and controller: PLAINTEXT, or
    with ``security`` SASL_SSL/SCRAM-SHA-512 for clients and brokers, mutual TLS for the quorum
    and the StandardAuthorizer denying whatever no ACL allows."""
    rf = replication_factor(len(nodes))
    isr = min_insync_replicas(rf)
    voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in nodes)
    if security is None:
        listener_lines = [
            f"listeners=PLAINTEXT://{node.address},CONTROLLER://{LOOPBACK}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{node.address}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
        ]
    else:
        listener_lines = [
            f"listeners={BROKER_LISTENER}://{node.address},"
            f"{CONTROLLER_LISTENER}://{LOOPBACK}:{node.controller_port}",
            f"advertised.listeners={BROKER_LISTENER}://{node.address}",
            f"listener.security.protocol.map={BROKER_LISTENER}:SASL_SSL,{CONTROLLER_LISTENER}:SSL",
            f"controller.listener.names={CONTROLLER_LISTENER}",
            f"inter.broker.listener.name={BROKER_LISTENER}",
        ]
    lines = [
        "# Generated by ys-platform local up; edits are overwritten on the next start.",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        # A static quorum: the voter set is fixed by the broker count, which `up` refuses to
        # change on a formatted state folder, so dynamic quorum reconfiguration buys nothing.
        f"controller.quorum.voters={voters}",
        *listener_lines,
        f"log.dirs={log_dir}",
        # Topics come from the catalog reconcile; a typo in a producer must fail, not create one.
        "auto.create.topics.enable=false",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        # Tests and the simulator start consumers right away; the 3 s default only adds latency.
        "group.initial.rebalance.delay.ms=0",
        f"offsets.topic.replication.factor={rf}",
        # The group and transaction coordinators' topics are made on first use, 50 partitions
        # each by default: a fresh local cluster's first consumer group took 5.0 s to get its
        # first record here, 2.0 s with 10 (more on three brokers at RF 3, where each partition
        # is three replicas). 10 coordinators still spread over three brokers.
        f"offsets.topic.num.partitions={COORDINATOR_PARTITIONS}",
        f"transaction.state.log.num.partitions={COORDINATOR_PARTITIONS}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
    ]
    if security is not None:
        lines += _security_lines(security)
    return "\n".join(lines) + "\n"


def _security_lines(security: BrokerSecurity) -> list[str]:
    listener = BROKER_LISTENER.lower()
    return [
        # --- SASL: SCRAM-SHA-512 only, between brokers too.
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        f"config.providers={SECRETS_PROVIDER}",
        f"config.providers.{SECRETS_PROVIDER}.class={FILE_CONFIG_PROVIDER}",
        # The provider may read the secrets folder and nothing else (KIP-993).
        f"config.providers.{SECRETS_PROVIDER}.param.allowed.paths="
        f"{security.credential_file.parent}",
        f"listener.name.{listener}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
        f"${{{SECRETS_PROVIDER}:{security.credential_file}:{JAAS_KEY}}}",
        # --- TLS: PEM files of the local CA; every connection verifies the host name.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={security.keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={security.truststore}",
        "ssl.endpoint.identification.algorithm=https",
        f"listener.name.{CONTROLLER_LISTENER.lower()}.ssl.client.auth=required",
        f"ssl.principal.mapping.rules={SSL_PRINCIPAL_RULES}",
        # --- authorization: nothing without an ACL, except the super users.
        f"authorizer.class.name={STANDARD_AUTHORIZER}",
        "allow.everyone.if.no.acl.found=false",
        "super.users=" + ";".join(f"User:{user}" for user in security.super_users),
    ]


def postgresql_conf(port: int) -> str:
    """Settings appended to the postgresql.conf that initdb writes."""
    lines = [
        "# ys-platform local stack",
        f"listen_addresses = '{LOOPBACK}'",
        f"port = {port}",
        # No unix socket: a socket path is limited to 107 bytes, which a deep state folder
        # exceeds, and every client here connects over TCP anyway.
        "unix_socket_directories = ''",
        # Debezium's pgoutput needs logical decoding, one slot and one WAL sender per connector.
        "wal_level = logical",
        "max_replication_slots = 10",
        "max_wal_senders = 10",
        # A connector that stops consuming would otherwise pin WAL until the disk fills.
        "max_slot_wal_keep_size = '2GB'",
    ]
    return "\n".join(lines) + "\n"


def pg_hba_conf(secure: bool = False) -> str:
    """Client authentication, from the loopback address only: trust, or on the secure stack
    SCRAM-SHA-256 passwords for every role, replication included.

    Trust is for the plaintext development cluster, which listens on 127.0.0.1 only and holds no
    real data; passwords would only add a secret to every developer's configuration. A shared
    machine runs the secure stack, or points YS_POSTGRES_DSN at a properly secured server.
    """
    method = "scram-sha-256" if secure else "trust"
    return (
        "# TYPE  DATABASE     USER  ADDRESS       METHOD\n"
        f"host    all          all   {LOOPBACK}/32  {method}\n"
        f"host    replication  all   {LOOPBACK}/32  {method}\n"
    )


# --- Kafka Connect -------------------------------------------------------------------------------
CONNECT_GROUP_ID = "ys-connect"
CONNECT_CONFIG_TOPIC = "ys-connect-configs"
CONNECT_OFFSET_TOPIC = "ys-connect-offsets"
CONNECT_STATUS_TOPIC = "ys-connect-status"

# Connect's default of 25 offset partitions spreads the offset writes of hundreds of source
# connectors over a production cluster. Here a handful of connectors write a few offsets a
# second; 5 partitions carry that, while 25 (x3 replicas on the 3-broker stack) would only add
# files and leader elections to every broker start. The count is fixed once the topic exists.
CONNECT_OFFSET_PARTITIONS = 5
# Connect's own default for the status topic; status updates are rarer than offsets.
CONNECT_STATUS_PARTITIONS = 5

# Offsets are flushed every second (default 60 s) so that a test which stops a connector, or a
# worker restart, replays at most a second of changes instead of a minute's.
CONNECT_OFFSET_FLUSH_INTERVAL_MS = 1000

# Connector files may read secrets from the worker's environment as ${env:NAME}, but only names
# with this prefix: any connector config submitted over REST could otherwise read every variable
# of the worker (cloud credentials, tokens) back through a connector's config or error message.
CONNECT_ENV_ALLOWLIST = "^YS_CONNECT_.*"


# The secure worker's Kafka password: an environment variable of the worker, read by its env
# config provider into the JAAS lines below (so the properties file holds no secret).
CONNECT_PASSWORD_VARIABLE = "YS_CONNECT_KAFKA_PASSWORD"
# The worker's own clients and those it makes for connectors: the same settings, prefixed.
CONNECT_CLIENT_PREFIXES = ("", "producer.", "consumer.", "admin.")


@dataclass(frozen=True)
class ConnectSecurity:
    """The secure worker's principal and the CA its clients trust."""

    username: str
    truststore: Path
    credentials_dir: Path
    """The folder of ``<principal>.env`` files the worker's file provider may read."""


def connect_worker_properties(
    *,
    bootstrap: str,
    port: int,
    brokers: int,
    plugin_path: Path,
    security: ConnectSecurity | None = None,
) -> str:
    """worker.properties of the local Connect worker, a one-worker distributed cluster; with
    ``security``, its clients (and its connectors' by default) on SASL_SSL as its principal."""
    rf = replication_factor(brokers)
    json_converter = "org.apache.kafka.connect.json.JsonConverter"
    lines = [
        "# Generated by ys-platform local up; edits are overwritten on the next start.",
        f"bootstrap.servers={bootstrap}",
        f"group.id={CONNECT_GROUP_ID}",
        # Distributed mode keeps connector configs, source offsets and statuses in Kafka: the
        # worker itself is stateless, and `down`/`up` or a crash loses nothing.
        f"config.storage.topic={CONNECT_CONFIG_TOPIC}",
        f"offset.storage.topic={CONNECT_OFFSET_TOPIC}",
        f"status.storage.topic={CONNECT_STATUS_TOPIC}",
        # Connect creates the three topics compacted (the config topic with its one required
        # partition); their replication follows the brokers: RF 3 on 3 brokers, as in the seed.
        f"config.storage.replication.factor={rf}",
        f"offset.storage.replication.factor={rf}",
        f"status.storage.replication.factor={rf}",
        f"offset.storage.partitions={CONNECT_OFFSET_PARTITIONS}",
        f"status.storage.partitions={CONNECT_STATUS_PARTITIONS}",
        f"offset.flush.interval.ms={CONNECT_OFFSET_FLUSH_INTERVAL_MS}",
        # The catalog's payloads are plain JSON. Without schemas.enable=false every record would
        # carry a {"schema": ..., "payload": ...} envelope; for keys the envelope would also make
        # the same primary key serialise differently after a schema change, which breaks
        # compaction and partitioning by key.
        f"key.converter={json_converter}",
        "key.converter.schemas.enable=false",
        f"value.converter={json_converter}",
        "value.converter.schemas.enable=false",
        # One directory per plugin below this path, each loaded in its own class loader.
        f"plugin.path={plugin_path}",
        # Every plugin here (Kafka's and Debezium's) lists itself in META-INF/services, so the
        # default (hybrid_warn) reflective scan of every jar finds nothing more; measured here it
        # doubles the start (16-21 s, not 7-9 s) and leaves 400-600 MiB resident, not ~170 MiB.
        "plugin.discovery=service_load",
        f"listeners=http://{LOOPBACK}:{port}",
        f"rest.advertised.host.name={LOOPBACK}",
        f"rest.advertised.port={port}",
        # One worker: nobody can return to take back a departed worker's connectors, so the
        # default 5-minute wait before reassigning them would only delay connectors after a
        # crash and restart.
        "scheduled.rebalance.max.delay.ms=0",
        f"config.providers={'env,file' if security else 'env'}",
        "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        f"config.providers.env.param.allowlist.pattern={CONNECT_ENV_ALLOWLIST}",
    ]
    if security is not None:
        lines += _connect_security_lines(security)
    return "\n".join(lines) + "\n"


def _connect_security_lines(security: ConnectSecurity) -> list[str]:
    jaas = jaas_config(SCRAM_MECHANISM, security.username, f"${{env:{CONNECT_PASSWORD_VARIABLE}}}")
    client = [
        "security.protocol=SASL_SSL",
        f"sasl.mechanism={SCRAM_MECHANISM}",
        f"sasl.jaas.config={jaas}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={security.truststore}",
        "ssl.endpoint.identification.algorithm=https",
    ]
    return [
        # A connector's clients log in as the connector's own principal, their password a
        # ${file:<credentials_dir>/<principal>.env:YS_KAFKA_SASL_PASSWORD} reference
        # (connectors.for_cluster) read when a task starts: a connector added later needs no
        # worker restart, and the provider reads nothing outside the credentials folder.
        f"config.providers.file.class={FILE_CONFIG_PROVIDER}",
        f"config.providers.file.param.allowed.paths={security.credentials_dir}",
        # The worker (group membership, internal topics) and, unless a connector overrides
        # them, the producers, consumers and admin clients of its connectors.
        *(prefix + line for prefix in CONNECT_CLIENT_PREFIXES for line in client),
        # A connector may bring its own principal (producer.override.sasl.jaas.config, ...):
        # the Principal policy allows exactly the SASL settings and nothing else.
        "connector.client.config.override.policy=Principal",
    ]
