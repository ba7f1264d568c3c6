"""The sink runtime: a consumer-group loop that hands decoded batches to a :class:`Sink`.

One flush: records are consumed until ``batch_size`` of them are buffered or the oldest has
waited ``flush_interval_s``; each partition's records are decoded in bulk; the ones that do not
decode go to the group's dead-letter topic (an idempotent producer, flushed before the sink
writes, so a dead letter is durable before the sink's progress moves past its record); the rest
go to the sink, partition by partition (or all at once to a :class:`BatchSink`); then the
consumed offsets are committed to Kafka.

The Kafka commit is for lag monitoring and for sinks without a store of their own: exactly-once
comes from the sink, which records its progress beside the data and says, on every assignment,
where each partition resumes (:meth:`Sink.resume_offsets`); the consumer starts there.

Dead letters are at-least-once: a record that failed to decode after the sink's last stored
record is read again after a restart and dead-lettered again. Their headers name the source
topic, partition and offset, which identify the duplicates.

Run standalone: ``ys-platform sink run clickhouse`` (:mod:`ys_platform.cli.sink`); SIGTERM/SIGINT
finish the batch in hand, then exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from ys_platform.catalog.codec import decode_batch, is_delete
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.sinks.base import BatchSink, PartitionBatch, Sink, TopicPartitionId
from ys_platform.streaming.dead_letter import dead_letter_headers
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.signals import stop_on_signals

log = logging.getLogger(__name__)

ProgressCallback = Callable[[WorkerMetrics], None]


@dataclass(frozen=True)
class SinkConfig:
    batch_size: int = 100_000
    """Records per flush across all partitions: large inserts make few, large parts."""
    flush_interval_s: float = 5.0
    """Flush buffered records at least this often: bounds how stale the store is."""
    consume_batch: int = 10_000
    """Records per consume call: amortises the call, small enough to check the clock often."""
    poll_timeout_s: float = 0.2
    progress_interval_s: float = 5.0
    commit_timeout_s: float = 60.0
    namespace: str = ""
    """Prefix of every physical topic and of the group id, as in ``WorkerConfig.namespace``."""
    instance_id: str | None = None
    """Stable per replica: static group membership (``group.instance.id``), so a restarted
    replica takes its partitions back at once instead of after the dead one's session timeout."""

    def physical(self, name: str) -> str:
        return f"{self.namespace}{name}"


class SinkStopped(RuntimeError):
    """The sink cannot go on (a fatal client error, undeliverable dead letters)."""


