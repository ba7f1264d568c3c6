"""PostgreSQL stopped under a running CDC connector: a `system.alerts` raise within 60 s, a resolve
after the restart, and `system.metrics` snapshots — on a stack of the test's own.

Its own state folder and ports (Kafka, Connect, PostgreSQL): stopping PostgreSQL there leaves the
shared stack alone. The connector is the repository's postgres-source file as shipped, except
for a 2 s heartbeat instead of 10 s: silence then shows after 6 s rather than 30 s, which keeps
the outage well inside Debezium's retry budget (errors.max.retries=5 restarts 10 s apart) so the
task recovers by itself when PostgreSQL is back. The rule (3 intervals) is the same either way.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.catalog.codec import decode
from ys_platform.catalog.models import SystemAlert, SystemMetric
from ys_platform.catalog.topics import ALL_TOPICS
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.connectors import CONNECTORS_DIR, apply, load_connector_file
from ys_platform.local import down, up
from ys_platform.local import postgres as local_postgres
from ys_platform.local.state import Layout
from ys_platform.monitoring.alerts import AlertPublisher, HealthWatch
from ys_platform.monitoring.freshness import cdc_sources, check_freshness
from ys_platform.monitoring.health import HealthScope
from ys_platform.postgres import migrate
from ys_platform.settings import Settings, load_settings
from ys_platform.streaming.topics import apply_plans, plan_topics

PORTS = {"local_kafka_port": 24192, "postgres_port": 24532, "connect_url": "http://127.0.0.1:24183"}
HEARTBEAT_MS = 2000
POLL_S = 1.0
CONDITION = "cdc-silent:postgres-source"


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Settings]:
    for port in (24192, 24292, 24532, 24183):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use"
    # Not under pytest's tmp_path: every pytest session that starts on the machine resets
    # /tmp/pytest-of-<user> to mode 0700, which locks the `postgres` user out of its cluster
    # there (seen here: pg_ctl stop failed with "Permission denied" mid-test).
    home = Path(tempfile.mkdtemp(prefix="ys-cdcsilent-", dir="/tmp"))
    settings = load_settings(home=home / ".ys", **PORTS)
    try:
        with pytest.MonkeyPatch.context() as env:
            # The worker resolves the connector's ${env:YS_CONNECT_PG_*} from its environment.
            env.setenv("YS_CONNECT_PG_HOST", "127.0.0.1")
            env.setenv("YS_CONNECT_PG_PORT", str(settings.postgres_port))
            env.setenv("YS_CONNECT_PG_DBNAME", "yieldsensei")
            env.setenv("YS_CONNECT_PG_USER", "yieldsensei")
            env.setenv("YS_CONNECT_PG_PASSWORD", "unused-loopback-trust")
            services = up(settings, connect=True)
        assert all(s.healthy for s in services), services
        yield settings
    finally:
        down(settings)
        shutil.rmtree(home, ignore_errors=True)


def _read(settings: Settings, topic: str) -> list:
    """Every record of ``topic`` up to its end now."""
    consumer = settings.kafka.consumer(
        f"test-alerts-{uuid.uuid4().hex[:8]}", enable_partition_eof=True
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, eof = [], set()
        deadline = time.monotonic() + 30
        while len(eof) < len(partitions) and time.monotonic() < deadline:
            for record in consumer.consume(500, timeout=0.5):
                if record.error() is None:
                    records.append(decode(topic, record.value()))
                elif record.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(record.partition())
        assert len(eof) == len(partitions), f"{topic}: no end of partitions in 30 s"
        return records
    finally:
        consumer.close()


def _silent_gauge(port: int) -> float:
    """ys_cdc_source_silent of the connector, scraped over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ys_cdc_source_silent"
        and sample.labels == {"cluster_name": "ys-local", "connector": "postgres-source"}
    ]
    return value


def _alerts(settings: Settings) -> list[SystemAlert]:
    return [a for a in _read(settings, "system.alerts") if a.labels.get("condition") == CONDITION]


