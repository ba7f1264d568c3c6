"""`ys-platform health` against the running stack, and the cluster gauges on a 3-broker stack.

The healthy case reads the shared stack (YS_HOME) as it is. The unhealthy cases never stop a
shared service: they point settings at closed ports, or kill a broker of the session's 3-broker
stack (conftest ``three_brokers``, its own state folder and ports), restarted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.catalog.topics import ALL_TOPICS, CONSUMER_GROUPS
from ys_platform.cli import main
from ys_platform.local.kafka import running_pid
from ys_platform.local.state import Layout
from ys_platform.monitoring.health import (
    HealthCollector,
    HealthScope,
    check_groups,
    check_health,
)
from ys_platform.settings import Settings

# Away from the shared stack (9092, 15432, 8083), test_local_stack's (21xxx), the 3-broker
# stack's (26xxx) and test_cli's closed ports (25432, 28083, 29392); below the ephemeral range.
CLOSED_PORT = 23999


def _closed(port: int) -> int:
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use; pick another"
    return port


@pytest.mark.timeout(120)
def test_health_is_ok_on_the_running_stack(local_stack: Settings, capsys) -> None:
    code = main(["health", "--json"])
    document = json.loads(capsys.readouterr().out)

    failing = [c for c in document["components"] if not c["ok"]]
    assert code == 0, f"unhealthy: {failing}"
    assert document["ok"] is True
    names = [c["name"] for c in document["components"]]
    expected = ["kafka brokers", "kafka controller", "kafka partitions"]
    expected += [f"topic {t.name}" for t in ALL_TOPICS]
    expected += ["connect", "connector postgres-source", "connector postgres-source task 0"]
    expected += ["postgres", "replication slot ys_postgres_source", "clickhouse", "qdrant"]
    expected += [f"group {g.group_id}" for g in CONSUMER_GROUPS]
    # Other tests may have connectors of their own on the shared worker for a moment.
    assert [n for n in names if not n.startswith("connector pg-cdc-")] == expected
    brokers = next(c for c in document["components"] if c["name"] == "kafka brokers")
    assert brokers["detail"].startswith("1 of 1 alive")
    # Each catalog group: its state, members and marker-aware lag (or that it never ran here).
    line = re.compile(
        r"no committed offsets \(never ran\)|[A-Z_]+, \d+ member\(s\), lag \d+ on \d+ "
        r"partition\(s\)(: over 200000 records, behind or stopped .*)?"
    )
    for component in document["components"]:
        if component["kind"] == "group":
            assert line.fullmatch(component["detail"]), component
            assert component["warn"] == ("over 200000" in component["detail"]), component


def test_group_lines_count_lag_past_markers_and_warn_over_the_bound(local_stack: Settings) -> None:
    connection = local_stack.kafka
    tag = uuid.uuid4().hex[:8]
    topic = f"t{tag}.health-groups"
    ids = [f"t{tag}.health-done", f"t{tag}.health-behind", f"t{tag}.health-never"]
    admin = connection.admin()
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        producer = connection.producer(transactional_id=f"t{tag}.health-writer")
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, b"%d" % i, partition=0)
        producer.commit_transaction(30)  # records 0-4, the marker at 5
        for group_id, offset in zip(ids[:2], (5, 2), strict=True):
            committer = connection.consumer(group_id)
            committer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            committer.close()

        groups = check_groups(connection, ids, warn_above=2)
        lines = [(g.component().ok, g.component().warn, g.component().detail) for g in groups]
        assert lines == [
            (True, False, "EMPTY, 0 member(s), lag 0 on 1 partition(s)"),
            (
                True,
                True,
                "EMPTY, 0 member(s), lag 3 on 1 partition(s): over 2 records, behind or "
                "stopped (`ys-platform monitor` tells which, in seconds)",
            ),
            (True, False, "no committed offsets (never ran)"),
        ]
    finally:
        for future in admin.delete_consumer_groups(ids[:2]).values():
            future.exception(10)
        admin.delete_topics([topic])[topic].exception(10)


@pytest.mark.timeout(120)
# qdrant-client warns that a server it cannot reach has no version to check: that is the point.
@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_health_fails_naming_each_component_that_is_down(
    local_stack: Settings, capsys, monkeypatch
) -> None:
    port = _closed(CLOSED_PORT)
    monkeypatch.setenv("YS_CONNECT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("YS_QDRANT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("YS_CLICKHOUSE_URL", f"http://127.0.0.1:{port}")

    code = main(["health"])
    out = capsys.readouterr().out.splitlines()

    assert code == 1
    failed = [line.split()[1] for line in out if line.startswith("FAIL")]
    assert failed == ["connect", "clickhouse", "qdrant"]
    assert any(line.startswith("ok    postgres ") for line in out)
    assert any(line.startswith("ok    kafka brokers ") for line in out)
    connect = next(line for line in out if line.startswith("FAIL  connect"))
    assert f"http://127.0.0.1:{port} is not ready" in connect
    assert out[-1].startswith(f"{len(out) - 1 - 3} of {len(out) - 1} healthy")


# --- 3 brokers, one killed -----------------------------------------------------------------------
def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    # The cluster-wide gauges, which carry only the cluster's name.
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels == {"cluster_name": "ys-local"}
    }


# The first user of the session's 3-broker stack pays its start (~45 s in CI, 93 s measured on
# an overloaded machine), and the restore after the kill (13-30 s) counts too: 240 s bounds a hang.
@pytest.mark.timeout(240)
def test_a_killed_broker_shows_in_the_scraped_gauges(restored_brokers: Settings) -> None:
    triple = restored_brokers
    admin = triple.kafka.admin()
    name = f"test.health.rf3-{uuid.uuid4().hex[:8]}"
    topic = NewTopic(
        name, num_partitions=6, replication_factor=3, config={"min.insync.replicas": "2"}
    )
    admin.create_topics([topic])[name].result(30)

    scope = HealthScope(topics=(), groups=(), connect=False, postgres=False, stores=False)
    registry = CollectorRegistry()
    registry.register(HealthCollector(lambda: check_health(triple, scope)))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_port
    try:
        deadline = time.monotonic() + 30
        while (before := _scrape(port))["ys_kafka_partitions_under_replicated"] != 0:
            assert time.monotonic() < deadline, f"never fully replicated: {before}"
            time.sleep(0.5)
        assert before["ys_kafka_brokers_alive"] == 3
        assert before["ys_kafka_brokers_expected"] == 3
        assert before["ys_kafka_partitions_offline"] == 0
        assert before["ys_kafka_controller_active"] == 1

        pid = running_pid(Layout(triple.home_dir), 3)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The controllers fence a broker that stops heartbeating after broker.session.timeout.ms
        # (9 s) and shrink the ISRs it was in; 60 s bounds that on a loaded machine.
        deadline = time.monotonic() + 60
        while True:
            after = _scrape(port)
            if (
                after["ys_kafka_brokers_alive"] == 2
                and after["ys_kafka_partitions_under_replicated"] > 0
            ):
                break
            assert time.monotonic() < deadline, f"broker loss not visible: {after}"
            time.sleep(1)
        assert after["ys_kafka_brokers_expected"] == 3
        # Every partition of the RF 3 topic had a replica on broker 3; the internal topics too.
        assert after["ys_kafka_partitions_under_replicated"] >= 6
        # Two replicas of three stay in sync: at min.insync.replicas, not under it.
        assert after["ys_kafka_partitions_under_min_isr"] == 0
        assert after["ys_kafka_partitions_offline"] == 0
        assert after["ys_kafka_controller_active"] == 1
    finally:
        server.shutdown()
        thread.join(10)
