"""Reading ranges of a topic (read committed, no group) and showing records as JSON lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ys_platform.catalog.codec import DecodeError, decode
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.operations.admin import OperationError, reason
from ys_platform.streaming import dead_letter

READ_TIMEOUT_S = 60.0
"""Bound of one read: far above the ~1 s a range of a few thousand records takes here."""

Predicate = Callable[[Message], bool]

READER_SETTINGS = {"enable.partition.eof": True, "fetch.min.bytes": 1, "fetch.wait.max.ms": 10}
"""A reader reads ranges to their end: the end-of-partition event says when. The fetch that
finds the end waits ``fetch.wait.max.ms`` for data that will not come (measured: 0.5 s per
read with the workers' 500 ms), so a reader waits 10 ms."""


def reader(connection: KafkaConnection) -> Consumer:
    """A consumer for assigned reads: read committed, partition EOF reported, never commits.

    Its group id is never joined nor committed to (``assign``, no commit), so it leaves no
    group behind on the cluster.
    """
    return connection.consumer(f"ys-platform-reader-{uuid.uuid4().hex[:8]}", **READER_SETTINGS)


def partitions(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition's (earliest, end) offsets; an :class:`OperationError` if no such topic."""
    try:
        metadata = consumer.list_topics(topic, timeout=READ_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise OperationError(f"there is no topic {topic!r} on the cluster")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=READ_TIMEOUT_S)
            for p in sorted(found.partitions)
        }
    except KafkaException as exc:
        raise OperationError(f"could not read the offsets of {topic}: {reason(exc)}") from None


def read_ranges(
    consumer: Consumer,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    *,
    keep: Predicate | None = None,
    limit: int | None = None,
) -> dict[int, list[Message]]:
    """The committed records of ``topic`` in ``[start, end)`` of each partition, in offset order.

    ``keep`` filters them; ``limit`` stops a partition after that many kept records. Offsets
    with no record (transaction markers, aborted records) are skipped by the consumer, so a
    partition ends at its end offset or at its end-of-partition event, whichever comes first.
    """
    out: dict[int, list[Message]] = {p: [] for p in ranges}
    pending = {p for p, (start, end) in ranges.items() if start < end}
    if not pending:
        return out
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(pending)])
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while pending:
            if time.monotonic() > deadline:
                raise OperationError(
                    f"reading {topic} did not finish in {READ_TIMEOUT_S:.0f} s "
                    f"(partitions {sorted(pending)} still short of their end)"
                )
            # consume() waits its whole timeout unless the batch fills: keep it short.
            for record in consumer.consume(500, timeout=0.05):
                p = record.partition()
                err = record.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)
                        continue
                    if err.fatal():
                        raise OperationError(f"reading {topic} failed: {err.str()}")
                    continue
                if p not in pending:
                    continue
                if record.offset() < ranges[p][1] and (keep is None or keep(record)):
                    out[p].append(record)
                if record.offset() >= ranges[p][1] - 1 or (
                    limit is not None and len(out[p]) >= limit
                ):
                    pending.discard(p)
    finally:
        consumer.unassign()
    return out


def order(record: Message) -> tuple[int, int, int]:
    """Records across partitions in time order (then partition, offset)."""
    return (record.timestamp()[1], record.partition(), record.offset())


def iso_ms(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _catalog_value(catalog_topic: str, value: bytes | None) -> dict[str, Any]:
    """``{"value": ...}`` decoded with the catalog codec, or ``{"error", "raw"}``."""
    try:
        message = decode(catalog_topic, value)
    except KeyError:
        # Not a catalog topic (Connect's own, Debezium heartbeats): show the JSON as it is.
        try:
            return {"value": json.loads(value) if value is not None else None}
        except ValueError as exc:
            return {"error": f"not JSON: {exc}", "raw": _text(value)}
    except DecodeError as exc:
        return {"error": str(exc), "raw": _text(value)}
    return {"value": message.model_dump(mode="json")}


def render(record: Message, namespace: str = "") -> dict[str, Any]:
    """One record as the operator reads it: where, when, key, the decoded value (or why it does
    not decode) and, for a dead letter, why and from where it was rejected.

    ``namespace`` is stripped from topic names to find their catalog codec.
    """
    topic = record.topic()
    line: dict[str, Any] = {
        "partition": record.partition(),
        "offset": record.offset(),
        "timestamp": iso_ms(record.timestamp()[1]),
        "key": _text(record.key()),
    }
    headers = record.headers()
    source = dead_letter.header(headers, dead_letter.SOURCE_TOPIC)
    if source is not None:
        line["dead_letter"] = dead_letter_info(headers)
        line.update(_catalog_value(source.removeprefix(namespace), record.value()))
    else:
        line.update(_catalog_value(topic.removeprefix(namespace), record.value()))
    return line


def dead_letter_info(headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    """The reason and origin a dead letter's headers carry."""
    partition = dead_letter.header(headers, dead_letter.SOURCE_PARTITION)
    offset = dead_letter.header(headers, dead_letter.SOURCE_OFFSET)
    return {
        "reason": dead_letter.header(headers, dead_letter.ERROR),
        "topic": dead_letter.header(headers, dead_letter.SOURCE_TOPIC),
        "partition": int(partition) if partition is not None else None,
        "offset": int(offset) if offset is not None else None,
        "group": dead_letter.header(headers, dead_letter.GROUP),
    }


def json_line(record: Message, namespace: str = "") -> str:
    return json.dumps(render(record, namespace), default=str, ensure_ascii=False)
