"""The store-owned-offsets commit strategy: the loop of every sink.

One flush: records are consumed until ``batch_size`` of them are buffered or the oldest has
waited ``flush_interval_s``; each partition's records are decoded in bulk; the ones that do not
decode go to the group's dead-letter topic (an idempotent producer, flushed before the sink
writes, so a dead letter is durable before the sink's progress moves past its record); the rest
go to the sink in one :meth:`~ys_platform.streaming.app.Sink.write_many`; then the consumed
offsets are committed to Kafka.

The Kafka commit is for lag monitoring and for sinks without a store of their own: exactly-once
comes from the sink, which records its progress beside the data and says, on every assignment,
where each partition resumes (:meth:`Sink.resume_offsets`); the consumer starts there.

Dead letters are at-least-once: a record that failed to decode after the sink's last stored
record is read again after a restart and dead-lettered again. Their headers name the source
topic, partition and offset, which identify the duplicates.

The member loop, rebalance callbacks, dead letters and lag are :class:`GroupMember`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ys_platform.catalog.codec import is_delete
from ys_platform.catalog.columnar import is_columnar
from ys_platform.catalog.topics import DEAD_LETTER_MAX_BYTES, topic
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_faults import through_faults
from ys_platform.clients.locks import Backoff
from ys_platform.streaming.app import (
    ColumnarSink,
    DeletingSink,
    PartitionBatch,
    ServingSink,
    Sink,
    StoreUnavailable,
    TopicPartitionId,
)
from ys_platform.streaming.member import (
    GroupMember,
    MemberConfig,
    ProgressCallback,
    WorkerStopped,
    decode_slices,
)
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.signals import stop_on_signals

__all__ = ["SinkConfig", "SinkWorker", "WorkerStopped", "run_sink", "split_tombstones"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkConfig(MemberConfig):
    batch_size: int = 100_000
    """Records per flush across all partitions: large inserts make few, large parts."""
    flush_interval_s: float = 5.0
    """Flush buffered records at least this often: bounds how stale the store is."""
    consume_batch: int = 10_000
    """Records per consume call: amortises the call, small enough to check the clock often."""


def split_tombstones(
    records: Sequence[Message], *, marked_deletes: bool = False, tombstones: bool = True
) -> tuple[list[Message], list[str]]:
    """For a sink that can delete: the records to write and the keys to delete.

    A tombstone (a keyed record with no value, as compaction produces) deletes its key where
    ``tombstones`` allows (a compacted topic, :func:`deletes_by_tombstone`), and so, with
    ``marked_deletes`` (a change-stream topic), does a record whose headers mark it as the
    delete of its row (:func:`~ys_platform.catalog.codec.is_delete`). Within one batch the last
    record of a key decides, so a re-insert after a delete wins and a delete after an update
    removes it. Unkeyed empty records, tombstones where none are allowed and records whose key
    is not UTF-8 (no key of the catalog's) stay in and are dead-lettered.
    """
    last: dict[bytes, int] = {}
    removes: list[bool] = []
    texts: dict[bytes, str | None] = {}
    for index, record in enumerate(records):
        key = record.key()
        if key is not None:
            last[key] = index
            if key not in texts:
                texts[key] = _text(key)
        removes.append(
            key is not None
            and texts[key] is not None
            and (
                (tombstones and record.value() is None)
                or (marked_deletes and is_delete(record.headers()))
            )
        )
    keep: list[Message] = []
    removed: list[str] = []
    for index, record in enumerate(records):
        key = record.key()
        if key is None:
            keep.append(record)
        elif removes[index]:
            if last[key] == index:
                removed.append(texts[key])  # type: ignore[arg-type]
        elif not removes[last[key]]:
            keep.append(record)
    return keep, removed


def _text(key: bytes) -> str | None:
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def deletes_by_tombstone(topic_name: str) -> bool:
    """Whether a tombstone on ``topic_name`` is a delete: only on a compacted topic, where
    compaction itself reads it so. Elsewhere a record without a value is not a message, and
    it goes to the dead-letter topic like any other."""
    return "compact" in topic(topic_name).configs.get("cleanup.policy", "")


# How often a sink whose store is out of reach tries it again: a released chDB path or a server
# back is noticed within 5 s, without flooding one that is still starting.
STORE_RETRY = Backoff(initial_s=0.5, max_s=5.0, multiplier=2.0, jitter=0.2)


@dataclass
class _StoreOutage:
    """The sink's store is out of reach: since when, why, and when to try it again."""

    since: float
    reason: str
    delays: Iterator[float]
    next_try: float


class SinkWorker(GroupMember):
    """Consumes the sink's group inputs and writes them through ``sink``; see the module doc."""

    def __init__(
        self,
        connection: KafkaConnection,
        sink: Sink,
        config: SinkConfig | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config: SinkConfig = config or SinkConfig()
        super().__init__(connection, sink.group, self.config, on_progress)
        self.sink = sink
        self._deleting = sink if isinstance(sink, DeletingSink) else None
        self._serving = sink if isinstance(sink, ServingSink) else None
        self._columnar_inputs = frozenset(
            name
            for name in sink.group.inputs
            if isinstance(sink, ColumnarSink) and sink.takes_columns(name) and is_columnar(name)
        )
        self._buffers: dict[TopicPartitionId, list[Message]] = {}
        self._buffered = 0
        self._first_buffered_at: float | None = None
        self._outage: _StoreOutage | None = None
        self.seeks = 0
        self.store_outages = 0

    # --- hooks ---------------------------------------------------------------------------------
    def _start(self) -> Producer:
        producer = self.connection.producer(linger_ms=5, message_max_bytes=DEAD_LETTER_MAX_BYTES)
        self.sink.open()
        return producer

    def _close_strategy(self) -> None:
        self.sink.close()

    def _consume_limit(self) -> int:
        room = max(self.config.batch_size - self._buffered, 1)
        return min(self.config.consume_batch, room)

    def _take(self, slices: dict[TopicPartitionId, list[Message]], now: float) -> None:
        if self._outage is not None:
            return  # fetched before the pause: read again after the rewind
        buffers = self._buffers
        count = 0
        for key, records in slices.items():
            slot = buffers.get(key)
            if slot is None:
                buffers[key] = records
            else:
                slot.extend(records)
            count += len(records)
        if not self._buffered:
            self._first_buffered_at = now
        self._buffered += count

    def _tick(self, now: float, took: bool) -> None:
        if self._outage is not None:
            if now >= self._outage.next_try:
                self._try_store(now)
            return
        if self._due(now):
            self._flush()
        if self._serving is not None:
            # Between flushes, idle or not: a reader of the sink's store waits at most a flush.
            self._serving.serve_readers()

    def _finish(self) -> None:
        self._flush()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = self._keys(partitions)
        resume: Mapping[TopicPartitionId, int] = {}
        if keys and self._outage is None:
            started = time.perf_counter()
            try:
                resume = self.sink.resume_offsets(keys)
            except StoreUnavailable as exc:  # paused below; rewound when the store is back
                self._store_lost(str(exc), pause=False)
            self.metrics.restore_seconds.observe(time.perf_counter() - started)
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in (
                through_faults(
                    lambda: consumer.committed(asked, timeout=self.config.commit_timeout_s),
                    f"{self.group_id}: reading its committed offsets",
                    log,
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
        if self._outage is not None and partitions:
            consumer.pause(partitions)

    def _revoked(self, keys: list[TopicPartitionId]) -> None:
        # Still the owner: store what is buffered, so the next owner does not redo it.
        self._flush()

    def _lost(self, keys: list[TopicPartitionId]) -> None:
        # No longer the owner (session expired): another member may be writing these
        # partitions, so drop their buffers unwritten; the sink's store says where to resume.
        for key in keys:
            self._buffered -= len(self._buffers.pop(key, []))

    # --- flushing ------------------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        if not self._buffered:
            return False
        assert self._first_buffered_at is not None
        return (
            self._buffered >= self.config.batch_size
            or now - self._first_buffered_at >= self.config.flush_interval_s
        )

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
        to_write: dict[TopicPartitionId, list[Message]] = {}
        marks: dict[TopicPartitionId, frozenset[int]] = {}
        for key, all_records in buffers.items():
            records = all_records
            change_stream = key[0] in self._change_streams
            if self._deleting is not None:
                records, removed = split_tombstones(
                    all_records,
                    marked_deletes=change_stream,
                    tombstones=deletes_by_tombstone(key[0]),
                )
                if removed:
                    deletes.setdefault(key[0], []).extend(removed)
            elif change_stream:
                # A sink that stores rows (ClickHouse) writes a delete as a row marked deleted.
                marks[key] = frozenset(r.offset() for r in records if is_delete(r.headers()))
            to_write[key] = records
        for key, decoded in decode_slices(to_write, self._columnar_inputs).items():
            for record, error in decoded.failures:
                self.dead_letter(record, str(error))
            dead += len(decoded.failures)
            end = buffers[key][-1].offset() + 1
            batches.append(
                PartitionBatch(
                    key,
                    decoded.messages,
                    [r.offset() for r in decoded.good],
                    end_offset=end,
                    deleted=marks.get(key, frozenset()),
                    columns=decoded.table,
                )
            )
            commits.append(TopicPartition(self.config.physical(key[0]), key[1], end))
        if dead:
            self.flush_produced()
        committing = time.perf_counter()
        try:
            written = self.sink.write_many(batches) if batches else 0
            if self._deleting is not None:
                for topic_name, keys in deletes.items():
                    written += self._deleting.delete(topic_name, keys)
        except StoreUnavailable as exc:
            self._store_lost(str(exc))
            return
        assert self._consumer is not None
        try:
            # Asynchronous: the sink's store, not this commit, decides where a restart resumes.
            self._consumer.commit(offsets=commits, asynchronous=True)
        except KafkaException as exc:
            log.warning("%s: offset commit failed: %s", self.group_id, exc)
        done = time.perf_counter()
        self.metrics.commit_seconds.observe(done - committing)
        self.metrics.consumed += consumed
        self.metrics.produced += written
        self.metrics.dead_lettered += dead
        for tp in commits:
            self.metrics.committed[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.record_batch(done - started)

    # --- the store out of reach ---------------------------------------------------------------
    def _store_lost(self, reason: str, *, pause: bool = True) -> None:
        """The store could not be written or read: commit nothing, pause every partition (the
        consumer keeps its group membership) and try the store again with backoff."""
        now = time.monotonic()
        delays = STORE_RETRY.delays()
        self._outage = _StoreOutage(now, reason, delays, now + next(delays))
        self.store_outages += 1
        if pause:
            assert self._consumer is not None
            self._consumer.pause(self.physical_assignment())
        log.warning(
            "%s: its store cannot be written (%s); committing nothing and waiting for it, "
            "then every partition resumes from what the store holds",
            self.group_id,
            reason,
        )

    def _try_store(self, now: float) -> None:
        outage, consumer = self._outage, self._consumer
        assert outage is not None and consumer is not None
        keys = sorted(self._owned)
        try:
            resume = self.sink.resume_offsets(keys) if keys else {}
        except StoreUnavailable as exc:
            outage.reason, outage.next_try = str(exc), now + next(outage.delays)
            return
        assignment = self.physical_assignment()
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in through_faults(
                lambda: consumer.committed(assignment, timeout=self.config.commit_timeout_s),
                f"{self.group_id}: reading its committed offsets",
                log,
            )
        }
        for (name, partition), tp in zip(keys, assignment, strict=True):
            offset = resume.get((name, partition))
            if offset is None:  # nothing stored yet: the group's commit, else the beginning
                offset = committed.get((tp.topic, tp.partition), -1)
                offset = offset if offset >= 0 else OFFSET_BEGINNING
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        consumer.resume(assignment)
        self._outage = None
        log.info(
            "%s: its store answers again after %.1f s; resuming %d partition(s) from it",
            self.group_id,
            now - outage.since,
            len(keys),
        )


def run_sink(
    worker: SinkWorker, stop: threading.Event | None = None, max_idle_s: float | None = None
) -> WorkerMetrics:
    """Run ``worker`` until ``stop``, SIGTERM/SIGINT (main thread only) or ``max_idle_s``."""
    stop = stop or threading.Event()
    with stop_on_signals(stop, worker.group_id):
        return worker.run(stop, max_idle_s=max_idle_s)
