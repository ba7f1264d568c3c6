"""The platform's SCRAM principals and their ACLs, derived from the catalog.

Pure: no client, no cluster. Every long-running component gets its own principal, allowed exactly
what the catalog says it does and nothing else (the brokers run ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``, so whatever is not granted here is denied):

- a **processor** reads its inputs, writes its outputs and its dead-letter topic, joins and
  commits its group, and runs transactions under ``<group>.`` (its replicas are
  ``<group>.<instance>``, its backfills ``<group>.backfill.<range>``);
- a **sink** reads its inputs, writes its dead-letter topic and commits its group;
- a **connector** writes the topics its routers name and its Debezium heartbeat topic; the
  **Connect worker** owns its group and its three internal topics;
- the **producers** (simulator, load generator, collectors) write the source topics: those no
  processor writes and that are not the monitor's;
- the **monitor** reads what it measures (group offsets, the groups' inputs, the CDC topics and
  heartbeats) and writes ``system.alerts`` and ``system.metrics``;
- **Dagster** reconciles topics, ACLs and SCRAM users and runs the lag and freshness checks.

The operations are the Kafka protocol's (docs "Operations and Resources on Protocols"): Produce
needs Write on the topic, the idempotent InitProducerId IdempotentWrite on the cluster, a
transactional one Write on the transactional id (FindCoordinator: Describe); Fetch needs Read on
the topic; JoinGroup/SyncGroup/Heartbeat/OffsetCommit and TxnOffsetCommit Read on the group, and a
librdkafka consumer that only assigns still looks up its group's coordinator, which needs Describe
on the group. Read and Write imply Describe: a topic gets Describe of its own only where
nothing implying it is granted, or where an API is named by it (the topic reconcile).

``namespace`` prefixes every name the platform's code prefixes (topics, groups, transactional ids)
and every principal, so a test owns a whole copy of the grants on a shared cluster. The monitor's
helper groups are never namespaced by its code, and so are not here either.

:func:`plan` compares the bindings wanted with those on the cluster, like the topic plan of
:mod:`ys_platform.streaming.topics`; :mod:`ys_platform.security.acls` applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from ys_platform.catalog.codec import topic_of_model
from ys_platform.catalog.models import SystemAlert, SystemMetric
from ys_platform.catalog.topics import ALL_TOPICS, CONSUMER_GROUPS, TOPICS, ConsumerGroupSpec
from ys_platform.connectors import ConnectorFile, heartbeat_topic, namespaced, output_topics
from ys_platform.local.config import (
    CONNECT_CONFIG_TOPIC,
    CONNECT_GROUP_ID,
    CONNECT_OFFSET_TOPIC,
    CONNECT_STATUS_TOPIC,
)
from ys_platform.monitoring.freshness import GROUP_PREFIX as FRESHNESS_GROUP_PREFIX
from ys_platform.monitoring.lag import PROBE_GROUP
from ys_platform.monitoring.record_age import GROUP_PREFIX as RECORD_AGE_GROUP_PREFIX

USER_PREFIX = "User:"
WILDCARD_PRINCIPAL = "User:*"
ANY_HOST = "*"
CLUSTER_NAME = "kafka-cluster"
"""The one name of the cluster resource (librdkafka calls its type BROKER, Kafka CLUSTER)."""
CLUSTER = ResourceType.BROKER

PRODUCER_NAME = "ys-producer"
MONITOR_NAME = "ys-monitor"
DAGSTER_NAME = "ys-dagster"
CONNECT_WORKER_NAME = CONNECT_GROUP_ID

# The monitor publishes these (ys_platform.monitoring.alerts): nobody else writes them.
MONITOR_OUTPUTS: tuple[str, ...] = (topic_of_model(SystemAlert), topic_of_model(SystemMetric))


class Role(StrEnum):
    PROCESSOR = "processor"
    SINK = "sink"
    CONNECTOR = "connector"
    CONNECT_WORKER = "connect-worker"
    PRODUCER = "producer"
    MONITOR = "monitor"
    CONTROL_PLANE = "control-plane"


@dataclass(frozen=True)
class Principal:
    """One SCRAM user of the platform and every ACL binding it is granted."""

    name: str
    """The SCRAM username (``User:<name>`` in ACLs)."""
    role: Role
    description: str
    bindings: tuple[AclBinding, ...]

    @property
    def principal(self) -> str:
        return f"{USER_PREFIX}{self.name}"


class _Grants:
    """Collects one principal's bindings in the order they are granted, without repeats."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._bindings: dict[AclBinding, None] = {}

    def topics(self, names: Iterable[str], *operations: AclOperation) -> None:
        for topic in names:
            for operation in operations:
                self._add(ResourceType.TOPIC, topic, operation)

    def group(self, group_id: str, operation: AclOperation, *, prefixed: bool = False) -> None:
        self._add(ResourceType.GROUP, group_id, operation, prefixed)

    def transactional_ids(self, prefix: str) -> None:
        # InitProducerId/AddPartitionsToTxn/EndTxn: Write; FindCoordinator: Describe.
        for operation in (AclOperation.WRITE, AclOperation.DESCRIBE):
            self._add(ResourceType.TRANSACTIONAL_ID, prefix, operation, True)

    def cluster(self, *operations: AclOperation) -> None:
        for operation in operations:
            self._add(CLUSTER, CLUSTER_NAME, operation)

    def _add(
        self, resource: ResourceType, name: str, operation: AclOperation, prefixed: bool = False
    ) -> None:
        pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
        binding = AclBinding(
            resource,
            name,
            pattern,
            f"{USER_PREFIX}{self.name}",
            ANY_HOST,
            operation,
            AclPermissionType.ALLOW,
        )
        self._bindings[binding] = None

    def principal(self, role: Role, description: str) -> Principal:
        return Principal(self.name, role, description, tuple(self._bindings))


