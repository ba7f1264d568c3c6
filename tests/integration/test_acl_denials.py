"""Least privilege, proven on the secure stack (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer with
allow.everyone.if.no.acl.found=false), after Kafka's own EndToEndAuthorizationTest.

Each test owns a namespace: the catalog's principals, topics and groups under a fresh prefix,
granted by the platform's reconcile (:func:`ys_platform.security.acls.reconcile`) with SCRAM
users created for the run. The risk processor's principal may do what the catalog says and is
refused the rest with the authorization error Kafka defines for it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from kafka_helpers import create_namespaced_topics, read_topic
from secure_helpers import SecureCluster
from secure_stack import start_secure_stack

from ys_platform.assets.acls import build_acl_assets
from ys_platform.catalog.topics import topic
from ys_platform.cli import main
from ys_platform.cli.core import ExitCode
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.connectors import connector_files
from ys_platform.monitoring.lag import GroupFilter, LagReader
from ys_platform.resources.kafka import KafkaResource
from ys_platform.security.acls import live_bindings, plan_acls, reconcile
from ys_platform.security.principals import principals
from ys_platform.streaming.topics import TopicAdminError, apply_plans, plan_topics

RISK = "risk-assessment-processor"
PRICE = "price-aggregation-processor"
TOPICS = [
    "defi.transactions",
    "users.portfolios",
    "market.analytics",
    "risk.assessments",
    "risk.alerts",
    f"dlq.{RISK}",
    "market.prices",
    "crosschain.arbitrage",
]
# An authorization error reaches a consumer through the next poll, a producer through its
# delivery report; the broker answers in milliseconds, librdkafka retries metadata for a while.
DENIAL_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """A secure Kafka of this module's own (no PostgreSQL, no Connect: only the brokers are
    asked here), as its administrator; taken down afterwards."""
    home = tmp_path_factory.mktemp("acls") / ".ys"
    with start_secure_stack(home, postgres=False) as stack:
        yield SecureCluster(stack.connection(), stack.admin.environment())


class Users(dict):
    """The namespace's principals' connections, each SCRAM user created on first use."""

    def __init__(self, cluster: SecureCluster, namespace: str) -> None:
        super().__init__()
        self.cluster, self.namespace = cluster, namespace

    def __missing__(self, name: str) -> KafkaConnection:
        self[name] = self.cluster.user(f"{self.namespace}{name}")
        return self[name]


@pytest.fixture
def granted(secure_cluster: SecureCluster) -> Iterator[tuple[str, Users]]:
    """A namespace with its topics and every catalog principal granted by the reconcile."""
    namespace = f"t{uuid.uuid4().hex[:8]}."
    admin = secure_cluster.admin.admin()
    create_namespaced_topics(admin, namespace, TOPICS, partitions=1)
    found = principals(connector_files(), namespace)
    result = reconcile(admin, found)
    assert len(result.plan.create) == sum(len(p.bindings) for p in found)
    try:
        yield namespace, Users(secure_cluster, namespace)
    finally:
        secure_cluster.forget([p.name for p in found])


def _consumer(connection: KafkaConnection, group_id: str) -> Consumer:
    return connection.consumer(group_id, enable_partition_eof=True)


def _first_error(consumer: Consumer) -> KafkaError:
    deadline = time.monotonic() + DENIAL_TIMEOUT_S
    while time.monotonic() < deadline:
        for message in consumer.consume(10, timeout=0.5):
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                return error
    raise AssertionError(f"no error within {DENIAL_TIMEOUT_S}s")


def _produce_error(connection: KafkaConnection, topic: str) -> KafkaError | None:
    failures: list[KafkaError] = []
    producer = connection.producer(linger_ms=0, message_timeout_ms=int(DENIAL_TIMEOUT_S * 1000))
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: err and failures.append(err))
    producer.flush(DENIAL_TIMEOUT_S + 5)
    return failures[0] if failures else None


def _produce(connection: KafkaConnection, topic: str, values: list[bytes]) -> None:
    failures: list[KafkaError] = []
    producer = connection.producer(linger_ms=0)
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: err and failures.append(err))
    assert producer.flush(30) == 0
    assert failures == []


def test_reconcile_then_in_sync_as_seen_by_dagsters_own_principal(granted):
    """Dagster's principal may read the ACLs and run the topic reconcile, not more."""
    namespace, users = granted
    dagster = users["ys-dagster"].admin()
    found = principals(connector_files(), namespace)
    again = plan_acls(dagster, found)
    assert again.create == () and again.extra == ()
    assert len(again.unchanged) == sum(len(p.bindings) for p in found)
    specs = [replace(topic(n), name=f"{namespace}{n}", partitions=1) for n in TOPICS]
    assert [p.in_sync for p in plan_topics(dagster, specs)] == [True] * len(TOPICS)
    # A topic outside the catalog is not its to create.
    with pytest.raises(TopicAdminError, match=r"(?i)authoriz"):
        apply_plans(dagster, plan_topics(dagster, [replace(specs[0], name=f"{namespace}other")]))


