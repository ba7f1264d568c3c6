"""The platform's produce path against the real broker: every argument lands where it should.

``produce_record`` and ``produce_messages`` pass confluent-kafka's arguments by position (for
speed, see ``clients/kafka.py``), so this reads back what they wrote: topic, partition, key,
value, headers, timestamp, and that a delivery callback is called.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka.admin import NewTopic
from kafka_helpers import read_topic

from ys_platform.catalog.codec import encode_record
from ys_platform.clients.kafka import POLL_EVERY, produce_messages, produce_record
from ys_platform.settings import Settings
from ys_platform.sources.simulator import MarketSimulator


def _topic(settings: Settings, name: str, partitions: int) -> None:
    admin = settings.kafka.admin()
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)


def test_produce_record_writes_every_argument_where_it_belongs(local_stack: Settings) -> None:
    topic = f"test-produce-{uuid.uuid4().hex[:8]}"
    _topic(local_stack, topic, 3)
    delivered: list[tuple[int, int]] = []
    producer = local_stack.kafka.producer(linger_ms=0, **{"delivery.report.only.error": False})
    try:
        produce_record(
            producer,
            topic,
            b"value-1",
            b"key-1",
            [("h1", b"a"), ("h2", b"b")],
            1_767_225_600_123,
            lambda err, msg: delivered.append((msg.partition(), msg.offset())),
            partition=2,
        )
        produce_record(producer, topic, None, None, None, None, partition=1)
        assert producer.flush(30) == 0
    finally:
        producer.flush(30)
    assert delivered == [(2, 0)]
    records = {r.partition(): r for r in read_topic(local_stack.kafka, topic)}
    first, second = records[2], records[1]
    assert (first.key(), first.value(), first.offset()) == (b"key-1", b"value-1", 0)
    assert first.headers() == [("h1", b"a"), ("h2", b"b")]
    assert first.timestamp()[1] == 1_767_225_600_123
    # None key, value and headers stay None; timestamp None is the broker's "now".
    assert (second.key(), second.value(), second.headers()) == (None, None, None)
    assert abs(second.timestamp()[1] - time.time() * 1000) < 60_000


def test_produce_messages_writes_the_catalog_encoding(local_stack: Settings) -> None:
    namespace = f"test-produce-{uuid.uuid4().hex[:8]}."
    topic = f"{namespace}market.prices"
    _topic(local_stack, topic, 4)
    # More than one poll interval, so the periodic poll runs too.
    ticks = list(MarketSimulator(7, symbols=12, sources=2).price_ticks(POLL_EVERY + 37))
    producer = local_stack.kafka.producer()
    assert produce_messages(producer, ticks, namespace=namespace) == len(ticks)
    records = read_topic(local_stack.kafka, topic)
    assert len(records) == len(ticks)
    expected = {}
    for tick in ticks:
        _, key, value, headers, timestamp = encode_record(tick)
        expected.setdefault(key, []).append((value, headers, timestamp))
    got: dict = {}
    for record in records:  # partition, then offset order
        got.setdefault(record.key(), []).append(
            (record.value(), record.headers(), record.timestamp()[1])
        )
    # Per key (one partition each), the records in produce order, byte for byte.
    assert got == expected
