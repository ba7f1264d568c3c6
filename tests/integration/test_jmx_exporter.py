"""The JMX exporter agent on real brokers and a real Connect worker: the names and values the
alert rules read, from a scrape, before and after a broker dies.

The stack is the session's 3-broker one (conftest ``three_brokers``: its own state folder and
ports, the exporters' base port set by YS_LOCAL_JMX_EXPORTER_PORT), so it runs beside the
developer's stack without touching it; the broker killed here is restarted afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.local import jmx_exporter, kafka_bootstrap, status
from ys_platform.local.state import Layout
from ys_platform.monitoring import names
from ys_platform.settings import JMX_EXPORTER_PORT_OFFSET, Settings

# Measured here: a fresh 3-broker quorum ~20 s and the Connect worker ~15 s on 2 busy cores
# (when this module is the session stack's first user); the fenced broker shows as
# under-replicated ~10 s after it dies, and its restart takes ~15 s. 240 s bounds a hang.
pytestmark = pytest.mark.timeout(240)

# Client requests against a local broker finish in milliseconds; 30 s only bounds a hang.
CLIENT_TIMEOUT_S = 30
# KRaft fences a broker after broker.session.timeout.ms (9 s) without a heartbeat, which takes
# it out of every ISR; 60 s leaves room for a loaded machine.
FENCE_TIMEOUT_S = 60
RECORDS = 250

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    response = httpx.get(jmx_exporter.metrics_url(port), timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in the scrape: {sorted({n for n, _ in samples})}"
    return samples[key]


def broker_metrics(stack: Settings) -> dict[int, int]:
    """The exporter port of each broker: YS_LOCAL_JMX_EXPORTER_PORT + node id - 1."""
    base = stack.local_jmx_exporter_port
    # Set, not derived from the Kafka port: the variable must move the exporters.
    assert base is not None and base != stack.local_kafka_port + JMX_EXPORTER_PORT_OFFSET
    return {1: base, 2: base + 1, 3: base + 2}


def connect_metrics(stack: Settings) -> int:
    """The Connect worker's exporter port: YS_LOCAL_JMX_EXPORTER_PORT + 9."""
    assert stack.local_jmx_exporter_port is not None
    return stack.local_jmx_exporter_port + 9


@pytest.fixture
def stack(three_brokers: Settings) -> Settings:
    return three_brokers


@pytest.fixture(scope="module")
def topic(three_brokers: Settings) -> str:
    """A topic of RF 3 holding RECORDS records, produced with acks=all."""
    name = f"test.jmx.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(three_brokers)})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3)])[name].result(
        CLIENT_TIMEOUT_S
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap(three_brokers), "acks": "all"})
    for i in range(RECORDS):
        producer.produce(name, value=f"record-{i}".encode())
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    return name


def test_status_and_the_scrape_targets_show_each_exporter(stack: Settings) -> None:
    exporters, connect_exporter = broker_metrics(stack), connect_metrics(stack)
    services = {s.name: s.metrics for s in status(stack)}
    assert services == {
        **{f"kafka-{n}": jmx_exporter.metrics_url(port) for n, port in exporters.items()},
        "connect": jmx_exporter.metrics_url(connect_exporter),
        "postgres": "",
    }
    folder = Layout(stack.home_dir).prometheus_targets
    assert json.loads((folder / "kafka.json").read_text()) == [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"broker": str(n)}}
        for n, port in exporters.items()
    ]
    assert json.loads((folder / "kafka-connect.json").read_text()) == [
        {"targets": [f"127.0.0.1:{connect_exporter}"]}
    ]


def test_brokers_export_what_the_alert_rules_read(stack: Settings, topic: str) -> None:
    exporters = broker_metrics(stack)
    scrapes = {n: scrape(port) for n, port in exporters.items()}

    # Exactly one KRaft controller is active (NoActiveController), none offline, all replicated.
    controllers = [value(s, names.KAFKA_ACTIVE_CONTROLLER_COUNT) for s in scrapes.values()]
    assert sorted(controllers) == [0.0, 0.0, 1.0]
    assert [value(s, names.KAFKA_UNDER_REPLICATED_PARTITIONS) for s in scrapes.values()] == [
        0.0
    ] * 3
    assert [value(s, names.KAFKA_OFFLINE_PARTITIONS_COUNT) for s in scrapes.values()] == [0.0] * 3
    assert [value(s, names.KAFKA_UNDER_MIN_ISR_PARTITIONS) for s in scrapes.values()] == [0.0] * 3
    # Throughput: the topic's one leader appended every record, and counted its bytes.
    appended = [
        s.get((names.KAFKA_MESSAGES_IN_TOTAL, frozenset({("topic", topic)})), 0.0)
        for s in scrapes.values()
    ]
    assert sorted(appended) == [0.0, 0.0, float(RECORDS)]
    leader = next(n for n, s in scrapes.items() if appended[n - 1] == RECORDS)
    assert value(scrapes[leader], names.KAFKA_BYTES_IN_TOTAL, topic=topic) > RECORDS * len(
        "record-0"
    )
    assert value(scrapes[leader], names.KAFKA_BYTES_IN_TOTAL) >= value(
        scrapes[leader], names.KAFKA_BYTES_IN_TOTAL, topic=topic
    )
    # The exporter's own JVM metrics come along (heap, GC) for the resource dashboards.
    assert value(scrapes[1], "jvm_memory_used_bytes", area="heap") > 0


def test_connect_exports_its_worker_metrics(stack: Settings) -> None:
    samples = scrape(connect_metrics(stack))
    assert value(samples, names.KAFKA_CONNECT_WORKER_CONNECTOR_COUNT) == 0.0
    assert value(samples, names.KAFKA_CONNECT_WORKER_TASK_COUNT) == 0.0


def test_a_dead_broker_stops_answering_and_its_replicas_show_under_replicated(
    restored_brokers: Settings, topic: str
) -> None:
    stack, exporters = restored_brokers, broker_metrics(restored_brokers)
    (victim,) = [s for s in status(stack) if s.name == "kafka-3"]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)

    deadline = time.monotonic() + FENCE_TIMEOUT_S
    while True:
        survivors = [scrape(exporters[n]) for n in (1, 2)]
        under = sum(value(s, names.KAFKA_UNDER_REPLICATED_PARTITIONS) for s in survivors)
        if under > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    # Every partition with a replica on broker 3 is now short of it: at least the test topic's.
    assert under >= 1
    # BrokerDown reads the failed scrape: nothing answers on the dead broker's exporter port.
    with pytest.raises(httpx.ConnectError):
        scrape(exporters[3])
    # The quorum of 2 still has one active controller.
    assert sum(value(s, names.KAFKA_ACTIVE_CONTROLLER_COUNT) for s in survivors) == 1.0
