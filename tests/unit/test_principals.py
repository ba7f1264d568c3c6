"""The principals and ACL bindings derived from the catalog, and the ACL plan."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from ys_platform.catalog.topics import CONSUMER_GROUPS, consumer_group
from ys_platform.connectors import connector_files
from ys_platform.processors.registry import build_processor, processor_names
from ys_platform.security.principals import (
    Role,
    desired_bindings,
    plan,
    principals,
    processor_principal,
    source_topics,
)
from ys_platform.streaming.app import BroadcastApp

LIT, PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
TOPIC, GROUP, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
CLUSTER = ResourceType.BROKER
R, W, D, IW = (
    AclOperation.READ,
    AclOperation.WRITE,
    AclOperation.DESCRIBE,
    AclOperation.IDEMPOTENT_WRITE,
)


def _acl(
    principal: str, kind: ResourceType, name: str, op: AclOperation, pattern=LIT
) -> AclBinding:
    return AclBinding(kind, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)


def test_risk_processor_is_granted_exactly_its_catalog_entry() -> None:
    principal = processor_principal(consumer_group("risk-assessment-processor"), "t1.")
    user = "t1.risk-assessment-processor"
    assert principal.name == user
    assert principal.principal == f"User:{user}"
    assert principal.role is Role.PROCESSOR
    assert set(principal.bindings) == {
        _acl(user, TOPIC, "t1.defi.transactions", R),
        _acl(user, TOPIC, "t1.users.portfolios", R),
        _acl(user, TOPIC, "t1.market.analytics", R),
        _acl(user, TOPIC, "t1.risk.assessments", W),
        _acl(user, TOPIC, "t1.risk.alerts", W),
        _acl(user, TOPIC, "t1.dlq.risk-assessment-processor", W),
        _acl(user, GROUP, "t1.risk-assessment-processor", R),
        _acl(user, GROUP, "t1.risk-assessment-processor.", D, PRE),
        _acl(user, TXN, "t1.risk-assessment-processor.", W, PRE),
        _acl(user, TXN, "t1.risk-assessment-processor.", D, PRE),
        _acl(user, CLUSTER, "kafka-cluster", IW),
    }
    assert len(principal.bindings) == 11  # no duplicates


def test_without_namespace_names_are_the_catalogs() -> None:
    principal = processor_principal(consumer_group("price-aggregation-processor"))
    names = {(b.restype, b.name, b.operation) for b in principal.bindings}
    assert names == {
        (TOPIC, "market.prices", R),
        (TOPIC, "market.analytics", W),
        (TOPIC, "dlq.price-aggregation-processor", W),
        (GROUP, "price-aggregation-processor", R),
        (GROUP, "price-aggregation-processor.", D),
        (TXN, "price-aggregation-processor.", W),
        (TXN, "price-aggregation-processor.", D),
        (CLUSTER, "kafka-cluster", IW),
    }


@pytest.mark.parametrize("name", processor_names())
def test_broadcast_inputs_are_among_the_granted_reads(name: str) -> None:
    """A processor reads its broadcast topics outside its group: they must be granted too."""
    app = build_processor(name)
    reads = {
        b.name
        for b in processor_principal(app.group).bindings
        if b.operation == R and b.restype == TOPIC
    }
    broadcast = app.broadcast_inputs if isinstance(app, BroadcastApp) else ()
    assert set(broadcast) <= reads
    assert reads == set(app.group.inputs)


def test_every_catalog_group_and_connector_has_one_principal() -> None:
    files = connector_files()
    found = principals(files, "ns.")
    by_name = {p.name: p for p in found}
    assert len(by_name) == len(found)
    assert [p.name for p in found] == [
        "ns.price-aggregation-processor",
        "ns.risk-assessment-processor",
        "ns.crosschain-arbitrage-processor",
        "ns.clickhouse-sink",
        "ns.vector-sink",
        "ns.postgres-source",
        "ns.ys-connect",
        "ns.ys-producer",
        "ns.ys-monitor",
        "ns.ys-dagster",
    ]
    assert [by_name[f"ns.{g.group_id}"].role for g in CONSUMER_GROUPS] == [
        Role.PROCESSOR,
        Role.PROCESSOR,
        Role.PROCESSOR,
        Role.SINK,
        Role.SINK,
    ]
    # Each binding belongs to the principal it is listed under, every one is an ALLOW from any host.
    for p in found:
        assert {b.principal for b in p.bindings} == {p.principal}
        assert {(b.permission_type, b.host) for b in p.bindings} == {(AclPermissionType.ALLOW, "*")}


def test_sink_reads_inputs_commits_its_group_and_writes_only_dead_letters() -> None:
    sink = {p.name: p for p in principals()}["clickhouse-sink"]
    writes = {b.name for b in sink.bindings if b.operation == W}
    reads = {(b.restype, b.name) for b in sink.bindings if b.operation == R}
    assert writes == {"dlq.clickhouse-sink"}
    assert reads == {(TOPIC, t) for t in consumer_group("clickhouse-sink").inputs} | {
        (GROUP, "clickhouse-sink")
    }
    assert not [b for b in sink.bindings if b.restype == TXN]


def test_connector_writes_its_routed_topics_and_heartbeat_only() -> None:
    files = connector_files()
    connector = {p.name: p for p in principals(files, "x.")}["x.postgres-source"]
    assert {(b.restype, b.name, b.operation) for b in connector.bindings} == {
        (TOPIC, "x.defi.protocols", W),
        (TOPIC, "x.defi.tokens", W),
        (TOPIC, "x.defi.transactions", W),
        (TOPIC, "x.defi.liquidity-pools", W),
        (TOPIC, "x.defi.yields", W),
        (TOPIC, "x.users.portfolios", W),
        # namespaced() moves the routed topics only; the heartbeat keeps the connector's prefix.
        (TOPIC, "__debezium-heartbeat.ys", W),
        (CLUSTER, "kafka-cluster", IW),
    }


def test_connect_worker_reads_no_platform_topic() -> None:
    worker = {p.name: p for p in principals(connector_files())}["ys-connect"]
    topics = {b.name for b in worker.bindings if b.restype == TOPIC}
    assert topics == {"ys-connect-configs", "ys-connect-offsets", "ys-connect-status"}
    assert {(b.restype, b.name, b.operation) for b in worker.bindings if b.restype != TOPIC} == {
        (GROUP, "ys-connect", R),
        (CLUSTER, "kafka-cluster", IW),
    }


def test_producers_write_the_source_topics_and_nothing_derived() -> None:
    assert source_topics() == (
        "defi.protocols",
        "defi.tokens",
        "defi.transactions",
        "defi.liquidity-pools",
        "defi.yields",
        "market.prices",
        "market.sentiment",
        "users.events",
        "users.portfolios",
        "crosschain.events",
    )
    producer = {p.name: p for p in principals()}["ys-producer"]
    assert {b.operation for b in producer.bindings} == {W, IW}
    assert not [b for b in producer.bindings if b.restype in (GROUP, TXN)]


def test_only_dagster_alters_the_cluster_and_no_one_gets_all_or_delete() -> None:
    found = principals(connector_files())
    cluster_alter = [
        p.name
        for p in found
        for b in p.bindings
        if b.restype == CLUSTER and b.operation == AclOperation.ALTER
    ]
    assert cluster_alter == ["ys-dagster"]
    forbidden = {AclOperation.ALL, AclOperation.DELETE, AclOperation.CLUSTER_ACTION}
    assert not [b for b in desired_bindings(found) if b.operation in forbidden]


def test_each_topic_written_by_one_kind_of_principal() -> None:
    """Outputs have one writer: the processor; DLQs their group; system.* the monitor."""
    found = principals(connector_files())
    writers: dict[str, set[str]] = {}
    for p in found:
        for b in p.bindings:
            if b.restype == TOPIC and b.operation == W:
                writers.setdefault(b.name, set()).add(p.name)
    assert writers["risk.assessments"] == {"risk-assessment-processor"}
    assert writers["crosschain.arbitrage"] == {"crosschain-arbitrage-processor"}
    assert writers["dlq.vector-sink"] == {"vector-sink"}
    assert writers["system.alerts"] == {"ys-monitor"}
    # CDC topics: Debezium in dev, the producers when the simulator writes them straight.
    assert writers["defi.transactions"] == {"postgres-source", "ys-producer"}


def _b(name: str, op: AclOperation = R, principal: str = "p") -> AclBinding:
    return _acl(principal, TOPIC, name, op)


def test_plan_creates_missing_reports_extra_and_keeps_matching() -> None:
    desired = [_b("a"), _b("b"), _b("c", W)]
    actual = [_b("a"), _b("c", R), _b("x", W, "*"), _b("y", principal="someone-else")]
    result = plan(desired, actual)
    assert result.create == tuple(sorted([_b("b"), _b("c", W)]))
    # Everyone's ACL is the platform's concern; another principal's is not.
    assert result.extra == tuple(sorted([_b("c", R), _b("x", W, "*")]))
    assert result.unchanged == (_b("a"),)
    assert not result.in_sync


def test_plan_in_sync_when_cluster_matches() -> None:
    desired = desired_bindings(principals(connector_files()))
    result = plan(desired, list(desired))
    assert result.in_sync
    assert len(result.unchanged) == len(desired)
    assert result.create == result.extra == ()


def test_plan_on_empty_cluster_creates_everything() -> None:
    desired = desired_bindings(principals())
    result = plan(desired, [])
    assert set(result.create) == desired
    assert result.extra == result.unchanged == ()


def test_connector_named_like_a_group_is_refused() -> None:
    (file,) = connector_files()
    clash = type(file)("vector-sink", file.config, file.desired_state, file.path)
    with pytest.raises(ValueError, match=r"\['vector-sink'\] are taken twice"):
        principals([clash])


def test_monitor_reads_what_it_measures_joins_no_group_and_writes_only_system_topics():
    monitor = {p.name: p for p in principals(connector_files())}["ys-monitor"]
    reads = {b.name for b in monitor.bindings if b.restype == TOPIC and b.operation == R}
    writes = {b.name for b in monitor.bindings if b.operation == W}
    assert writes == {"system.alerts", "system.metrics"}
    assert not [n for n in reads if n.startswith("dlq.")]
    assert "__debezium-heartbeat.ys" in reads and "defi.liquidity-pools" in reads
    assert {b.operation for b in monitor.bindings if b.restype == GROUP} == {D}
    # Each topic once: read where measured, else described.
    topics = [b.name for b in monitor.bindings if b.restype == TOPIC and b.operation in (R, D)]
    assert len(topics) == len(set(topics))


@pytest.mark.parametrize("name", processor_names())
def test_the_catalog_names_each_processors_broadcast_inputs(name: str) -> None:
    """The lag monitor and the load test read them from the catalog: they have no lag."""
    app = build_processor(name)
    broadcast = app.broadcast_inputs if isinstance(app, BroadcastApp) else ()
    assert app.group.broadcast_inputs == tuple(broadcast)
    assert set(app.group.member_inputs) == set(app.group.inputs) - set(broadcast)