def test_risk_principal_reads_writes_and_commits_its_own_in_one_transaction(
    granted, secure_cluster
):
    namespace, users = granted
    risk = users[RISK]
    _produce(users["ys-producer"], f"{namespace}defi.transactions", [b"t0", b"t1", b"t2"])

    consumer = risk.consumer(f"{namespace}{RISK}")
    consumer.subscribe([f"{namespace}defi.transactions"])
    consumed: list[bytes] = []
    deadline = time.monotonic() + DENIAL_TIMEOUT_S
    while len(consumed) < 3 and time.monotonic() < deadline:
        for message in consumer.consume(10, timeout=0.5):
            assert message.error() is None, message.error()
            consumed.append(message.value())
    assert consumed == [b"t0", b"t1", b"t2"]

    producer = risk.producer(transactional_id=f"{namespace}{RISK}.0", linger_ms=0)
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(f"{namespace}risk.assessments", b"a0")
    producer.produce(f"{namespace}risk.alerts", b"alert0")
    producer.produce(f"{namespace}dlq.{RISK}", b"dead0")
    producer.send_offsets_to_transaction(
        consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
    )
    producer.commit_transaction(30)

    committed = consumer.committed([TopicPartition(f"{namespace}defi.transactions", 0)], 30)
    assert [tp.offset for tp in committed] == [3]
    consumer.close()
    written = {
        topic: [r.value() for r in read_topic(secure_cluster.admin, f"{namespace}{topic}")]
        for topic in ("risk.assessments", "risk.alerts", f"dlq.{RISK}")
    }
    assert written == {
        "risk.assessments": [b"a0"],
        "risk.alerts": [b"alert0"],
        f"dlq.{RISK}": [b"dead0"],
    }


def test_risk_principal_cannot_read_market_prices(granted):
    namespace, users = granted
    consumer = _consumer(users[RISK], f"{namespace}{RISK}")
    # Subscribed in its own group (which it may join), as EndToEndAuthorizationTest does; an
    # assign() of a topic it may not even describe only waits for a leader, silently.
    consumer.subscribe([f"{namespace}market.prices"])
    error = _first_error(consumer)
    consumer.close()
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_risk_principal_cannot_write_crosschain_arbitrage(granted):
    namespace, users = granted
    error = _produce_error(users[RISK], f"{namespace}crosschain.arbitrage")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Its own output is writable with the same client settings.
    assert _produce_error(users[RISK], f"{namespace}risk.assessments") is None


def test_risk_principal_cannot_join_another_group(granted):
    namespace, users = granted
    consumer = _consumer(users[RISK], f"{namespace}{PRICE}")
    consumer.subscribe([f"{namespace}defi.transactions"])
    error = _first_error(consumer)
    consumer.close()
    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_risk_principal_cannot_use_another_transactional_id(granted):
    namespace, users = granted
    producer = users[RISK].producer(transactional_id=f"{namespace}{PRICE}.0")
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # Nor one outside its prefix that merely starts like it.
    producer = users[RISK].producer(transactional_id=f"{namespace}{RISK}-other")
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


