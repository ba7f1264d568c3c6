"""The simulator published to the local broker and read back: every record arrives exactly once,
on its catalog topic, with the codec's key and headers and its event time as timestamp."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from ys_platform.catalog.codec import decode, encode, timestamp_ms, topic_of
from ys_platform.catalog.topics import ALL_TOPICS
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.settings import Settings
from ys_platform.sources.publish import fill_topic, publish, run_simulation
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.topics import apply_plans, plan_topics

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 60.0
Record = tuple[str, bytes | None, bytes]  # topic, key, value


@pytest.fixture(scope="module")
def connection(local_stack: Settings) -> KafkaConnection:
    connection = local_stack.kafka
    admin = connection.admin()
    apply_plans(admin, plan_topics(admin, list(ALL_TOPICS)))  # idempotent
    return connection


def _end_offsets(connection: KafkaConnection, topics: list[str]) -> list[TopicPartition]:
    """The current end of every partition of ``topics``: where our records will start."""
    consumer = connection.consumer(f"test-sim-offsets-{uuid.uuid4().hex}")
    try:
        metadata = consumer.list_topics(timeout=30)
        ends = []
        for topic in topics:
            for partition in sorted(metadata.topics[topic].partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
                ends.append(TopicPartition(topic, partition, high))
        return ends
    finally:
        consumer.close()


def _read_back(
    connection: KafkaConnection, start: list[TopicPartition]
) -> list[tuple[Record, int, list[tuple[str, bytes]]]]:
    """Every record from ``start`` to the partitions' current end, read committed."""
    ends = {(tp.topic, tp.partition): high for tp, high in _highs(connection, start)}
    consumer = connection.consumer(f"test-sim-{uuid.uuid4().hex}", isolation_level="read_committed")
    records = []
    try:
        consumer.assign(start)
        deadline = time.monotonic() + READ_TIMEOUT_S
        pending = [tp for tp in start if ends[(tp.topic, tp.partition)] > tp.offset]
        while pending:
            assert time.monotonic() < deadline, f"partitions not read to their end: {pending}"
            for record in consumer.consume(num_messages=1_000, timeout=1.0):
                assert record.error() is None, record.error()
                if record.offset() < ends[(record.topic(), record.partition())]:
                    records.append(
                        (
                            (record.topic(), record.key(), record.value()),
                            record.timestamp()[1],
                            record.headers() or [],
                        )
                    )
            # The position (next offset to fetch) also steps over transaction markers.
            pending = [
                tp
                for tp in consumer.position(pending)
                if tp.offset < ends[(tp.topic, tp.partition)]
            ]
    finally:
        consumer.close()
    return records


def _highs(
    connection: KafkaConnection, partitions: list[TopicPartition]
) -> list[tuple[TopicPartition, int]]:
    consumer = connection.consumer(f"test-sim-offsets-{uuid.uuid4().hex}")
    try:
        return [
            (tp, consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 30)[1])
            for tp in partitions
        ]
    finally:
        consumer.close()


def test_published_messages_read_back_exactly_once(connection: KafkaConnection) -> None:
    # Event time now: records stamped in the past could fall out of the topics' retention.
    simulator = MarketSimulator(seed=2026, users=50, start_ms=time.time_ns() // 1_000_000)
    # 50 initial snapshots + 195 msg/s for 10 s of event time = 2,000 messages.
    messages = list(simulator.events(10, rate=195))
    assert len(messages) == 2_000
    expected = Counter((topic_of(m), *encode(m)[:2]) for m in messages)
    per_topic = Counter(topic_of(m) for m in messages)
    timestamps = {(topic_of(m), encode(m)[1]): timestamp_ms(m) for m in messages}

    start = _end_offsets(connection, sorted(per_topic))
    counts: Counter[str] = Counter()
    assert publish(connection, messages, counts=counts) == 2_000
    assert counts == per_topic

    read = _read_back(connection, start)
    # Others (make dev, other tests) may produce to the same topics meanwhile: ours are the
    # records whose (topic, key, value) we sent — values carry unique event times and tx hashes.
    ours = Counter(record for record, _, _ in read if record in expected)
    assert ours == expected  # every message exactly once: no loss, no duplicate
    assert Counter(topic for topic, _, _ in ours.elements()) == per_topic
    for (topic, key, value), ts, headers in read:
        if (topic, key, value) in expected:
            assert ts == timestamps[(topic, value)]
            assert dict(headers)["schema-version"] == b"1"
            assert key == encode(decode(topic, value))[0]


def test_fill_topic_bulk_loads_encoded_ticks(connection: KafkaConnection) -> None:
    admin = connection.admin()
    topic = f"test.sim-fill-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    try:
        start_ms = time.time_ns() // 1_000_000
        ticks = list(MarketSimulator(seed=1, start_ms=start_ms).encoded_price_ticks(20_000))
        start = _end_offsets(connection, [topic])
        assert fill_topic(connection, topic, ticks) == 20_000
        read = _read_back(connection, start)
        assert Counter((key, value) for (_, key, value), _, _ in read) == Counter(
            (key, value) for key, value, _ in ticks
        )
        assert {ts for _, ts, _ in read} == {ts for _, _, ts in ticks}
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_run_simulation_paces_and_stops(local_stack: Settings, connection: KafkaConnection) -> None:
    started = time.monotonic()
    counts = run_simulation(local_stack, rate=400, duration_s=2, seed=5)
    elapsed = time.monotonic() - started
    # The reference set at once, then 2 s of events paced at 400/s (+ the initial snapshots).
    assert counts["defi.protocols"] >= 20 and counts["defi.tokens"] >= 200
    events = sum(counts.values()) - counts["defi.protocols"] - counts["defi.tokens"]
    assert events == 400 * 2 + 200
    assert elapsed >= 2.0

    # Forever, until stopped: returns promptly with what it produced.
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    counts = run_simulation(local_stack, rate=200, duration_s=float("inf"), seed=5, stop=stop)
    assert time.monotonic() - started < 15
    assert 200 < sum(counts.values()) < 2_000
