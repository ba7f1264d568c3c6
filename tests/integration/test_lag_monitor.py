"""The lag monitor against the real broker: offset lag, time lag, Burrow status, markers, scrape.

Each test has its own topic and groups (a unique prefix) and a monitor that admits only them,
polled by hand so the windows and tables are exact.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.clients.kafka import KafkaConnection, next_offsets
from ys_platform.monitoring import (
    GroupFilter,
    LagCollector,
    LagReader,
    LagSnapshot,
    LagTracker,
    Monitor,
    Status,
    build_registry,
    serve_metrics,
)
from ys_platform.settings import Settings

WINDOW = 4
INTERVAL_S = 0.5


@pytest.fixture
def prefix(local_stack: Settings) -> Iterator[str]:
    """A unique name prefix; the test's topics and groups are deleted afterwards."""
    name = f"test-lag-{uuid.uuid4().hex[:8]}"
    yield name
    admin = local_stack.kafka.admin()
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(name)]
    groups = [
        g.group_id
        for g in admin.list_consumer_groups(request_timeout=10).result().valid
        if g.group_id.startswith(name)
    ]
    for future in (admin.delete_consumer_groups(groups) if groups else {}).values():
        future.exception(10)
    for future in (admin.delete_topics(topics) if topics else {}).values():
        future.exception(10)


def create_topic(connection: KafkaConnection, name: str, partitions: int = 1) -> None:
    admin = connection.admin()
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)
    deadline = time.monotonic() + 15
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} not visible"
        time.sleep(0.1)


def monitor_of(settings: Settings, prefix: str, listeners=()) -> Monitor:
    reader = LagReader(settings.kafka, GroupFilter.of((), allow=re.escape(prefix) + ".*"))
    return Monitor(reader, LagTracker("test", {}, window=WINDOW), INTERVAL_S, listeners)


def produce(connection: KafkaConnection, topic: str, count: int, partition: int = 0) -> None:
    producer = connection.producer(linger_ms=0)
    for i in range(count):
        producer.produce(topic, b"%d" % i, partition=partition)
    assert producer.flush(30) == 0


def consume_and_commit(
    connection: KafkaConnection, group: str, topic: str, count: int, partition: int = 0
) -> list:
    """Read ``count`` records from the start (read_committed), commit past them, leave."""
    consumer = connection.consumer(group, enable_partition_eof=True)
    records: list = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            for record in consumer.consume(count - len(records), timeout=0.5):
                if record.error() is None:
                    records.append(record)
        assert len(records) == count, f"read {len(records)} of {count}"
        consumer.commit(offsets=next_offsets(records), asynchronous=False)
    finally:
        consumer.close()
    return records


