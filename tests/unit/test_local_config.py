"""The pure parts of the local stack: port layout and the configuration each service gets."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ys_platform.local import LocalStackError, log_path
from ys_platform.local import connect as local_connect
from ys_platform.local import postgres as local_postgres
from ys_platform.local.config import (
    KafkaNode,
    bootstrap_servers,
    connect_worker_properties,
    kafka_nodes,
    pg_hba_conf,
    postgresql_conf,
    server_properties,
)
from ys_platform.local.kafka import new_cluster_id
from ys_platform.settings import load_settings


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_one_broker_layout() -> None:
    assert kafka_nodes(9092, 1) == [KafkaNode(node_id=1, broker_port=9092, controller_port=9192)]
    assert bootstrap_servers(9092, 1) == "127.0.0.1:9092"


def test_three_broker_layout() -> None:
    assert [(n.name, n.broker_port, n.controller_port) for n in kafka_nodes(9092, 3)] == [
        ("kafka-1", 9092, 9192),
        ("kafka-2", 9093, 9193),
        ("kafka-3", 9094, 9194),
    ]
    assert bootstrap_servers(39092, 3) == "127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094"


@pytest.mark.parametrize("brokers", [0, 2, 4])
def test_unsupported_broker_counts_are_refused(brokers: int) -> None:
    with pytest.raises(ValueError, match=r"brokers must be one of \(1, 3\)"):
        kafka_nodes(9092, brokers)


def test_server_properties_of_a_single_broker() -> None:
    nodes = kafka_nodes(9092, 1)
    text = server_properties(nodes[0], nodes, Path("/state/kafka/broker-1/data"))

    assert _properties(text) == {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": "1@127.0.0.1:9192",
        "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9192",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:9092",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": "/state/kafka/broker-1/data",
        "auto.create.topics.enable": "false",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
    }


def test_server_properties_of_the_second_of_three_brokers() -> None:
    nodes = kafka_nodes(9092, 3)
    props = _properties(server_properties(nodes[1], nodes, Path("/s/broker-2/data")))

    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9093"
    assert props["log.dirs"] == "/s/broker-2/data"
    # RF 3 (the seed's) and min.insync 2: acks=all survives one broker down.
    assert {k: v for k, v in props.items() if k.endswith(("factor", "isr", "insync.replicas"))} == {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "share.coordinator.state.topic.replication.factor": "3",
        "share.coordinator.state.topic.min.isr": "2",
    }


def test_postgresql_conf() -> None:
    assert postgresql_conf(15432).splitlines() == [
        "# ys-platform local stack",
        "listen_addresses = '127.0.0.1'",
        "port = 15432",
        "unix_socket_directories = ''",
        "wal_level = logical",
        "max_replication_slots = 10",
        "max_wal_senders = 10",
        "max_slot_wal_keep_size = '2GB'",
    ]


def test_pg_hba_trusts_loopback_only() -> None:
    rules = [line.split() for line in pg_hba_conf().splitlines() if not line.startswith("#")]
    assert rules == [
        ["host", "all", "all", "127.0.0.1/32", "trust"],
        ["host", "replication", "all", "127.0.0.1/32", "trust"],
    ]


def test_cluster_id_is_a_kafka_uuid() -> None:
    cid = new_cluster_id()
    assert len(cid) == 22
    assert not cid.startswith("-")
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_log_paths(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert log_path(settings, "kafka") == tmp_path / "logs" / "kafka-1.log"
    assert log_path(settings, "kafka-3") == tmp_path / "logs" / "kafka-3.log"
    assert log_path(settings, "postgres") == tmp_path / "logs" / "postgres.log"
    with pytest.raises(ValueError, match="unknown service 'zookeeper'"):
        log_path(settings, "zookeeper")


def test_missing_postgres_binaries_name_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_postgres, "PG_ROOT", tmp_path / "no-postgresql")
    with pytest.raises(LocalStackError, match=r"Debian package `postgresql`.*apt-get install"):
        local_postgres._bindir(tmp_path / "data")


# --- Kafka Connect -------------------------------------------------------------------------------
def test_connect_worker_properties_on_one_broker() -> None:
    text = connect_worker_properties(
        bootstrap="127.0.0.1:9092", port=8083, brokers=1, plugin_path=Path("/cache/plugins/abc")
    )

    assert _properties(text) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "group.id": "ys-connect",
        "config.storage.topic": "ys-connect-configs",
        "offset.storage.topic": "ys-connect-offsets",
        "status.storage.topic": "ys-connect-status",
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset.storage.partitions": "5",
        "status.storage.partitions": "5",
        "offset.flush.interval.ms": "1000",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "plugin.path": "/cache/plugins/abc",
        "plugin.discovery": "service_load",
        "listeners": "http://127.0.0.1:8083",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": "8083",
        "scheduled.rebalance.max.delay.ms": "0",
        "config.providers": "env",
        "config.providers.env.class": (
            "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
        ),
        "config.providers.env.param.allowlist.pattern": "^YS_CONNECT_.*",
    }


def test_connect_internal_topics_follow_three_brokers() -> None:
    props = _properties(
        connect_worker_properties(
            bootstrap=bootstrap_servers(39092, 3), port=18083, brokers=3, plugin_path=Path("/p")
        )
    )

    assert props["bootstrap.servers"] == "127.0.0.1:39092,127.0.0.1:39093,127.0.0.1:39094"
    assert {k: v for k, v in props.items() if k.endswith("replication.factor")} == {
        "config.storage.replication.factor": "3",
        "offset.storage.replication.factor": "3",
        "status.storage.replication.factor": "3",
    }
    assert props["listeners"] == "http://127.0.0.1:18083"
    assert props["rest.advertised.port"] == "18083"


def test_connect_pom_resolves_the_versions_the_launcher_expects() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(local_connect.CONNECT_POM).getroot()
    declared = pom.find("m:properties", ns)
    assert declared is not None
    properties = {el.tag.split("}")[1]: el.text for el in declared}
    assert properties["kafka.version"] == local_connect.KAFKA_VERSION
    assert properties["debezium.version"] == local_connect.DEBEZIUM_VERSION
    assert {p.findtext("m:id", namespaces=ns) for p in pom.iterfind(".//m:profile", ns)} == {
        "worker",
        "debezium-postgres",
    }
    # The plugin folder keeps the kafka-clients Debezium was built with, as Debezium's own
    # archive does: Debezium 3.6.1 needs classes that Kafka 4.4's kafka-clients moved.
    excluded = {
        e.findtext("m:groupId", namespaces=ns)
        for e in pom.iterfind(".//m:profile[m:id='debezium-postgres']//m:exclusion", ns)
    }
    assert "org.apache.kafka" not in excluded


@pytest.mark.parametrize(
    ("url", "managed", "port"),
    [
        ("http://127.0.0.1:8083", True, 8083),
        ("http://localhost:48083", True, 48083),
        ("http://127.0.0.1", True, 80),
        ("http://connect.internal:8083", False, 8083),
        ("https://127.0.0.1:8443", False, 8443),
    ],
)
def test_connect_endpoint_comes_from_connect_url(url: str, managed: bool, port: int) -> None:
    settings = load_settings(connect_url=url)
    assert local_connect.is_managed(settings) is managed
    assert local_connect.port(settings) == port


def test_connect_log_path(tmp_path: Path) -> None:
    assert log_path(load_settings(home=tmp_path), "connect") == tmp_path / "logs" / "connect.log"


def test_missing_maven_is_named_for_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setattr(local_connect, "_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(local_connect.shutil, "which", lambda _name: None)
    with pytest.raises(LocalStackError, match=r"Maven \(mvn\) is needed .*Kafka Connect 4\.4\.0"):
        local_connect.worker_classpath()
    with pytest.raises(LocalStackError, match=r"Maven \(mvn\) is needed .*Debezium PostgreSQL"):
        local_connect.plugin_path()
    # A failed fetch leaves no half-made plugin folder (nor its staging copy) behind.
    assert [p.name for p in (tmp_path / "cache" / "connect-plugins").rglob("*")] == [
        local_connect._pom_digest()
    ]
