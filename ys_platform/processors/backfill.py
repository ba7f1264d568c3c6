"""Backfill ``market.analytics`` from ``market.prices``: the records the live price-aggregation
processor emits for a range of window ends, recomputed from the input topic.

Exactness rests on the same argument as the worker's restore (:mod:`ys_platform.streaming.restore`)
and on one kernel: a window end ``E`` emitted live is :func:`~ys_platform.processing.windows.\
compute_windows` of the ticks the live state had *accepted* by then, in input order. So, per input
partition (the live state is per partition; a symbol is keyed to one partition):

* read from ``offsets_for_times(start − restore_span_ms)``: every tick a window ending at or
  after ``start`` can use (its window, the prior tick carried into it, the fresh sources of its
  consolidated price) and every tick that decides whether such a tick was late is stamped at or
  after that, so it lies at or after that offset;
* take the ticks in offset order through :meth:`SlidingWindowState.ingest`, which rejects the
  too-late ones exactly as live did (the same running watermark, tick by tick);
* stop once the watermark reaches ``end + grace``: any later tick at or before ``end`` is too late
  live too; if the partition ends first, window ends beyond ``watermark − grace`` are left out —
  live has not emitted them either (they are not complete: late ticks may still come);
* compute the aligned window ends in ``[start, end]`` with ``compute_windows``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ys_platform.catalog.codec import decode_batch, encode, timestamp_ms, topic_of
from ys_platform.catalog.models import MarketAnalytics
from ys_platform.clients.kafka import KafkaConnection, produce_record
from ys_platform.processing.windows import SlidingWindowState, TickBatch, compute_windows
from ys_platform.processors.price_aggregation import (
    GROUP,
    PriceAggregation,
    epoch_ms,
    ticks_of,
    to_message,
)

__all__ = ["BackfillResult", "backfill_price_analytics"]

INPUT = "market.prices"


@dataclass
class BackfillResult:
    """What a backfill read, skipped and (re)computed."""

    start: datetime
    end: datetime
    records: list[MarketAnalytics] = field(default_factory=list)
    """The analytics of every complete window end in ``[start, end]``, by (window end, symbol)."""
    read: int = 0
    """Input records read (from each partition's replay start)."""
    invalid: int = 0
    """Records that did not decode, or ticks with an invalid price or volume: skipped."""
    too_late: int = 0
    """Ticks the live processor rejected (and dead-lettered) as too late: skipped likewise."""
    incomplete_partitions: list[int] = field(default_factory=list)
    """Input partitions whose data stops before ``end + grace``: their window ends past
    ``watermark − grace`` are not complete, so not computed."""
    produced: int = 0
    """Records committed to ``market.analytics`` (0 without ``output``)."""


def backfill_price_analytics(
    connection: KafkaConnection,
    start: datetime,
    end: datetime,
    *,
    namespace: str = "",
    output: bool = True,
    processor: PriceAggregation | None = None,
    transactional_id: str | None = None,
    timeout_s: float = 60.0,
) -> BackfillResult:
    """Recompute ``market.analytics`` for the window ends in ``[start, end]`` from
    ``market.prices`` (read_committed), and with ``output`` produce them to ``market.analytics``
    in one transaction (all or nothing).

    The records equal, floats included, those the live processor emitted (or will emit) for
    the same window ends. ``start``/``end`` must be timezone-aware. ``namespace`` prefixes the
    topics, as ``--namespace`` does for the processor. ``processor`` gives the window
    configuration (default: the live processor's). ``transactional_id`` defaults to one per
    namespace and range, so a rerun of a crashed backfill fences its zombie while different
    ranges may run side by side. Nothing deduplicates against records already in the output
    topic: readers key the analytics by (symbol, window end).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    app = processor or PriceAggregation()
    config = app.config
    # The price-aggregation processor's principal: it reads its input and writes its output.
    connection = connection.as_principal(f"{namespace}{GROUP.group_id}")
    start_ms, end_ms = epoch_ms(start), epoch_ms(end)
    step = config.emit_interval_ms
    ends = np.arange(-(-start_ms // step), end_ms // step + 1, dtype=np.int64) * step
    result = BackfillResult(start, end)
    if not ends.size:
        return result

    scans = _scan(
        connection,
        f"{namespace}{INPUT}",
        start_ms - app.restore_span_ms,
        end_ms + config.grace_ms,
        f"{namespace}{GROUP.group_id}.backfill",
        app,
        timeout_s,
    )
    windows = []
    for partition, scan in sorted(scans.items()):
        result.read += scan.read
        result.invalid += scan.invalid
        result.too_late += scan.too_late
        watermark = scan.state.watermark_ms
        if watermark is None:  # nothing valid in range
            continue
        complete = ends[ends <= watermark - config.grace_ms]
        if complete.size < ends.size:
            result.incomplete_partitions.append(partition)
        windows += compute_windows(_concat(scan.accepted), complete, config)
    windows.sort(key=lambda w: (w.window_end_ms, w.symbol))
    result.records = [to_message(w) for w in windows]
    if output and result.records:
        result.produced = _produce(
            connection,
            namespace,
            result.records,
            transactional_id or f"{namespace}{GROUP.group_id}.backfill.{start_ms}-{end_ms}",
            timeout_s,
        )
    return result


class _PartitionScan:
    """One input partition's ticks in offset order, judged late or not as the live state did."""

    def __init__(self, app: PriceAggregation) -> None:
        self.state = SlidingWindowState(app.config)
        self.accepted: list[TickBatch] = []
        self.read = self.invalid = self.too_late = 0

    def add(self, records: list[Message]) -> None:
        self.read += len(records)
        messages, failures = decode_batch(INPUT, [r.value() for r in records])
        self.invalid += len(failures)
        if not messages:
            return
        batch = ticks_of(messages)  # type: ignore[arg-type]
        # The live state's own ingest: the same running watermark, so the same ticks rejected.
        ingest = self.state.ingest(batch)
        self.invalid += int(ingest.invalid.size)
        self.too_late += int(ingest.too_late.size)
        keep = np.ones(len(batch), dtype=bool)
        keep[ingest.too_late] = False
        keep[ingest.invalid] = False
        self.accepted.append(batch.take(np.flatnonzero(keep)))


def _concat(batches: list[TickBatch]) -> TickBatch:
    return TickBatch(
        [s for b in batches for s in b.symbols],
        np.concatenate([b.ts_ms for b in batches]),
        np.concatenate([b.prices for b in batches]),
        np.concatenate([b.volumes for b in batches]),
        [s for b in batches for s in b.sources],
    )


def _scan(
    connection: KafkaConnection,
    topic: str,
    from_ms: int,
    until_watermark_ms: int,
    group_id: str,
    app: PriceAggregation,
    timeout_s: float,
) -> dict[int, _PartitionScan]:
    """Scan each partition from its first record stamped at or after ``from_ms`` until its
    watermark reaches ``until_watermark_ms`` or its end (as of now, read_committed)."""
    consumer = connection.consumer(
        group_id,  # never subscribes nor commits: the id only satisfies the client
        enable_partition_eof=True,
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ValueError(f"cannot read {topic}: {metadata.error if metadata else 'missing'}")
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(from_ms, 0)) for p in sorted(metadata.partitions)],
            timeout=timeout_s,
        )
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for tp in found:
            if tp.offset < 0:  # no record stamped that late: nothing in range
                continue
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout_s
            )
            if tp.offset < high:
                starts[tp.partition], ends[tp.partition] = tp.offset, high
        scans = {p: _PartitionScan(app) for p in starts}
        if starts:
            consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
            _drain(consumer, topic, ends, until_watermark_ms, scans, timeout_s)
        return scans
    finally:
        consumer.close()