def commit(connection: KafkaConnection, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = connection.consumer(group)
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def polls(monitor: Monitor, count: int) -> list[LagSnapshot]:
    snapshots = []
    for i in range(count):
        if i:
            time.sleep(INTERVAL_S)
        snapshots.append(monitor.poll())
    return snapshots


class SteadyProducer(threading.Thread):
    """Writes one record every 1/rate s to partition 0, stamped with its produce time."""

    def __init__(self, connection: KafkaConnection, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.connection, self.topic, self.rate = connection, topic, rate
        self.stop = threading.Event()
        self.produced = 0

    def run(self) -> None:
        producer = self.connection.producer(linger_ms=0)
        next_at = time.time()
        while not self.stop.is_set():
            wait = next_at - time.time()
            if wait > 0:
                self.stop.wait(wait)
                continue
            stamp = int(time.time() * 1000)
            producer.produce(self.topic, b"%d" % self.produced, partition=0, timestamp=stamp)
            producer.poll(0)
            self.produced += 1
            next_at += 1.0 / self.rate
        assert producer.flush(30) == 0

    def finish(self) -> int:
        self.stop.set()
        self.join(30)
        return self.produced


def record_time(connection: KafkaConnection, topic: str, offset: int) -> float:
    """The timestamp (s) of the record at ``offset`` of partition 0."""
    consumer = connection.consumer(f"test-reader-{uuid.uuid4().hex[:8]}")
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and record.error() is None:
                assert record.offset() == offset
                return record.timestamp()[1] / 1000.0
        raise AssertionError(f"no record at {topic}[0]@{offset}")
    finally:
        consumer.close()


def test_stopped_group_lags_exactly_then_stops(local_stack: Settings, prefix: str) -> None:
    kafka = local_stack.kafka
    topic, group, consumed = f"{prefix}-prices", f"{prefix}-stopped", 30
    create_topic(kafka, topic)
    producer = SteadyProducer(kafka, topic, rate=40.0)
    producer.start()
    monitor = monitor_of(local_stack, prefix)
    try:
        while producer.produced < consumed + 10:
            time.sleep(0.05)
        consume_and_commit(kafka, group, topic, consumed)
        snapshots = polls(monitor, WINDOW + 1)
        written = record_time(kafka, topic, consumed)
        produced = producer.finish()
        final = monitor.poll()
    finally:
        producer.finish()
        monitor.close()

    for snapshot in [*snapshots, final]:
        [p] = snapshot.group(group).partitions
        latest = snapshot.offsets[topic, 0].latest
        assert (p.committed, p.lag) == (consumed, latest - consumed)
        assert p.owner is None
    [p] = final.group(group).partitions
    assert final.offsets[topic, 0].latest == produced
    assert p.lag == produced - consumed

    # Time lag: absent on the first poll (one table point), then the age of record 30.
    assert snapshots[0].group(group).partitions[0].lag_seconds is None
    last = snapshots[-1]
    estimate = last.group(group).partitions[0].lag_seconds
    age = last.at - written
    assert estimate is not None
    assert abs(estimate - age) <= 0.1 * age, (estimate, age)

    # Burrow: the window fills over WINDOW polls; one poll later nothing was committed for
    # longer than its span, and nobody owns the partition: STOP.
    statuses = [s.group(group).status for s in snapshots]
    assert statuses == [Status.OK] * WINDOW + [Status.STOP]
    assert final.group(group).status is Status.STOP


def test_group_before_its_first_commit_lags_from_the_start(
    local_stack: Settings, prefix: str
) -> None:
    """A catalog group that has not committed yet (a fresh stack) shows the lag a new member
    starts with: every record of its input partitions (auto.offset.reset=earliest)."""
    kafka = local_stack.kafka
    topic, group, other = f"{prefix}-fresh", f"{prefix}-fresh-group", f"{prefix}-half"
    create_topic(kafka, topic, partitions=2)
    produce(kafka, topic, 25, partition=0)
    produce(kafka, topic, 7, partition=1)
    # A group that committed partition 0 only: partition 1 still counts from its start.
    consume_and_commit(kafka, other, topic, 25, partition=0)
    reader = LagReader(
        kafka,
        GroupFilter.of([group, other], allow=r"(?!)"),
        inputs={group: [topic], other: [topic]},
    )
    monitor = Monitor(reader, LagTracker("test", {group: 30.0}, window=WINDOW), INTERVAL_S)
    try:
        snapshot = monitor.poll()
    finally:
        monitor.close()

    fresh = snapshot.group(fresh_id := group)
    rows = {(p.topic, p.partition): (p.committed, p.lag) for p in fresh.partitions}
    assert rows == {(topic, 0): (0, 25), (topic, 1): (0, 7)}, fresh_id
    assert fresh.sum_lag == 32
    assert fresh.status is Status.NOTFOUND  # nobody ran it: not STOP, not OK
    half = snapshot.group(other)
    rows = {(p.topic, p.partition): (p.committed, p.lag) for p in half.partitions}
    assert rows == {(topic, 0): (25, 0), (topic, 1): (0, 7)}
    assert half.sum_lag == 7


def test_idle_fully_consumed_group_is_ok(local_stack: Settings, prefix: str) -> None:
    kafka = local_stack.kafka
    topic, group = f"{prefix}-idle", f"{prefix}-idle-group"
    create_topic(kafka, topic)
    produce(kafka, topic, 20)
    consume_and_commit(kafka, group, topic, 20)
    monitor = monitor_of(local_stack, prefix)
    try:
        snapshots = polls(monitor, WINDOW + 2)
    finally:
        monitor.close()
    for snapshot in snapshots:
        state = snapshot.group(group)
        [p] = state.partitions
        assert (p.committed, p.lag, p.lag_seconds) == (20, 0, 0.0)
        assert state.status is Status.OK
        assert p.status is Status.OK


def test_rewind_after_an_offsets_reset(local_stack: Settings, prefix: str) -> None:
    kafka = local_stack.kafka
    topic, group = f"{prefix}-replay", f"{prefix}-replayer"
    create_topic(kafka, topic)
    produce(kafka, topic, 30)
    consume_and_commit(kafka, group, topic, 30)
    monitor = monitor_of(local_stack, prefix)
    try:
        before = polls(monitor, 2)
        # What `groups reset-offsets --to-earliest` does: the admin API, the group empty.
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 0)])]
        admin = kafka.admin()  # kept: a collected client never completes its futures
        for future in admin.alter_consumer_group_offsets(request).values():
            future.result(10)
        after = monitor.poll()
    finally:
        monitor.close()
    assert [s.group(group).status for s in before] == [Status.OK, Status.OK]
    [p] = after.group(group).partitions
    assert (p.committed, p.lag, p.status) == (0, 30, Status.REWIND)
    assert after.group(group).status is Status.REWIND