def _physical(namespace: str, names: Iterable[str]) -> list[str]:
    return [f"{namespace}{name}" for name in names]


def processor_principal(group: ConsumerGroupSpec, namespace: str = "") -> Principal:
    group_id = f"{namespace}{group.group_id}"
    grants = _Grants(group_id)
    grants.topics(_physical(namespace, group.inputs), AclOperation.READ)
    grants.topics(
        _physical(namespace, (*group.outputs, group.dead_letter_topic)), AclOperation.WRITE
    )
    grants.group(group_id, AclOperation.READ)
    # Its assign-only readers (broadcast, restore, backfill) take group ids "<group>.<what>":
    # they never join or commit, but librdkafka looks up their coordinator (Describe).
    grants.group(f"{group_id}.", AclOperation.DESCRIBE, prefixed=True)
    grants.transactional_ids(f"{group_id}.")
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(Role.PROCESSOR, group.description)


def sink_principal(group: ConsumerGroupSpec, namespace: str = "") -> Principal:
    grants = _Grants(f"{namespace}{group.group_id}")
    grants.topics(_physical(namespace, group.inputs), AclOperation.READ)
    grants.topics(_physical(namespace, (group.dead_letter_topic,)), AclOperation.WRITE)
    grants.group(f"{namespace}{group.group_id}", AclOperation.READ)
    # Dead letters go through an idempotent (not transactional) producer.
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(Role.SINK, group.description)


def connector_principal(file: ConnectorFile, namespace: str = "") -> Principal:
    """The connector's own clients (its tasks' producers): what its routers and heartbeats
    write, under the namespace (:func:`ys_platform.connectors.namespaced`)."""
    copy = namespaced(file, namespace)
    grants = _Grants(f"{namespace}{file.name}")
    heartbeat = heartbeat_topic(copy)
    grants.topics([*output_topics(copy), *([heartbeat] if heartbeat else [])], AclOperation.WRITE)
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(
        Role.CONNECTOR,
        f"Kafka Connect connector {file.name}: writes its routed topics and heartbeats.",
    )


