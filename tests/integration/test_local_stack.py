"""The local stack against real processes: fresh start, idempotent up, restart keeps data, down.

Each stack here lives in its own temporary state folder on ports of its own, so these tests run
beside a developer's default stack (9092 / 15432) without touching it: a 1-broker one of this
module's, and the session's 3-broker one (conftest ``three_brokers``).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ys_platform.local import LocalStackError, down, kafka_bootstrap, log_path, status, up
from ys_platform.local.state import Layout
from ys_platform.settings import Settings, load_settings

# Fresh 1-broker stack: ~5 s for Kafka (format + start) plus ~3 s for initdb here; a restart
# ~3 s. 3-broker fresh start ~20 s. 120 s leaves room for a slow CI machine.
pytestmark = pytest.mark.timeout(120)

# Away from the defaults (9092, 15432) and from each other: broker i on port+i-1, controller
# on port+100+i-1.
# Below Linux's ephemeral range (32768-60999): a port there can be taken at random by any
# outgoing connection on the machine, and a broker that cannot bind fails the test.
SINGLE = {"local_kafka_port": 21092, "postgres_port": 21432}

# Client requests against a local broker finish in milliseconds; 30 s only bounds a hang.
CLIENT_TIMEOUT_S = 30


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})


def _create_topic(settings: Settings, name: str, partitions: int, rf: int, **configs: str) -> None:
    topic = NewTopic(name, num_partitions=partitions, replication_factor=rf, config=configs)
    admin = _admin(settings)  # held: the future fails if its client is collected first
    admin.create_topics([topic])[name].result(CLIENT_TIMEOUT_S)


def _query(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a 1-broker stack with PostgreSQL in a fresh state folder; not yet started."""
    settings = load_settings(home=tmp_path_factory.mktemp("single") / ".ys", **SINGLE)
    try:
        yield settings
    finally:
        down(settings)


def test_fresh_up_starts_kafka_and_postgres(single: Settings) -> None:
    services = up(single)

    assert [(s.name, s.endpoint, s.state, s.healthy) for s in services] == [
        ("kafka-1", "127.0.0.1:21092", "running", True),
        ("postgres", "127.0.0.1:21432/yieldsensei", "running", True),
    ]
    metadata = _admin(single).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()} == {1: "127.0.0.1:21092"}
    assert _query(single, "SELECT current_user, current_database()") == [
        ("yieldsensei", "yieldsensei")
    ]
    assert _query(single, "SHOW wal_level") == [("logical",)]
    assert _query(single, "SELECT rolreplication FROM pg_roles WHERE rolname = current_user") == [
        (True,)
    ]
    assert log_path(single, "kafka-1").stat().st_size > 0
    assert log_path(single, "postgres").stat().st_size > 0


def test_second_up_is_a_noop(single: Settings) -> None:
    before = {s.name: s.pid for s in up(single)}
    start = time.monotonic()
    after = {s.name: s.pid for s in up(single)}
    took = time.monotonic() - start

    assert after == before
    # A no-op is one metadata request and one PostgreSQL connection: well under a second here;
    # 3 s still separates it from a restart (~3 s of JVM start alone).
    assert took < 3.0