def test_transaction_markers_are_not_lag(local_stack: Settings, prefix: str) -> None:
    kafka = local_stack.kafka
    topic = f"{prefix}-tx"
    create_topic(kafka, topic)
    producer = kafka.producer(transactional_id=f"{prefix}-tx", linger_ms=0)
    producer.init_transactions(30)
    # Offsets: 0-9 records, 10 commit marker, 11-20 records, 21 commit marker,
    # 22-26 aborted records, 27 abort marker: high watermark 28, 20 readable records.
    for count, commit_it in ((10, True), (10, True), (5, False)):
        producer.begin_transaction()
        for i in range(count):
            producer.produce(topic, b"%d" % i, partition=0)
        producer.flush(30)
        if commit_it:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    done = f"{prefix}-done"
    records = consume_and_commit(kafka, done, topic, 20)
    assert records[-1].offset() == 20  # committed 21: naively a lag of 7 (markers, aborts)
    commit(kafka, f"{prefix}-at-5", topic, {0: 5})
    commit(kafka, f"{prefix}-at-marker", topic, {0: 10})

    monitor = monitor_of(local_stack, prefix)
    try:
        snapshots = polls(monitor, 2)
        # A transaction left open: its records are past the last stable offset, not lag yet.
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, b"open %d" % i, partition=0)
        producer.flush(30)
        open_tx = monitor.poll()
        producer.abort_transaction(30)
    finally:
        monitor.close()

    offsets = snapshots[-1].offsets[topic, 0]
    assert (offsets.latest, offsets.stable) == (28, 28)
    for snapshot in snapshots:
        [p] = snapshot.group(done).partitions
        assert (p.committed, p.lag, p.lag_seconds, p.status) == (21, 0, 0.0, Status.OK)
    # Exact counts past markers and aborted records: 5-9 and 11-20; 11-20.
    assert snapshots[-1].group(f"{prefix}-at-5").partitions[0].lag == 15
    assert snapshots[-1].group(f"{prefix}-at-marker").partitions[0].lag == 10
    assert open_tx.offsets[topic, 0].latest == 31
    assert open_tx.offsets[topic, 0].stable == 28
    assert open_tx.group(done).partitions[0].lag == 0


