"""`ys-platform monitor` as the operator runs it, scraped over HTTP: the catalog's five groups'
lag (a transactional caught-up group lags 0, not 1), the cluster health gauges, and a stopped
catalog group with lag raising one `system.alerts` record — a dead-letter replay group in the
same state raising none.

The five groups are the catalog's under a unique namespace (`--namespace`, as the workers take
it), with offsets committed by hand on the test's own topics; the monitor admits only the
namespace's groups (YS_MONITOR_GROUPS_ALLOW) and labels everything with a cluster name of the
test's own, so the shared cluster's other groups and monitors stay out of the assertions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import NewTopic
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.catalog.codec import decode
from ys_platform.catalog.models import SystemAlert
from ys_platform.catalog.topics import CONSUMER_GROUPS
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.settings import Settings

INTERVAL_S = 0.5
WINDOW = 3
PRICES_RECORDS = 20
ANALYTICS_RECORDS = 5
# Where each catalog group committed: (topic suffix, offset); the vector sink stopped 8 behind.
STOPPED = "vector-sink"
COMMITS = {
    "price-aggregation-processor": ("market.prices", PRICES_RECORDS),
    "crosschain-arbitrage-processor": ("market.prices", PRICES_RECORDS),
    # After 5 transactional records and their commit marker (end offset 6): caught up.
    "risk-assessment-processor": ("market.analytics", ANALYTICS_RECORDS),
    "clickhouse-sink": ("market.prices", PRICES_RECORDS),
    STOPPED: ("market.prices", 12),
}
REPLAY_GROUP = f"{STOPPED}.dlq-replay"
REPLAY_COMMIT = ("market.prices", 10)


@pytest.fixture
def namespace(local_stack: Settings) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    ns = f"t{tag}."
    yield ns
    admin = local_stack.kafka.admin()
    groups = [f"{ns}{g}" for g in [*COMMITS, REPLAY_GROUP]]
    for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
        future.exception(10)
    topics = [f"{ns}market.prices", f"{ns}market.analytics"]
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        future.exception(10)


def _create_topics(connection: KafkaConnection, names: list[str]) -> None:
    admin = connection.admin()
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(30)


def _commit(connection: KafkaConnection, group: str, topic: str, offset: int) -> None:
    consumer = connection.consumer(group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _end_offsets(connection: KafkaConnection, topic: str) -> dict[int, int]:
    consumer = connection.consumer(f"test-wired-ends-{uuid.uuid4().hex[:8]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        assert metadata.error is None, f"{topic} is missing: run `ys-platform topics reconcile`"
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def _alerts_since(connection: KafkaConnection, starts: dict[int, int]) -> list[SystemAlert]:
    """system.alerts from ``starts`` to the end now, read_committed (the consumer's default)."""
    consumer = connection.consumer(
        f"test-wired-alerts-{uuid.uuid4().hex[:8]}", enable_partition_eof=True
    )
    try:
        consumer.assign([TopicPartition("system.alerts", p, o) for p, o in starts.items()])
        found, eof = [], set()
        deadline = time.monotonic() + 20
        while len(eof) < len(starts) and time.monotonic() < deadline:
            for record in consumer.consume(500, timeout=0.5):
                if record.error() is None:
                    found.append(decode("system.alerts", record.value()))
                elif record.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(record.partition())
        assert len(eof) == len(starts), "system.alerts: no end of partitions in 20 s"
        return found
    finally:
        consumer.close()


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _by_group(samples, name: str, **match: str) -> dict[str, float]:
    return {
        labels["group"]: value
        for labels, value in samples.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    }


@pytest.mark.timeout(120)
def test_the_monitor_serves_lag_health_and_raises_a_stopped_group(
    local_stack: Settings, namespace: str
) -> None:
    kafka = local_stack.kafka
    ns = namespace
    prices, analytics = f"{ns}market.prices", f"{ns}market.analytics"
    _create_topics(kafka, [prices, analytics])
    producer = kafka.producer(linger_ms=0)
    for i in range(PRICES_RECORDS):
        producer.produce(prices, b"%d" % i, partition=0)
    assert producer.flush(30) == 0
    transactional = kafka.producer(transactional_id=f"{ns}writer")
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for i in range(ANALYTICS_RECORDS):
        transactional.produce(analytics, b"%d" % i, partition=0)
    transactional.commit_transaction(30)
    for group, (topic, offset) in COMMITS.items():
        _commit(kafka, f"{ns}{group}", f"{ns}{topic}", offset)
    _commit(kafka, f"{ns}{REPLAY_GROUP}", f"{ns}{REPLAY_COMMIT[0]}", REPLAY_COMMIT[1])
    alerts_from = _end_offsets(kafka, "system.alerts")

    port, cluster = free_port(9318, 82), f"test-{ns.strip('.')}"
    env = {
        **os.environ,
        "YS_MONITOR_GROUPS_ALLOW": re.escape(ns) + ".*",
        "YS_MONITOR_CLUSTER_NAME": cluster,
    }
    command = [sys.executable, "-m", "ys_platform.cli", "monitor", "--port", str(port)]
    command += ["--interval", str(INTERVAL_S), "--window", str(WINDOW), "--namespace", ns]
    monitor = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stopped_group = f"{ns}{STOPPED}"
    try:
        deadline = time.monotonic() + 60
        samples: dict = {}
        while True:
            assert monitor.poll() is None, f"the monitor exited: {monitor.communicate()}"
            assert time.monotonic() < deadline, f"no STOP of {stopped_group} in 60 s: {samples}"
            try:
                samples = _scrape(port)
            except OSError:  # not serving yet
                samples = {}
            status = _by_group(samples, "ys_consumergroup_status", status="STOP")
            if status.get(stopped_group) == 1.0:
                break
            time.sleep(INTERVAL_S)
        alerts: list[SystemAlert] = []
        while not [a for a in alerts if a.labels.get("group") == stopped_group]:
            assert time.monotonic() < deadline, f"no alert for {stopped_group}: {alerts}"
            time.sleep(INTERVAL_S)
            alerts = _alerts_since(kafka, alerts_from)
    finally:
        if monitor.poll() is None:
            monitor.send_signal(signal.SIGTERM)
        _out, err = monitor.communicate(timeout=30)

    # A normal stop: exit 0, no traceback, the producer flushed before it said so.
    assert monitor.returncode == 0, err
    assert "Traceback" not in err, err
    assert err.rstrip().endswith("lag monitor stopped"), err

    # Per-partition lag of the catalog's five groups, exact; a marker is not lag.
    lag = _by_group(samples, "kafka_consumergroup_group_lag", cluster_name=cluster, partition="0")
    expected = {f"{ns}{g}": 0.0 for g in COMMITS} | {stopped_group: 8.0}
    assert {g: v for g, v in lag.items() if g != f"{ns}{REPLAY_GROUP}"} == expected
    assert {c.group_id for c in CONSUMER_GROUPS} == set(COMMITS)
    assert lag[f"{ns}{REPLAY_GROUP}"] == 10.0
    bounds = _by_group(samples, "kafka_consumergroup_group_lag_bound_seconds")
    assert bounds == {f"{ns}{c.group_id}": c.lag_bound_s for c in CONSUMER_GROUPS}
    latest = [
        value
        for labels, value in samples["kafka_partition_latest_offset"]
        if labels == {"cluster_name": cluster, "topic": analytics, "partition": "0"}
    ]
    assert latest == [ANALYTICS_RECORDS + 1.0]  # the commit marker's offset
    replay_status = _by_group(samples, "ys_consumergroup_status", status="STOP")
    assert replay_status[f"{ns}{REPLAY_GROUP}"] == 1.0  # shown as it is ...

    # Cluster health beside the lag, under the same cluster name: the local stack's 1 broker.
    cluster_only = {"cluster_name": cluster}
    for name, value in [("ys_kafka_brokers_alive", 1.0), ("ys_kafka_brokers_expected", 1.0)]:
        assert (cluster_only, value) in samples[name], samples.get(name)

    # One raise for the stopped catalog group ...
    mine = [a for a in alerts if a.labels.get("group", "").startswith(ns)]
    assert [
        (a.labels["group"], a.labels["state"], a.labels["status"], a.severity) for a in mine
    ] == [(stopped_group, "raised", "STOP", "critical")]
    assert mine[0].labels["condition"] == f"group-status:{stopped_group}:STOP"
    assert mine[0].labels["cluster_name"] == cluster
    assert "8 records behind" in mine[0].message
    # ... and none for the replay group in the same state (not a catalog group).
