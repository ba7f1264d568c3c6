"""Newest-record timestamps read from the broker: exact over partitions, through a transaction's
commit marker, absent (not 0) for an empty or missing topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import NewTopic

from ys_platform.monitoring.freshness import CdcSource, check_freshness, newest_timestamps
from ys_platform.settings import Settings

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def created(local_stack: Settings) -> Iterator[list[str]]:
    """Names the test created, deleted afterwards (the shared broker keeps no test debris)."""
    names: list[str] = []
    yield names
    if names:
        admin = local_stack.kafka.admin()
        for future in admin.delete_topics(names).values():
            future.result(30)


def _topic(settings: Settings, created: list[str], name: str, partitions: int) -> None:
    admin = settings.kafka.admin()
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    created.append(name)


def test_newest_timestamp_is_the_max_over_partitions(local_stack: Settings, created) -> None:
    suffix = uuid.uuid4().hex[:8]
    plain, tx, empty = f"test.fresh.{suffix}", f"test.fresh.tx.{suffix}", f"test.fresh.e.{suffix}"
    _topic(local_stack, created, plain, 3)
    _topic(local_stack, created, tx, 1)
    _topic(local_stack, created, empty, 2)
    producer = local_stack.kafka.producer()
    # Partition 1 holds the newest record; the others older ones, written after it.
    for partition, stamps in {0: [1_000, 5_000], 1: [9_000], 2: [7_000, 2_000]}.items():
        for stamp in stamps:
            producer.produce(plain, b"v", partition=partition, timestamp=1_700_000_000_000 + stamp)
    producer.flush(30)
    transactional = local_stack.kafka.producer(**{"transactional.id": f"test-fresh-{suffix}"})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    transactional.produce(tx, b"v", partition=0, timestamp=1_700_000_000_123)
    transactional.commit_transaction(30)

    newest = newest_timestamps(local_stack.kafka, [plain, tx, empty, f"test.fresh.none.{suffix}"])

    assert newest == {
        plain: 1_700_000_009_000,
        # The last offset is the commit marker: the record before it is found.
        tx: 1_700_000_000_123,
        empty: None,
        f"test.fresh.none.{suffix}": None,
    }


def test_heartbeat_age_and_silence_from_the_topic(local_stack: Settings, created) -> None:
    suffix = uuid.uuid4().hex[:8]
    beats, data = f"test.fresh.hb.{suffix}", f"test.fresh.d.{suffix}"
    _topic(local_stack, created, beats, 1)
    _topic(local_stack, created, data, 2)
    producer = local_stack.kafka.producer()
    producer.produce(beats, b"{}", timestamp=1_700_000_100_000)
    producer.flush(30)
    source = CdcSource("pg", (data,), beats, 10.0)

    fresh = check_freshness(local_stack.kafka, [source], now=1_700_000_125.0)
    late = check_freshness(local_stack.kafka, [source], now=1_700_000_131.0)

    assert fresh.error is None
    assert [(t.topic, t.age_s) for t in fresh.topics] == [(data, None)]
    (beat,) = fresh.heartbeats
    assert (beat.last_ms, beat.age_s, beat.silent) == (1_700_000_100_000, 25.0, False)
    assert (late.heartbeats[0].age_s, late.heartbeats[0].silent) == (31.0, True)