def connect_worker_principal(namespace: str = "") -> Principal:
    grants = _Grants(f"{namespace}{CONNECT_WORKER_NAME}")
    # The worker creates its internal topics when missing (Create, then Metadata: Describe)
    # and checks they are compacted (DescribeConfigs).
    grants.topics(
        _physical(namespace, (CONNECT_CONFIG_TOPIC, CONNECT_OFFSET_TOPIC, CONNECT_STATUS_TOPIC)),
        AclOperation.CREATE,
        AclOperation.DESCRIBE,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.READ,
        AclOperation.WRITE,
    )
    grants.group(f"{namespace}{CONNECT_GROUP_ID}", AclOperation.READ)
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(
        Role.CONNECT_WORKER,
        "The Kafka Connect worker: its group and its config, offset and status topics.",
    )


def source_topics() -> tuple[str, ...]:
    """The topics external producers write: no processor writes them and the monitor does not."""
    written = {t for g in CONSUMER_GROUPS for t in g.outputs} | set(MONITOR_OUTPUTS)
    return tuple(t.name for t in TOPICS if t.name not in written)


def producer_principal(namespace: str = "") -> Principal:
    grants = _Grants(f"{namespace}{PRODUCER_NAME}")
    grants.topics(_physical(namespace, source_topics()), AclOperation.WRITE)
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(
        Role.PRODUCER,
        "The simulator, the load generator and the collectors: the source topics.",
    )


def _measured_topics(connectors: Sequence[ConnectorFile], namespace: str) -> list[str]:
    """What the monitor reads records of: every group's inputs (the lag probe and record ages),
    the CDC topics and the connectors' outputs and heartbeats (source freshness)."""
    names = [n for g in CONSUMER_GROUPS for n in g.inputs]
    names += [t.name for t in TOPICS if t.change_stream]
    physical = _physical(namespace, dict.fromkeys(names))
    for file in connectors:
        copy = namespaced(file, namespace)
        physical += output_topics(copy)
        heartbeat = heartbeat_topic(copy)
        if heartbeat:
            physical.append(heartbeat)
    return list(dict.fromkeys(physical))


def _monitoring(grants: _Grants, connectors: Sequence[ConnectorFile], namespace: str) -> None:
    measured = _measured_topics(connectors, namespace)
    grants.topics(measured, AclOperation.READ)
    # The other topics' metadata and end offsets (health, dead-letter counts): Describe.
    others = [n for n in _physical(namespace, (t.name for t in ALL_TOPICS)) if n not in measured]
    grants.topics(others, AclOperation.DESCRIBE)
    # The health report compares every catalog topic's configs with the catalog and reads its
    # min.insync.replicas (DescribeConfigs).
    grants.topics(_physical(namespace, (t.name for t in ALL_TOPICS)), AclOperation.DESCRIBE_CONFIGS)
    for group in CONSUMER_GROUPS:  # committed offsets and members (OffsetFetch, DescribeGroups)
        grants.group(f"{namespace}{group.group_id}", AclOperation.DESCRIBE)
    grants.group(PROBE_GROUP, AclOperation.DESCRIBE)
    grants.group(RECORD_AGE_GROUP_PREFIX, AclOperation.DESCRIBE, prefixed=True)
    grants.group(FRESHNESS_GROUP_PREFIX, AclOperation.DESCRIBE, prefixed=True)
    grants.cluster(AclOperation.DESCRIBE)  # DescribeCluster and ListGroups of the health report


def monitor_principal(connectors: Sequence[ConnectorFile] = (), namespace: str = "") -> Principal:
    grants = _Grants(f"{namespace}{MONITOR_NAME}")
    _monitoring(grants, connectors, namespace)
    grants.topics(_physical(namespace, MONITOR_OUTPUTS), AclOperation.WRITE)
    grants.cluster(AclOperation.IDEMPOTENT_WRITE)
    return grants.principal(
        Role.MONITOR,
        "The lag monitor: offsets, lag probes, source freshness; publishes alerts and metrics.",
    )