def test_transactions_work_on_one_broker(single: Settings) -> None:
    # The transaction state log needs RF and min.insync that one broker can satisfy.
    up(single)
    name = f"test.local.tx-{uuid.uuid4().hex[:8]}"
    _create_topic(single, name, partitions=1, rf=1)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap(single), "transactional.id": f"tx-{name}"}
    )
    producer.init_transactions(CLIENT_TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(name, key=b"k", value=b"v")
    producer.commit_transaction(CLIENT_TIMEOUT_S)

    # One record plus the transaction's commit marker. commit_transaction returns once the
    # coordinator logged the commit; the marker reaches the partition (and the last stable
    # offset a read_committed consumer sees moves past it) a moment later.
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while (watermarks := _consumer_watermarks(single, name)) != (0, 2):
        assert time.monotonic() < deadline, f"last stable offset stuck at {watermarks}"
        time.sleep(0.1)


def _consumer_watermarks(settings: Settings, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap(settings), "group.id": "wm"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=CLIENT_TIMEOUT_S)
    finally:
        consumer.close()


def test_status_reports_each_service_healthy(single: Settings) -> None:
    up(single)
    services = status(single)

    assert [(s.name, s.state, s.healthy) for s in services] == [
        ("kafka-1", "running", True),
        ("postgres", "running", True),
    ]
    assert services[0].detail.startswith("1 broker(s), ")
    version = str(_query(single, "SHOW server_version")[0][0]).split()[0]
    assert services[1].detail == f"PostgreSQL {version}, wal_level=logical"
    for service in services:
        assert service.pid is not None and Path(f"/proc/{service.pid}").exists()
        assert service.rss_bytes is not None and service.rss_bytes > 0


def test_down_then_up_keeps_topics_and_rows(single: Settings) -> None:
    up(single)
    name = f"test.local.keep-{uuid.uuid4().hex[:8]}"
    _create_topic(single, name, partitions=3, rf=1)
    _query(single, "CREATE TABLE IF NOT EXISTS keep (id text PRIMARY KEY)")
    _query(single, f"INSERT INTO keep VALUES ('{name}')")

    down(single)
    assert [(s.name, s.state, s.pid) for s in status(single)] == [
        ("kafka-1", "stopped", None),
        ("postgres", "stopped", None),
    ]
    up(single)

    topics = _admin(single).list_topics(timeout=CLIENT_TIMEOUT_S).topics
    assert len(topics[name].partitions) == 3
    assert _query(single, f"SELECT id FROM keep WHERE id = '{name}'") == [(name,)]


def test_up_with_another_broker_count_says_to_down_first(single: Settings) -> None:
    # Before the tests that leave the stack down: here `up` finds it running (a restart costs
    # ~9 s on a busy machine).
    up(single)
    with pytest.raises(LocalStackError, match=r"running with 1 broker\(s\).*local down` first"):
        up(single, brokers=3)


def test_down_leaves_a_process_it_did_not_start(single: Settings) -> None:
    """A stale PID file that now names someone else's process: down must not signal it."""
    down(single)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = Layout(single.home_dir).broker_pid(1)
        pid_file.write_text(f"{stranger.pid}\n")

        down(single)

        assert stranger.poll() is None
        assert not pid_file.exists()
        assert status(single)[0].state == "stopped"
    finally:
        stranger.kill()
        stranger.wait()


def test_three_brokers_form_one_cluster_that_takes_rf3_topics(three_brokers: Settings) -> None:
    triple, port = three_brokers, three_brokers.local_kafka_port
    # Already up (the session's stack): up again is a no-op that reports every service.
    services = up(triple, brokers=3, postgres=False, connect=True)

    assert [(s.name, s.endpoint, s.healthy) for s in services] == [
        ("kafka-1", f"127.0.0.1:{port}", True),
        ("kafka-2", f"127.0.0.1:{port + 1}", True),
        ("kafka-3", f"127.0.0.1:{port + 2}", True),
        ("connect", triple.connect_url, True),
    ]
    assert kafka_bootstrap(triple) == f"127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}"
    metadata = _admin(triple).list_topics(timeout=CLIENT_TIMEOUT_S)
    assert sorted(metadata.brokers) == [1, 2, 3]

    name = f"test.local.rf3-{uuid.uuid4().hex[:8]}"
    _create_topic(triple, name, partitions=3, rf=3, **{"min.insync.replicas": "2"})
    partitions = _admin(triple).list_topics(name, timeout=CLIENT_TIMEOUT_S).topics[name].partitions
    assert {p: sorted(meta.replicas) for p, meta in partitions.items()} == {
        0: [1, 2, 3],
        1: [1, 2, 3],
        2: [1, 2, 3],
    }
    producer = Producer({"bootstrap.servers": kafka_bootstrap(triple), "acks": "all"})
    errors: list[object] = []
    producer.produce(name, value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    assert errors == [None]

    # The catalog reconcile gives the topics their full RF 3 (no cap) and min.insync 2.
    from ys_platform.catalog.topics import ALL_TOPICS
    from ys_platform.streaming.topics import apply_plans, describe_topics, plan_topics

    admin = _admin(triple)
    plans = plan_topics(admin, list(ALL_TOPICS))
    assert all(p.replication_factor == 3 and p.warnings == () for p in plans)
    apply_plans(admin, plans)
    # Creation returns when the controller accepted it; metadata reaches the brokers just after.
    deadline = time.monotonic() + CLIENT_TIMEOUT_S
    while len(live := describe_topics(admin, ["defi.transactions", "system.alerts"])) < 2:
        assert time.monotonic() < deadline, "created topics never showed in metadata"
        time.sleep(0.2)
    assert live["defi.transactions"].replication_factor == 3
    assert live["defi.transactions"].partitions == 24
    assert live["system.alerts"].configs["min.insync.replicas"] == "2"

    # Connect on 3 brokers: its internal topics are created with RF 3, so its state (connector
    # configs, source offsets, statuses) survives the loss of a broker.
    from ys_platform.local.config import (
        CONNECT_CONFIG_TOPIC,
        CONNECT_OFFSET_TOPIC,
        CONNECT_STATUS_TOPIC,
    )

    internal = [CONNECT_CONFIG_TOPIC, CONNECT_OFFSET_TOPIC, CONNECT_STATUS_TOPIC]
    live = describe_topics(admin, internal)
    assert {name: live[name].replication_factor for name in internal} == dict.fromkeys(internal, 3)