@pytest.mark.parametrize("principal", ["ys-connect", "postgres-source"])
def test_connect_principals_cannot_read_the_risk_topics(granted, principal):
    """Neither the worker nor its connector. The worker may use its group, so what refuses it
    is the topic; the connector's principal has no group at all (its clients only produce), so
    a librdkafka consumer is refused already at the group's coordinator lookup."""
    namespace, users = granted
    for name in ("risk.assessments", "risk.alerts"):
        consumer = _consumer(users[principal], f"{namespace}ys-connect")
        consumer.subscribe([f"{namespace}{name}"])
        error = _first_error(consumer)
        consumer.close()
        expected = {
            "ys-connect": KafkaError.TOPIC_AUTHORIZATION_FAILED,
            "postgres-source": KafkaError.GROUP_AUTHORIZATION_FAILED,
        }[principal]
        assert error.code() == expected, name


def test_a_describe_only_principal_sees_the_topic_but_cannot_consume(granted, secure_cluster):
    namespace, _ = granted
    name = f"{namespace}describe-only"
    topic, group = f"{namespace}defi.transactions", f"{namespace}describe-only"
    acls = [
        AclBinding(
            kind,
            resource,
            ResourcePatternType.LITERAL,
            f"User:{name}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, resource, operation in (
            (ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
            (ResourceType.GROUP, group, AclOperation.READ),  # the group is not what stops it
        )
    ]
    admin = secure_cluster.admin.admin()
    for future in admin.create_acls(acls).values():
        future.result(30)
    try:
        connection = secure_cluster.user(name)
        consumer = _consumer(connection, group)
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        assert metadata.error is None and sorted(metadata.partitions) == [0]
        consumer.assign([TopicPartition(topic, 0, 0)])
        error = _first_error(consumer)
        consumer.close()
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        secure_cluster.forget([name])


def test_the_monitor_reads_a_groups_lag_with_its_own_grants(granted):
    """The lag monitor's principal reads committed offsets, end offsets and probes the input
    (records it may read, in a group of its own), with nothing refused."""
    namespace, users = granted
    source, group = f"{namespace}defi.transactions", f"{namespace}{RISK}"
    _produce(users["ys-producer"], source, [b"t0", b"t1", b"t2", b"t3", b"t4"])
    consumer = users[RISK].consumer(group)
    consumer.commit(offsets=[TopicPartition(source, 0, 2)], asynchronous=False)
    consumer.close()

    reader = LagReader(users["ys-monitor"], GroupFilter.exactly([group]), inputs={group: [source]})
    try:
        reading = reader.read()
    finally:
        reader.close()
    (offsets,) = reading.groups
    assert offsets.group_id == group
    assert [(p.topic, p.partition, p.committed, p.readable) for p in offsets.partitions] == [
        (source, 0, 2, 3)
    ]
    assert reading.offsets[source, 0].latest == 5


def test_cli_apply_check_and_remove_extra(granted, secure_cluster, monkeypatch, capsys):
    """`acls check` prints the matrix and agrees after the reconcile; an extra grant shows as
    EXTRA and exit 1; `acls apply` keeps it, `--remove-extra` deletes exactly it."""
    namespace, _ = granted
    for name, value in secure_cluster.environment.items():
        monkeypatch.setenv(name, value)
    risk = f"{namespace}{RISK}"
    assert main(["acls", "check", "--namespace", namespace, "--principal", risk]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "PRINCIPAL",
        "RESOURCE",
        "Read",
        "Write",
        "Describe",
        "IdempotentWrite",
    ]
    rows = lines[1:-2]  # then the legend and the verdict
    assert len(rows) == 10
    assert all(r.startswith(risk) and "MISSING" not in r and "EXTRA" not in r for r in rows)
    assert lines[-1] == "1 principals, 11 grants in place, 0 missing, 0 extra"

    extra = AclBinding(
        ResourceType.TOPIC,
        f"{namespace}market.prices",
        ResourcePatternType.LITERAL,
        f"User:{risk}",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    admin = secure_cluster.admin.admin()
    for future in admin.create_acls([extra]).values():
        future.result(30)
    assert main(["acls", "check", "--namespace", namespace, "--principal", risk]) == (
        ExitCode.FAILED
    )
    out = capsys.readouterr().out
    assert f"{risk}  TOPIC {namespace}market.prices" in out
    assert [line.split()[-4:] for line in out.splitlines() if "market.prices" in line] == [
        ["EXTRA", "-", "-", "-"]
    ]
    assert out.splitlines()[-1] == "1 principals, 11 grants in place, 0 missing, 1 extra"

    assert main(["acls", "apply", "--namespace", namespace]) == ExitCode.OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"extra: User:{risk} ALLOW READ on TOPIC {namespace}market.prices (LITERAL)"
    assert main(["acls", "apply", "--namespace", namespace, "--remove-extra"]) == ExitCode.OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"removed: User:{risk} ALLOW READ on TOPIC {namespace}market.prices (LITERAL)"
    )
    total = sum(len(p.bindings) for p in principals(connector_files(), namespace))
    assert out[-1] == f"10 principals, 0 created, {total} unchanged, 1 extra (1 removed)"
    assert extra not in live_bindings(admin)


def test_asset_grants_the_catalog_and_its_check_catches_an_extra_grant(secure_cluster, monkeypatch):
    """The kafka_acls asset (production names, on this module's own cluster) creates every
    grant, its check passes, an extra grant fails it, ``remove_extra`` removes exactly that."""
    files = connector_files()
    found = principals(files)
    monkeypatch.setenv(
        "YS_TEST_ACL_ADMIN_PASSWORD", secure_cluster.environment["YS_KAFKA_SASL_PASSWORD"]
    )
    resources = {
        "kafka": KafkaResource.of(secure_cluster.admin, lambda _field: "YS_TEST_ACL_ADMIN_PASSWORD")
    }
    kafka_acls, kafka_acls_match_catalog = build_acl_assets(files)
    check_only = dg.AssetSelection.checks(kafka_acls_match_catalog)
    try:
        result = dg.materialize([kafka_acls], resources=resources)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["authorizer"].value == "enabled"
        assert metadata["created"].value == sum(len(p.bindings) for p in found)
        assert metadata["extra"].value == "none"

        checked = dg.materialize(
            [kafka_acls, kafka_acls_match_catalog], resources=resources, selection=check_only
        )
        assert [e.passed for e in checked.get_asset_check_evaluations()] == [True]

        extra = AclBinding(
            ResourceType.TOPIC,
            "market.prices",
            ResourcePatternType.LITERAL,
            "User:ys-producer",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        admin = secure_cluster.admin.admin()
        for future in admin.create_acls([extra]).values():
            future.result(30)
        checked = dg.materialize(
            [kafka_acls, kafka_acls_match_catalog], resources=resources, selection=check_only
        )
        (evaluation,) = checked.get_asset_check_evaluations()
        assert evaluation.passed is False
        assert evaluation.metadata["extra"].value == (
            "- User:ys-producer ALLOW READ on TOPIC market.prices (LITERAL)"
        )
        assert evaluation.metadata["missing"].value == "none"

        repaired = dg.materialize(
            [kafka_acls],
            resources=resources,
            run_config={"ops": {"security__kafka_acls": {"config": {"remove_extra": True}}}},
        )
        (event,) = repaired.get_asset_materialization_events()
        assert event.materialization.metadata["removed"].value == 1
        assert event.materialization.metadata["created"].value == 0
        checked = dg.materialize(
            [kafka_acls, kafka_acls_match_catalog], resources=resources, selection=check_only
        )
        assert [e.passed for e in checked.get_asset_check_evaluations()] == [True]
    finally:
        secure_cluster.forget([p.name for p in found])