def dagster_principal(connectors: Sequence[ConnectorFile] = (), namespace: str = "") -> Principal:
    grants = _Grants(f"{namespace}{DAGSTER_NAME}")
    managed = _physical(namespace, (t.name for t in ALL_TOPICS))
    managed += [h for h in (heartbeat_topic(namespaced(f, namespace)) for f in connectors) if h]
    # The topic reconcile: CreateTopics, CreatePartitions, IncrementalAlterConfigs,
    # DescribeConfigs and Metadata, on the catalog's topics only.
    grants.topics(
        managed,
        AclOperation.CREATE,
        AclOperation.ALTER,
        AclOperation.ALTER_CONFIGS,
        AclOperation.DESCRIBE,
        AclOperation.DESCRIBE_CONFIGS,
    )
    # The lag and freshness checks read what the monitor reads.
    _monitoring(grants, connectors, namespace)
    # CreateAcls/DeleteAcls and AlterUserScramCredentials: Alter on the cluster; DescribeAcls
    # and DescribeUserScramCredentials: Describe. Whoever may alter ACLs may grant itself
    # anything: this principal is as powerful as an administrator, and kept to Dagster.
    grants.cluster(AclOperation.ALTER)
    return grants.principal(
        Role.CONTROL_PLANE,
        "Dagster: reconciles topics, ACLs and SCRAM users; runs the lag and freshness checks.",
    )


def principals(
    connectors: Sequence[ConnectorFile] = (), namespace: str = ""
) -> tuple[Principal, ...]:
    """Every principal of the platform with its grants, in a stable order."""
    found: list[Principal] = []
    for group in CONSUMER_GROUPS:
        if group.kind == "processor":
            found.append(processor_principal(group, namespace))
        else:
            found.append(sink_principal(group, namespace))
    found += [connector_principal(f, namespace) for f in connectors]
    found += [
        connect_worker_principal(namespace),
        producer_principal(namespace),
        monitor_principal(connectors, namespace),
        dagster_principal(connectors, namespace),
    ]
    names = [p.name for p in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"principal names {duplicates} are taken twice (a connector named like a consumer "
            "group or a platform user?): rename the connector"
        )
    return tuple(found)


def desired_bindings(found: Iterable[Principal]) -> frozenset[AclBinding]:
    return frozenset(b for p in found for b in p.bindings)


@dataclass(frozen=True)
class AclPlan:
    """What the ACL reconcile will do (or, in a dry run, would do)."""

    create: tuple[AclBinding, ...]
    """Granted by the catalog, missing on the cluster."""
    extra: tuple[AclBinding, ...]
    """On the cluster for a platform principal (or everyone), not granted by the catalog:
    reported, and removed only when asked (``--remove-extra``)."""
    unchanged: tuple[AclBinding, ...]

    @property
    def in_sync(self) -> bool:
        return not self.create and not self.extra


def plan(desired: Iterable[AclBinding], actual: Iterable[AclBinding]) -> AclPlan:
    """Compare the catalog's bindings with the cluster's.

    Only bindings of the desired principals and of ``User:*`` count as extra: other principals'
    (the brokers' admin, another namespace's test) are not the platform's to judge, while an
    ACL for everyone opens the platform's resources to any client and must be seen.
    """
    wanted = frozenset(desired)
    ours = {b.principal for b in wanted} | {WILDCARD_PRINCIPAL}
    live = frozenset(b for b in actual if b.principal in ours)
    return AclPlan(
        create=tuple(sorted(wanted - live)),
        extra=tuple(sorted(live - wanted)),
        unchanged=tuple(sorted(wanted & live)),
    )
