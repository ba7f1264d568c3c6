"""The local stack's Kafka Connect worker against real processes: up, plugin, topics, status, down.

The stack lives in its own temporary state folder on ports of its own (Kafka 23092, PostgreSQL
23432, Connect 23083), so these tests run beside a developer's default stack without touching it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.local import connect as local_connect
from ys_platform.local import down, kafka_bootstrap, status, up
from ys_platform.local.config import (
    CONNECT_CONFIG_TOPIC,
    CONNECT_OFFSET_TOPIC,
    CONNECT_STATUS_TOPIC,
)
from ys_platform.local.procs import port_open
from ys_platform.settings import Settings, load_settings

# Measured on 2 busy cores: Kafka ~10 s, initdb + PostgreSQL ~3 s, the worker ~7-11 s, the
# Debezium snapshot ~5 s, down ~3 s; the first run also resolves ~70 jars with Maven (~15 s from
# ~/.m2). 120 s bounds the module on a slow CI machine.
pytestmark = pytest.mark.timeout(120)

PORTS = {
    "local_kafka_port": 23092,
    "postgres_port": 23432,
    "connect_url": "http://127.0.0.1:23083",
}
CONNECT_URL = str(PORTS["connect_url"])

# Read by the worker through its env config provider (YS_CONNECT_* only): a connector config
# that says ${env:YS_CONNECT_TEST_DBNAME} reaches the database only if the provider resolved it.
DBNAME_VARIABLE = "YS_CONNECT_TEST_DBNAME"

# Client and REST calls on loopback finish in milliseconds; 30 s only bounds a hang.
CLIENT_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A 1-broker stack with PostgreSQL and Connect in a fresh state folder, started."""
    settings = load_settings(home=tmp_path_factory.mktemp("connect") / ".ys", **PORTS)
    with pytest.MonkeyPatch.context() as env:
        # The worker inherits the environment of `up`, as it does from a developer's shell.
        env.setenv(DBNAME_VARIABLE, "yieldsensei")
        try:
            started = time.monotonic()
            services = up(settings, connect=True)
            print(f"fresh up with Connect: {time.monotonic() - started:.1f} s", file=sys.stderr)
            assert [(s.name, s.endpoint, s.state, s.healthy) for s in services] == [
                ("kafka-1", "127.0.0.1:23092", "running", True),
                ("connect", CONNECT_URL, "running", True),
                ("postgres", "127.0.0.1:23432/yieldsensei", "running", True),
            ]
            yield settings
        finally:
            down(settings)


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})


def test_debezium_postgres_plugin_is_listed(stack: Settings) -> None:
    with KafkaConnectClient(CONNECT_URL) as client:
        plugins = client.plugins()
        assert client.list_connectors() == []

    assert {
        "class": "io.debezium.connector.postgresql.PostgresConnector",
        "type": "source",
        "version": "3.6.1.Final",
    } in plugins


def test_internal_topics_are_compacted_with_the_expected_partitions(stack: Settings) -> None:
    admin = _admin(stack)
    metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    internal = [CONNECT_CONFIG_TOPIC, CONNECT_OFFSET_TOPIC, CONNECT_STATUS_TOPIC]
    resources = [ConfigResource("topic", name) for name in internal]
    described = admin.describe_configs(resources).items()
    configs = {r.name: future.result(CLIENT_TIMEOUT_S) for r, future in described}

    found = {
        name: (
            len(metadata.topics[name].partitions),
            {len(p.replicas) for p in metadata.topics[name].partitions.values()},
            configs[name]["cleanup.policy"].value,
        )
        for name in internal
    }
    assert found == {
        "ys-connect-configs": (1, {1}, "compact"),
        "ys-connect-offsets": (5, {1}, "compact"),
        "ys-connect-status": (5, {1}, "compact"),
    }


def test_second_up_is_a_noop(stack: Settings) -> None:
    before = {s.name: s.pid for s in status(stack)}
    start = time.monotonic()
    after = {s.name: s.pid for s in up(stack, connect=True)}
    took = time.monotonic() - start

    assert after == before
    # A no-op is a metadata request, a few REST calls and a PostgreSQL connection: well under a
    # second here; 3 s still separates it from a worker restart (~7 s).
    assert took < 3.0