def _drain(
    consumer: Consumer,
    topic: str,
    ends: dict[int, int],
    until_watermark_ms: int,
    scans: dict[int, _PartitionScan],
    timeout_s: float,
) -> None:
    remaining = dict(ends)
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: nothing read for {timeout_s}s before the range's end")
        by_partition: dict[int, list[Message]] = {}
        for record in consumer.consume(num_messages=5000, timeout=1.0):
            partition = record.partition()
            if partition not in remaining:
                continue
            err = record.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    remaining.pop(partition)
                    continue
                raise KafkaException(err)
            deadline = time.monotonic() + timeout_s
            if record.offset() >= remaining[partition]:  # appended since the scan began
                remaining.pop(partition)
                continue
            by_partition.setdefault(partition, []).append(record)
        done = []
        for partition, records in by_partition.items():
            scan = scans[partition]
            scan.add(records)
            watermark = scan.state.watermark_ms
            # Past end + grace, a tick at or before end is too late and a later one is in no
            # window in range: the rest of the partition cannot change the result.
            if watermark is not None and watermark >= until_watermark_ms:
                done.append(partition)
        # Transaction markers and aborted records take offsets without being delivered: the
        # position, not the last record, says when a partition is done.
        for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
            if tp.offset >= remaining[tp.partition]:
                done.append(tp.partition)
        for partition in set(done):
            remaining.pop(partition, None)
        if done:
            consumer.pause([TopicPartition(topic, p) for p in set(done)])


def _produce(
    connection: KafkaConnection,
    namespace: str,
    records: list[MarketAnalytics],
    transactional_id: str,
    timeout_s: float,
) -> int:
    producer = connection.producer(transactional_id=transactional_id, linger_ms=20)
    producer.init_transactions(timeout_s)  # also aborts a crashed earlier run's transaction
    producer.begin_transaction()
    try:
        for message in records:
            key, value, headers = encode(message)
            topic = f"{namespace}{topic_of(message)}"
            produce_record(producer, topic, value, key, headers, timestamp_ms(message))
        producer.commit_transaction(timeout_s)
    except BaseException:
        producer.abort_transaction(timeout_s)
        raise
    return len(records)
