"""Rebuild a partition's state by replaying its recent input up to the committed offset.

The committed offset carries the partition's event-time watermark as metadata; the replay starts
at the first record whose timestamp is at least ``watermark - span`` (``offsets_for_times``) and
stops just before the committed offset. Nothing is produced or committed while replaying.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from ys_platform.clients.kafka import KafkaConnection

TIMEOUT_S = 30.0
WATERMARK_PREFIX = "wm="


def encode_watermark(watermark_ms: int | None) -> str:
    return "" if watermark_ms is None else f"{WATERMARK_PREFIX}{watermark_ms}"


def decode_watermark(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(WATERMARK_PREFIX):
        try:
            return int(metadata[len(WATERMARK_PREFIX) :])
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class ReplayRange:
    topic: str
    partition: int
    start: int
    end: int
    """Exclusive: the committed offset the worker resumes from."""


def replay_ranges(
    consumer: Consumer, committed: list[TopicPartition], span_ms: int
) -> list[ReplayRange]:
    """Where each partition's replay starts, from the watermark in its committed metadata."""
    queries = []
    ends: dict[tuple[str, int], int] = {}
    for tp in committed:
        watermark = decode_watermark(tp.metadata)
        if tp.offset < 0 or watermark is None:
            continue
        ends[(tp.topic, tp.partition)] = tp.offset
        queries.append(TopicPartition(tp.topic, tp.partition, max(0, watermark - span_ms)))
    if not queries:
        return []
    ranges = []
    for found in consumer.offsets_for_times(queries, timeout=TIMEOUT_S):
        end = ends[(found.topic, found.partition)]
        # -1 (OFFSET_END): no record that recent, so nothing before the committed offset matters.
        start = end if found.offset in (-1, OFFSET_END) else min(found.offset, end)
        if start < end:
            ranges.append(ReplayRange(found.topic, found.partition, start, end))
    return ranges


def replay(
    connection: KafkaConnection, ranges: list[ReplayRange], group_id: str, batch_size: int = 5000
) -> Iterator[tuple[tuple[str, int], list[Message]]]:
    """Yield ``((topic, partition), records)`` in offset order for each range until its end."""
    if not ranges:
        return
    consumer = connection.consumer(
        # Never subscribes or commits: the group id only satisfies the client.
        f"{group_id}.restore",
        enable_partition_eof=True,
    )
    pending: Mapping[tuple[str, int], int] = {(r.topic, r.partition): r.end for r in ranges}
    remaining = dict(pending)
    try:
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
        while remaining:
            batch = consumer.consume(num_messages=batch_size, timeout=1.0)
            by_partition: dict[tuple[str, int], list[Message]] = {}
            for record in batch:
                key = (record.topic(), record.partition())
                if key not in remaining:
                    continue
                err = record.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.pop(key, None)
                        continue
                    if err.fatal():
                        raise RuntimeError(f"restore of {key[0]}[{key[1]}] failed: {err.str()}")
                    continue
                if record.offset() >= remaining[key]:
                    remaining.pop(key, None)
                    continue
                by_partition.setdefault(key, []).append(record)
            yield from by_partition.items()
            # Transaction markers and aborted records take offsets without being delivered: the
            # position, not the last record seen, says when a range is done.
            for tp in consumer.position([TopicPartition(t, p) for (t, p) in list(remaining)]):
                if tp.offset >= remaining.get((tp.topic, tp.partition), 1 << 62):
                    remaining.pop((tp.topic, tp.partition), None)
    finally:
        consumer.close()