@pytest.mark.timeout(240)
def test_postgres_outage_raises_then_resolves_cdc_silent(own_stack: Settings) -> None:
    settings = own_stack
    migrate(settings.postgres_conninfo())
    admin = settings.kafka.admin()
    apply_plans(admin, plan_topics(admin, ALL_TOPICS))
    file = load_connector_file(CONNECTORS_DIR / "postgres-source.json").with_config(
        **{"heartbeat.interval.ms": str(HEARTBEAT_MS)}
    )
    with KafkaConnectClient(settings.connect_url) as client:
        result = apply(
            client, file, ensure_topics=lambda s: apply_plans(admin, plan_topics(admin, s))
        )
    assert result.ok, result.message
    sources = cdc_sources([file])
    assert [(s.connector, s.heartbeat_topic, s.heartbeat_interval_s) for s in sources] == [
        ("postgres-source", "__debezium-heartbeat.ys", 2.0)
    ]

    # The monitor starts once the source is fresh, as it is on a running stack.
    deadline = time.monotonic() + 60
    while (fresh := check_freshness(settings.kafka, sources)).error or fresh.heartbeats[0].silent:
        assert time.monotonic() < deadline, f"no heartbeat from the connector: {fresh}"
        time.sleep(POLL_S)
    publisher = AlertPublisher(settings.kafka.producer(), snapshot_every_s=2.0)
    scope = HealthScope(topics=(), groups=(), stores=False)
    watch = HealthWatch(settings, publisher, scope=scope, sources=sources)

    registry = CollectorRegistry()
    for collector in watch.collectors():
        registry.register(collector)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        _outage(settings, watch, server.server_port)
    finally:
        server.shutdown()
        thread.join(10)


def _outage(settings: Settings, watch: HealthWatch, port: int) -> None:
    def poll() -> list[SystemAlert]:
        published = watch.poll()
        assert published is not None and published.pending == 0
        return [a for a in published.alerts if a.labels["condition"] == CONDITION]

    assert poll() == []
    assert _silent_gauge(port) == 0.0
    layout = Layout(settings.home_dir)
    assert local_postgres.down(settings, layout)
    stopped = time.monotonic()
    raised: list[SystemAlert] = []
    while not raised:
        assert time.monotonic() - stopped < 60, "no CDC-silent alert within 60 s of the stop"
        time.sleep(POLL_S)
        raised = poll()
    raised_after = time.monotonic() - stopped
    assert [a.labels["state"] for a in raised] == ["raised"]
    assert watch.publisher is not None
    assert watch.publisher.tracker.active[CONDITION].alert_id == raised[0].alert_id
    assert _silent_gauge(port) == 1.0
    # Another poll while still down: no second raise.
    assert poll() == []

    local_postgres.up(settings, layout)
    restarted = time.monotonic()
    resolved: list[SystemAlert] = []
    while not resolved:
        # Debezium restarts its task 10 s after each failed attempt, then heartbeats again.
        assert time.monotonic() - restarted < 90, "CDC-silent not resolved 90 s after restart"
        time.sleep(POLL_S)
        resolved = poll()
    assert [a.labels["state"] for a in resolved] == ["resolved"]
    assert _silent_gauge(port) == 0.0

    on_topic = _alerts(settings)
    assert [(a.alert_id, a.labels["state"], a.severity) for a in on_topic] == [
        (raised[0].alert_id, "raised", "critical"),
        (raised[0].alert_id, "resolved", "critical"),
    ]
    assert raised_after < 60
    # PostgreSQL itself was down too: its health raised and resolved once as well.
    postgres = [
        a.labels["state"]
        for a in _read(settings, "system.alerts")
        if a.labels.get("condition") == "health:postgres"
    ]
    assert postgres == ["raised", "resolved"]

    silent = [
        m.value
        for m in _read(settings, "system.metrics")
        if isinstance(m, SystemMetric)
        and m.name == "ys_cdc_source_silent"
        and m.labels == {"cluster_name": "ys-local", "connector": "postgres-source"}
    ]
    assert silent[0] == 0.0 and 1.0 in silent and silent[-1] == 0.0, silent