def scrape(url: str) -> dict:
    text = httpx.get(url, timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_scrape_of_the_endpoint(local_stack: Settings, prefix: str) -> None:
    kafka = local_stack.kafka
    topic, group = f"{prefix}-scrape", f"{prefix}-scraped"
    create_topic(kafka, topic, partitions=2)
    produce(kafka, topic, 10, partition=0)
    produce(kafka, topic, 6, partition=1)
    commit(kafka, group, topic, {0: 4, 1: 6})
    collector = LagCollector()
    monitor = monitor_of(local_stack, prefix, [collector])
    server = serve_metrics(build_registry([collector]), free_port(20000, 10000))
    try:
        first = monitor.poll()
        produce(kafka, topic, 10, partition=0)
        time.sleep(INTERVAL_S)
        second = monitor.poll()
        families = scrape(server.url)
    finally:
        server.close()
        monitor.close()

    base = {"cluster_name": "test", "group": group, "topic": topic}
    members = {"member_host": "", "consumer_id": "", "client_id": ""}

    def samples(name: str) -> dict:
        return {
            tuple(sorted(s.labels.items())): s.value
            for s in families[name].samples
            if s.labels.get("group", group) == group and s.labels.get("topic", topic) == topic
        }

    def key(**labels: str) -> tuple:
        return tuple(sorted(labels.items()))

    p0 = key(**base, partition="0", **members)
    p1 = key(**base, partition="1", **members)
    assert samples("kafka_consumergroup_group_lag") == {p0: 16.0, p1: 0.0}
    assert samples("kafka_consumergroup_group_offset") == {p0: 4.0, p1: 6.0}
    # p0's table: (10, t1), (20, t2); offset 4 extrapolated on that line: t1 - 0.6 (t2 - t1).
    t1, t2 = first.at, second.at
    seconds = samples("kafka_consumergroup_group_lag_seconds")
    assert seconds[p0] == pytest.approx(t2 - (t1 - 0.6 * (t2 - t1)), abs=1e-3)
    assert seconds[p1] == 0.0
    group_labels = {"cluster_name": "test", "group": group}
    assert samples("kafka_consumergroup_group_max_lag") == {
        key(**group_labels, is_simple_consumer="true"): 16.0
    }
    assert samples("kafka_consumergroup_group_max_lag_seconds") == {
        key(**group_labels, is_simple_consumer="true"): pytest.approx(seconds[p0])
    }
    assert samples("kafka_consumergroup_group_sum_lag") == {key(**group_labels): 16.0}
    assert samples("kafka_consumergroup_group_topic_sum_lag") == {
        key(**group_labels, topic=topic): 16.0
    }
    assert samples("kafka_partition_latest_offset") == {
        key(cluster_name="test", topic=topic, partition="0"): 20.0,
        key(cluster_name="test", topic=topic, partition="1"): 6.0,
    }
    status = samples("ys_consumergroup_status")
    assert status[key(**group_labels, status="OK")] == 1.0
    assert sum(status.values()) == 1.0
    assert families["kafka_consumergroup_poll_timestamp_seconds"].samples[0].value == t2


def wait_for_metrics(child: subprocess.Popen, port: int) -> dict:
    """The first scrape of a starting monitor that has polled once."""
    deadline = time.monotonic() + 60
    while True:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the monitor did not serve within 60 s"
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            families = scrape(f"http://127.0.0.1:{port}/metrics")
            if "ys_consumergroup_status" in families:
                return families
        time.sleep(0.2)


def test_monitor_command_serves_and_stops_on_ctrl_c(
    local_stack: Settings, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ys_platform.catalog.topics import CONSUMER_GROUPS
    from ys_platform.devserver import start_monitor, stop_monitor

    port = free_port(20000, 10000)
    dev_port = free_port(20000, 10000, besides={port})
    env = {**os.environ, "YS_MONITOR_PORT": str(port), "YS_MONITOR_INTERVAL_S": "0.5"}
    command = [sys.executable, "-m", "ys_platform.cli", "monitor"]
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # The one `ys-platform dev` starts beside Dagster (from the environment), stopped as it does.
    monkeypatch.setenv("YS_MONITOR_PORT", str(dev_port))
    dev_child = start_monitor(local_stack.model_copy(update={"monitor_port": dev_port}))
    try:
        families = wait_for_metrics(child, port)
        wait_for_metrics(dev_child, dev_port)
    finally:
        child.send_signal(signal.SIGINT)
        stop_monitor(dev_child)
        _, err = child.communicate(timeout=30)
    served = {s.labels["group"] for s in families["ys_consumergroup_status"].samples}
    assert {g.group_id for g in CONSUMER_GROUPS} <= served
    bounds = {
        s.labels["group"]: s.value
        for s in families["kafka_consumergroup_group_lag_bound_seconds"].samples
    }
    assert bounds == {g.group_id: g.lag_bound_s for g in CONSUMER_GROUPS}
    assert child.returncode == 0, err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/metrics" in err
    assert dev_child.returncode == 0
