"""The pure parts of the local stack: port layout and the configuration each service gets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ys_platform.local import LocalStackError, log_path
from ys_platform.local import postgres as local_postgres
from ys_platform.local.config import (
    KafkaNode,
    bootstrap_servers,
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
