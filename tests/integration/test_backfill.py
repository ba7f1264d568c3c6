"""Backfill equals streaming: ``market.analytics`` recomputed from ``market.prices`` for a range of
window ends is, record for record and float for float, what the live processor emitted for those
window ends — with poison records, ticks late within grace and ticks too late in the input."""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta

from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import decode
from ys_platform.processors.backfill import backfill_price_analytics
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.runner import run_processor
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.worker import WorkerConfig

SEED = 4242
TICKS = 30_000
RATE = 50.0  # ticks per second of event time: 10 min
PARTITIONS = 4


def _input(start_ms: int) -> list[tuple[int, bytes, bytes, int]]:
    """(partition, key, value, timestamp) in produce order: simulator ticks, some poison, some
    ticks re-sent ~1 s later (late but within grace: accepted) or ~60 s later (too late)."""
    ticks = list(
        MarketSimulator(SEED, symbols=16, start_ms=start_ms, users=0).encoded_price_ticks(
            TICKS, rate=RATE
        )
    )
    out = []
    for i, (key, value, ts) in enumerate(ticks):
        out.append((key, value, ts))
        if i % 3_001 == 3_000:
            out.append((key, b"{not json", ts))
        if i % 997 == 996:
            out.append(ticks[i - 50])  # 1 s of event time back: within the 5 s grace
        if i % 4_999 == 4_998:
            out.append(ticks[i - 3_000])  # 60 s back: too late
    return [(zlib.crc32(k) % PARTITIONS, k, v, t) for k, v, t in out]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _key(m) -> tuple:
    return (m.window_end, m.symbol)


def test_backfill_equals_live_output(local_stack):
    namespace = f"t{uuid.uuid4().hex[:8]}."
    connection = local_stack.kafka
    create_namespaced_topics(
        connection.admin(),
        namespace,
        ["market.prices", "market.analytics", GROUP.dead_letter_topic],
        PARTITIONS,
    )
    start_ms = (time.time_ns() // 1_000_000 - 3 * 3_600_000) // 60_000 * 60_000
    records = _input(start_ms)
    producer = connection.producer()
    for partition, key, value, ts in records:
        producer.produce(f"{namespace}market.prices", value, key, partition=partition, timestamp=ts)
        producer.poll(0)
    assert producer.flush(60) == 0

    metrics = run_processor(
        local_stack,
        GROUP.group_id,
        config=WorkerConfig(batch_size=700, namespace=namespace),
        stop=threading.Event(),
        max_idle_s=4.0,
    )
    assert metrics.consumed == len(records)
    output_topic = f"{namespace}market.analytics"
    live = sorted(
        (decode("market.analytics", r.value()) for r in read_topic(connection, output_topic)),
        key=_key,
    )
    assert len(live) == metrics.produced > 1000

    # A range in the middle: the replay starts mid-topic, the range ends well inside the data.
    lo, hi = _at(start_ms + 200_000), _at(start_ms + 400_000)
    result = backfill_price_analytics(connection, lo, hi, namespace=namespace)
    expected = [m for m in live if lo <= m.window_end <= hi]
    assert len(expected) > 500
    assert result.records == expected  # sorted by (window end, symbol); floats exactly
    assert result.produced == len(expected) and result.incomplete_partitions == []
    assert result.too_late > 0 and result.invalid > 0

    # Committed in one transaction: the range's windows are now in the topic twice.
    again = Counter(
        _key(decode("market.analytics", r.value())) for r in read_topic(connection, output_topic)
    )
    assert again == Counter({_key(m): 1 + (lo <= m.window_end <= hi) for m in live})

    # Everything, past both ends of the data: every live record, and only those (the windows
    # after the last watermark − grace are incomplete and left out, as live left them).
    whole = backfill_price_analytics(
        connection,
        _at(start_ms) - timedelta(minutes=10),
        _at(start_ms + 700_000),
        namespace=namespace,
        output=False,
    )
    assert whole.records == live
    assert whole.produced == 0
    assert sorted(whole.incomplete_partitions) == list(range(PARTITIONS))
    assert whole.read == len(records)
    assert whole.invalid + whole.too_late == metrics.dead_lettered