class _DeadLetters:
    """Delivery reports of the dead-letter producer (served inside poll/flush)."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def __call__(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None and self.failed is None:
            self.failed = f"{msg.topic()}: {err.str()}"


def split_tombstones(
    records: Sequence[KafkaMessage], *, marked_deletes: bool = False
) -> tuple[list[KafkaMessage], list[str]]:
    """For a sink that can delete: the records to write and the keys to delete.

    A tombstone (a keyed record with no value, as compaction produces) deletes its key, and so,
    with ``marked_deletes`` (a change-stream topic), does a record whose headers mark it as the
    delete of its row (:func:`~ys_platform.catalog.codec.is_delete`). Within one batch the last
    record of a key decides, so a re-insert after a delete wins and a delete after an update
    removes it. Unkeyed empty records stay in and are dead-lettered.
    """
    last: dict[bytes, int] = {}
    removes: list[bool] = []
    for index, record in enumerate(records):
        key = record.key()
        if key is not None:
            last[key] = index
        removes.append(
            key is not None
            and (record.value() is None or (marked_deletes and is_delete(record.headers())))
        )
    keep: list[KafkaMessage] = []
    removed: list[str] = []
    for index, record in enumerate(records):
        key = record.key()
        if key is None:
            keep.append(record)
        elif removes[index]:
            if last[key] == index:
                removed.append(key.decode())
        elif not removes[last[key]]:
            keep.append(record)
    return keep, removed


class SinkWorker:
    """Consumes the sink's group inputs and writes them through ``sink``; see the module doc."""

    def __init__(
        self,
        connection: KafkaConnection,
        sink: Sink,
        config: SinkConfig | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.connection = connection
        self.sink = sink
        self.config = config or SinkConfig()
        self.on_progress = on_progress
        self.group = sink.group
        self.metrics = WorkerMetrics(group_id=self.group_id)
        self._consumer: Consumer | None = None
        self._producer = None
        self._deliveries = _DeadLetters()
        self._buffers: dict[TopicPartitionId, list[KafkaMessage]] = {}
        self._buffered = 0
        self._first_buffered_at: float | None = None
        self._assigned: set[TopicPartitionId] = set()
        self._assigned_at: float | None = None
        self._change_streams = self.group.change_stream_inputs
        self.seeks = 0

    @property
    def group_id(self) -> str:
        return self.config.physical(self.group.group_id)

    def _catalog_name(self, physical_topic: str) -> str:
        return physical_topic.removeprefix(self.config.namespace)

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_idle_s: float | None = None) -> WorkerMetrics:
        """Sink until ``stop`` is set (or nothing arrived for ``max_idle_s``), then close.

        What is buffered when ``stop`` is set is flushed and committed first. Idleness counts
        from the later of the last record and the last assignment, as in the processors.
        """
        self._producer = self.connection.producer(linger_ms=5)
        self.sink.open()
        try:
            overrides = {}
            if self.config.instance_id is not None:
                overrides["group.instance.id"] = f"{self.group_id}.{self.config.instance_id}"
            self._consumer = self.connection.consumer(self.group_id, **overrides)
            self._consumer.subscribe(
                [self.config.physical(name) for name in self.group.inputs],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            started = last_progress = last_data = time.monotonic()
            while not stop.is_set():
                records = self._consume()
                now = time.monotonic()
                if records:
                    last_data = now
                    self._buffer(records, now)
                if self._due(now):
                    self._flush()
                elif (
                    not records
                    and max_idle_s is not None
                    and self._idle(now, last_data, started, max_idle_s)
                ):
                    break
                if self.on_progress and now - last_progress >= self.config.progress_interval_s:
                    self._update_lag()
                    self.on_progress(self.metrics)
                    last_progress = now
            self._flush()
            self._update_lag()
        finally:
            self._close()
        return self.metrics

    def _due(self, now: float) -> bool:
        if not self._buffered:
            return False
        assert self._first_buffered_at is not None
        return (
            self._buffered >= self.config.batch_size
            or now - self._first_buffered_at >= self.config.flush_interval_s
        )

    def _idle(self, now: float, last_data: float, started: float, max_idle_s: float) -> bool:
        if self._assigned_at is not None:
            return now - max(last_data, self._assigned_at) > max_idle_s
        # Not assigned yet: a restart after a crash waits out the dead member's session before
        # the group rebalances; that is not idleness (see TransactionalWorker._idle). Bounded.
        config = self.connection.consumer_config(self.group_id)
        session_s = float(config.get("session.timeout.ms", 45_000)) / 1000
        return now - started > 2 * session_s + max_idle_s

    def _close(self) -> None:
        try:
            if self._consumer is not None:
                try:
                    self._consumer.close()
                except KafkaException as exc:
                    log.warning("%s: closing the consumer failed: %s", self.group_id, exc)
            if self._producer is not None:
                self._producer.flush(self.config.commit_timeout_s)
        finally:
            self._consumer = self._producer = None
            self.sink.close()

    # --- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(self._catalog_name(tp.topic), tp.partition) for tp in partitions]
        resume = self.sink.resume_offsets(keys) if keys else {}
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in (
                consumer.committed(
                    [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                    timeout=self.config.commit_timeout_s,
                )
                if partitions
                else []
            )
        }
        for tp, key in zip(partitions, keys, strict=True):
            offset = resume.get(key)
            # The sink's store is the truth: start where it says whenever it knows, even if the
            # group's commit is elsewhere (behind after a crash, ahead of a BEFORE range).
            if offset is not None:
                tp.offset = offset
                if committed.get((tp.topic, tp.partition)) != offset:
                    self.seeks += 1
                    log.info(
                        "%s[%d]: resuming at %d from the sink's store (group committed %s)",
                        tp.topic,
                        tp.partition,
                        offset,
                        committed.get((tp.topic, tp.partition)),
                    )
        strategy = self.connection.consumer_config(self.group_id).get(
            "partition.assignment.strategy", ""
        )
        if "cooperative" in str(strategy):
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._assigned.update(keys)
        self._assigned_at = time.monotonic()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Still the owner: store what is buffered, so the next owner does not redo it.
        self._flush()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No longer the owner (session expired): another member may be writing these
        # partitions, so drop their buffers unwritten; the sink's store says where to resume.
        lost = {(self._catalog_name(tp.topic), tp.partition) for tp in partitions}
        for key in lost:
            self._buffered -= len(self._buffers.pop(key, []))
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((self._catalog_name(tp.topic), tp.partition))

    # --- the loop ----------------------------------------------------------------------------
    def _consume(self) -> list[KafkaMessage]:
        assert self._consumer is not None
        room = max(self.config.batch_size - self._buffered, 1)
        batch = self._consumer.consume(
            num_messages=min(self.config.consume_batch, room), timeout=self.config.poll_timeout_s
        )
        records = []
        for record in batch:
            err = record.error()
            if err is None:
                records.append(record)
            elif err.fatal():
                raise SinkStopped(f"{self.group_id}: consumer failed: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consume error: %s", self.group_id, err.str())
        return records

    def _buffer(self, records: list[KafkaMessage], now: float) -> None:
        buffers = self._buffers
        name = self._catalog_name
        for record in records:
            key = (name(record.topic()), record.partition())
            slot = buffers.get(key)
            if slot is None:
                slot = buffers[key] = []
            slot.append(record)
        if not self._buffered:
            self._first_buffered_at = now
        self._buffered += len(records)

    def _flush(self) -> None:
        if not self._buffered:
            return
        started = time.perf_counter()
        buffers, self._buffers = self._buffers, {}
        consumed, self._buffered, self._first_buffered_at = self._buffered, 0, None
        batches: list[PartitionBatch] = []
        dead = 0
        commits: list[TopicPartition] = []
        deletes: dict[str, list[str]] = {}
        deleting = callable(getattr(self.sink, "delete", None))
        for key, all_records in buffers.items():
            records = all_records
            change_stream = key[0] in self._change_streams
            marked: frozenset[int] = frozenset()
            if deleting:
                records, removed = split_tombstones(all_records, marked_deletes=change_stream)
                if removed:
                    deletes.setdefault(key[0], []).extend(removed)
            elif change_stream:
                # A sink that stores rows (ClickHouse) writes a delete as a row marked deleted.
                marked = frozenset(r.offset() for r in records if is_delete(r.headers()))
            messages, failures = decode_batch(key[0], [r.value() for r in records])
            if failures:
                failed = {index for index, _ in failures}
                for index, error in failures:
                    self._dead_letter(records[index], str(error))
                dead += len(failures)
                offsets = [r.offset() for i, r in enumerate(records) if i not in failed]
            else:
                offsets = [r.offset() for r in records]
            end = all_records[-1].offset() + 1
            batches.append(PartitionBatch(key, messages, offsets, end_offset=end, deleted=marked))
            commits.append(TopicPartition(self.config.physical(key[0]), key[1], end))
        if dead:
            self._flush_dead_letters()
        written = self._write(batches)
        for topic_name, keys in deletes.items():
            written += self.sink.delete(topic_name, keys)  # type: ignore[attr-defined]
        assert self._consumer is not None
        try:
            # Asynchronous: the sink's store, not this commit, decides where a restart resumes.
            self._consumer.commit(offsets=commits, asynchronous=True)
        except KafkaException as exc:
            log.warning("%s: offset commit failed: %s", self.group_id, exc)
        self.metrics.consumed += consumed
        self.metrics.produced += written
        self.metrics.dead_lettered += dead
        for tp in commits:
            self.metrics.committed[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.record_batch(time.perf_counter() - started)

    def _write(self, batches: Sequence[PartitionBatch]) -> int:
        if not batches:
            return 0
        if isinstance(self.sink, BatchSink):
            return self.sink.write_many(batches)
        # A plain sink has no use for a slice that only held records that failed to decode.
        return sum(
            self.sink.write(b.partition, b.messages, b.offsets) for b in batches if b.messages
        )

    def _dead_letter(self, record: KafkaMessage, reason: str) -> None:
        assert self._producer is not None
        headers = dead_letter_headers(record, reason, self.group_id)
        topic = self.config.physical(self.group.dead_letter_topic)
        while True:
            try:
                self._producer.produce(
                    topic,
                    record.value(),
                    record.key(),
                    headers=headers,
                    on_delivery=self._deliveries,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def _flush_dead_letters(self) -> None:
        assert self._producer is not None
        remaining = self._producer.flush(self.config.commit_timeout_s)
        if remaining or self._deliveries.failed:
            raise SinkStopped(
                f"{self.group_id}: dead letters not delivered ({remaining} pending; "
                f"{self._deliveries.failed or 'timed out'}); stopping before the sink moves past "
                "their records"
            )

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._assigned:
            return
        assigned = [TopicPartition(self.config.physical(t), p) for t, p in sorted(self._assigned)]
        try:
            for tp in consumer.position(assigned):
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag[f"{tp.topic}[{tp.partition}]"] = max(high - tp.offset, 0)
        except KafkaException as exc:
            log.debug("lag update failed: %s", exc)


# --- the standalone service -----------------------------------------------------------------------


def run_sink(
    worker: SinkWorker, stop: threading.Event | None = None, max_idle_s: float | None = None
) -> WorkerMetrics:
    """Run ``worker`` until ``stop``, SIGTERM/SIGINT (main thread only) or ``max_idle_s``."""
    stop = stop or threading.Event()
    with stop_on_signals(stop, worker.group_id):
        return worker.run(stop, max_idle_s=max_idle_s)