def test_status_reports_connect_healthy(stack: Settings) -> None:
    services = {s.name: s for s in status(stack)}

    assert list(services) == ["kafka-1", "connect", "postgres"]
    worker = services["connect"]
    assert (worker.state, worker.healthy) == ("running", True)
    assert worker.detail.startswith("Debezium PostgreSQL 3.6.1.Final, ")
    assert worker.pid is not None and Path(f"/proc/{worker.pid}").exists()
    assert worker.rss_bytes is not None and worker.rss_bytes > 0
    print(f"connect idle memory: {worker.rss_bytes / 2**20:.0f} MiB", file=sys.stderr)

    # The command line prints the same, and exits 0 when everything is healthy.
    env = {
        **os.environ,
        "YS_HOME": str(stack.home_dir),
        "YS_LOCAL_KAFKA_PORT": str(stack.local_kafka_port),
        "YS_POSTGRES_PORT": str(stack.postgres_port),
        "YS_CONNECT_URL": CONNECT_URL,
    }
    cli = Path(sys.executable).with_name("ys-platform")
    result = subprocess.run(
        [str(cli), "local", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("connect "))
    assert CONNECT_URL in row and f" {worker.pid} " in row and "ok: Debezium PostgreSQL" in row


def test_debezium_snapshots_a_table_with_a_setting_from_the_environment(stack: Settings) -> None:
    suffix = uuid.uuid4().hex[:8]
    table, name = f"connect_probe_{suffix}", f"probe-{suffix}"
    with psycopg.connect(stack.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, label text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one')")
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": "127.0.0.1",
        "database.port": str(stack.postgres_port),
        "database.user": "yieldsensei",
        # The local cluster trusts loopback, so a wrong password would pass unnoticed; a wrong
        # database name would not, which is what makes this a test of the env config provider.
        "database.dbname": f"${{env:{DBNAME_VARIABLE}}}",
        "topic.prefix": name,
        "table.include.list": f"public.{table}",
        "slot.name": f"probe_{suffix}",
        "publication.name": f"probe_{suffix}",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        # The brokers refuse automatic topic creation; Connect creates the topic from these.
        "topic.creation.default.partitions": "1",
        "topic.creation.default.replication.factor": "1",
    }
    topic = f"{name}.public.{table}"
    with KafkaConnectClient(CONNECT_URL) as client:
        client.put_config(name, config)
        try:
            # Stored as written: the secret stays in the worker's environment, not in Kafka.
            assert client.get_config(name)["database.dbname"] == f"${{env:{DBNAME_VARIABLE}}}"
            value = _first_value(stack, topic)
        finally:
            client.delete(name)

    # Plain JSON (schemas.enable=false): Debezium's envelope with no schema wrapper around it.
    assert "schema" not in value
    assert (value["op"], value["after"]) == ("r", {"id": 1, "label": "one"})
    assert value["source"]["db"] == "yieldsensei"


def _first_value(settings: Settings, topic: str) -> dict[str, object]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"probe-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            # The topic appears only once the snapshot writes to it.
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return dict(json.loads(message.value()))
        raise AssertionError(f"nothing arrived on {topic} within {CLIENT_TIMEOUT_S} s")
    finally:
        consumer.close()


def test_down_stops_connect_first_and_up_brings_it_back(stack: Settings) -> None:
    pid = next(s.pid for s in status(stack) if s.name == "connect")

    down(stack)

    assert pid is not None and not Path(f"/proc/{pid}/cmdline").exists()
    assert not port_open(local_connect.port(stack))
    assert [(s.name, s.state, s.pid) for s in status(stack)] == [
        ("kafka-1", "stopped", None),
        ("connect", "stopped", None),
        ("postgres", "stopped", None),
    ]
    # Kafka without Connect: the worker is opt-in through the Python API.
    assert [s.name for s in up(stack, postgres=False)] == ["kafka-1"]
    start = time.monotonic()
    services = up(stack, postgres=False, connect=True)
    print(f"connect restart: {time.monotonic() - start:.1f} s", file=sys.stderr)
    assert [(s.name, s.healthy) for s in services] == [("kafka-1", True), ("connect", True)]
