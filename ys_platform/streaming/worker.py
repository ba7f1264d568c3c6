"""The transactional commit strategy: the exactly-once consume-transform-produce of processors.

One batch: decode and validate each partition's slice in bulk, hand it to the logic, and —
inside the open Kafka transaction — produce the outputs and the dead letters. The transaction
commits the consumed offsets (``send_offsets_to_transaction``) with everything produced since it
began. Readers with ``isolation.level=read_committed`` see its outputs exactly when its offsets
are committed.

A transaction spans the batches of up to ``commit_interval_s`` (Kafka Streams' model under
exactly-once, ``commit.interval.ms`` 100 ms): the commit's broker round trips and markers are
paid a few times a second, not once per batch. A batch whose logic emitted outputs commits at
once: outputs are invisible until their commit, so waiting would only add to their latency. A
rebalance commits the open transaction before the partitions go, and a normal stop commits it.

On an abortable transaction error the batch is aborted, the consumer rewinds to the committed
offsets and the state is rebuilt from there; a fatal error (this worker was fenced by a newer
instance with the same transactional id) stops the worker.

The member loop, rebalance callbacks, dead letters and lag are :class:`GroupMember`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ys_platform.catalog.codec import encode, is_delete, timestamp_ms, topic_of
from ys_platform.catalog.columnar import is_columnar
from ys_platform.catalog.topics import DEAD_LETTER_MAX_BYTES
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_faults import through_faults
from ys_platform.streaming.app import (
    BroadcastApp,
    ColumnarApp,
    ProcessResult,
    StreamApp,
    TopicPartitionId,
)
from ys_platform.streaming.broadcast import BroadcastReader
from ys_platform.streaming.member import (
    FENCED_CODES,
    DecodedSlice,
    GroupMember,
    MemberConfig,
    ProgressCallback,
    WorkerStopped,
    decode_slices,
)
from ys_platform.streaming.restore import encode_watermark, replay, replay_ranges

__all__ = ["ProgressCallback", "TransactionalWorker", "WorkerConfig", "WorkerStopped"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig(MemberConfig):
    commit_interval_s: float = 0.1
    """Longest a transaction stays open (unless a batch emitted outputs, which commits at once):
    Kafka Streams' ``commit.interval.ms`` under exactly-once. Each commit costs ~9 ms of broker
    round trips and writes a marker to every partition it touched."""
    batch_size: int = 20_000
    """Records per consume call, and per transaction (which then commits), at most: large
    enough to amortise the
    commit's ~9 ms of broker round trips and the columnar decoder's fixed cost per call
    (bench/price_aggregation.py, 1M ticks: 10,000 gave 53-74 % of the raw consume ceiling,
    20,000 gave 66-72 %). A steady input below that fills a batch per poll timeout, not per
    batch_size, so latency does not grow with it."""


@dataclass
class _OpenTransaction:
    """What the open transaction holds until it commits."""

    began: float
    """``time.monotonic()`` at ``begin_transaction``."""
    offsets: dict[TopicPartitionId, TopicPartition] = field(default_factory=dict)
    """The next offset (and watermark) to commit per partition, from its latest batch."""
    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    broadcast_rejects: list[tuple[Message, str]] = field(default_factory=list)
    """Records of the broadcast inputs dead-lettered in it (taken back if it aborts)."""
    busy_s: float = 0.0
    """Time spent decoding and processing its batches (consume waits excluded)."""


class RecordTimestamps(Sequence[int]):
    """The record timestamps of a slice, read from the records on first use only."""

    def __init__(self, records: Sequence[Message]) -> None:
        self._records = records
        self._values: list[int] | None = None

    def _all(self) -> list[int]:
        if self._values is None:
            self._values = [r.timestamp()[1] for r in self._records]
        return self._values

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...
    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        return self._all()[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._all())


class TransactionalWorker(GroupMember):
    """Runs a :class:`StreamApp` exactly once; see the module docstring."""

    def __init__(
        self,
        connection: KafkaConnection,
        app: StreamApp,
        config: WorkerConfig | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config: WorkerConfig = config or WorkerConfig()
        super().__init__(connection, app.group, self.config, on_progress)
        self.app = app
        self._broadcast_app = app if isinstance(app, BroadcastApp) else None
        self._broadcast: BroadcastReader | None = None
        self._columnar_app = app if isinstance(app, ColumnarApp) else None
        self._columnar_inputs = frozenset(
            name for name in app.group.inputs if self._columnar_app and is_columnar(name)
        )
        self._open: _OpenTransaction | None = None
        self._broadcast_rejects: list[tuple[Message, str]] = []

    @property
    def transactional_id(self) -> str:
        return self.member_id

    # --- hooks ---------------------------------------------------------------------------------
    def _start(self) -> Producer:
        producer = self.connection.producer(
            transactional_id=self.transactional_id,
            # Outputs leave at commit time anyway; a short linger only bounds the batch wait.
            linger_ms=5,
            message_max_bytes=DEAD_LETTER_MAX_BYTES,
        )
        producer.init_transactions(self.config.commit_timeout_s)
        app = self._broadcast_app
        if app is not None:
            self._broadcast = BroadcastReader(
                self.connection,
                [(self.config.physical(name), name) for name in app.broadcast_inputs],
                self.group_id,
                app.broadcast_lookback_ms,
            )
            app.on_broadcast(self._broadcast.start())
            self._take_broadcast_rejects()
        return producer

    def _subscribed_inputs(self) -> Sequence[str]:
        broadcast = self._broadcast_app.broadcast_inputs if self._broadcast_app else ()
        return [name for name in self.group.inputs if name not in broadcast]

    def _consume_limit(self) -> int:
        return self.config.batch_size

    def _take(self, slices: dict[TopicPartitionId, list[Message]], now: float) -> None:
        self._top_up_broadcast()
        self._process(slices)

    def _tick(self, now: float, took: bool) -> None:
        if not took:  # _take tops up itself, before the batch
            self._top_up_broadcast()
            if self._broadcast_rejects:
                try:
                    self._dead_letter_broadcast(self._begin())
                except KafkaException as exc:
                    self._recover(exc)
        open_ = self._open
        if open_ is not None and now - open_.began >= self.config.commit_interval_s:
            self._commit_open()

    def _finish(self) -> None:
        self._commit_open()

    def _close_strategy(self) -> None:
        # A transaction still open here was not finished (the worker failed): the broker aborts
        # it when the next instance with this transactional id starts, or at its timeout.
        self._open = None
        if self._broadcast is not None:
            self._broadcast.close()
            self._broadcast = None

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for key in self._keys(partitions):
            self.app.assign(key)
        self._restore(consumer, partitions)

    def _revoked(self, keys: list[TopicPartitionId]) -> None:
        # The open transaction holds these partitions' offsets: it commits while this member
        # still owns them (the group's generation is still this one's).
        self._commit_open(leaving=keys)
        for key in keys:
            self.app.revoke(key)

    def _lost(self, keys: list[TopicPartitionId]) -> None:
        # Another member may own these already: the open transaction's offsets for them would
        # be fenced, so it is aborted and the partitions kept are rewound to their commits.
        if self._open is not None:
            self._abort_open("partitions lost", keep=[k for k in self._owned if k not in keys])
        for key in keys:
            self.app.revoke(key)

    # --- processing ----------------------------------------------------------------------------
    def _top_up_broadcast(self) -> None:
        if self._broadcast is not None and self._broadcast_app is not None:
            reference = self._broadcast.top_up()
            if reference:
                self._broadcast_app.on_broadcast(reference)
            self._take_broadcast_rejects()

    def _take_broadcast_rejects(self) -> None:
        assert self._broadcast is not None
        self._broadcast_rejects += [(r, str(e)) for r, e in self._broadcast.take_rejected()]

    def _begin(self) -> _OpenTransaction:
        """The open transaction, begun if there is none."""
        if self._open is None:
            assert self._producer is not None
            self._producer.begin_transaction()
            self._open = _OpenTransaction(began=time.monotonic())
        return self._open

    def _dead_letter_broadcast(self, open_: _OpenTransaction) -> None:
        """Dead-letter the broadcast inputs' rejects in the open transaction.

        A broadcast input has no group committing its offsets, and its reader starts again from
        the lookback after a restart: a reject read again then is dead-lettered again (at least
        once, where the group's own inputs are exactly once); likewise by each replica."""
        rejects, self._broadcast_rejects = self._broadcast_rejects, []
        for record, reason in rejects:
            self.dead_letter(record, reason)
        open_.broadcast_rejects += rejects
        open_.dead_lettered += len(rejects)

    def _restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.app.restore_span_ms <= 0 or not partitions:
            return
        started = time.perf_counter()
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        committed = through_faults(
            lambda: consumer.committed(asked, timeout=self.config.commit_timeout_s),
            f"{self.group_id}: reading its committed offsets",
            log,
        )
        ranges = through_faults(
            lambda: replay_ranges(consumer, committed, self.app.restore_span_ms),
            f"{self.group_id}: finding where its state restore starts",
            log,
        )
        for (physical_topic, partition), records in replay(self.connection, ranges, self.group_id):
            key = (self.catalog_name(physical_topic), partition)
            decoded = decode_slices({key: self._events(key, records)}, self._columnar_inputs)
            self._apply(key, decoded[key])
            self.metrics.restored_records += len(records)
        self.metrics.restore_seconds.observe(time.perf_counter() - started)
        if ranges:
            log.info(
                "%s: restored %d partitions from %d records",
                self.group_id,
                len(ranges),
                self.metrics.restored_records,
            )

    def _events(self, key: TopicPartitionId, records: Sequence[Message]) -> Sequence[Message]:
        """The records a processor takes: on a change-stream topic the deletes of rows are
        left out. A processor reads these topics as events and facts (a transaction, a
        portfolio snapshot), and a deleted row is neither; it is consumed and committed like any
        record, in restores too."""
        if key[0] in self._change_streams:
            return [r for r in records if not is_delete(r.headers())]
        return records

    def _apply(self, key: TopicPartitionId, decoded: DecodedSlice) -> ProcessResult:
        """Run the app on one decoded slice; a columnar app gets a columnar input's table."""
        timestamps = RecordTimestamps(decoded.good)
        if decoded.table is not None and self._columnar_app is not None:
            return self._columnar_app.process_columns(key, decoded.table, timestamps)
        return self.app.process(key, decoded.messages, timestamps)

    def _process(self, slices: dict[TopicPartitionId, list[Message]]) -> None:
        started = time.perf_counter()
        decoded = decode_slices(
            {key: self._events(key, records) for key, records in slices.items()},
            self._columnar_inputs,
        )
        try:
            open_ = self._begin()
            if self._broadcast_rejects:
                self._dead_letter_broadcast(open_)
            emitted = 0
            for key, slice_ in slices.items():
                open_.consumed += len(slice_)
                good = decoded[key].good
                for record, error in decoded[key].failures:
                    self.dead_letter(record, str(error))
                open_.dead_lettered += len(decoded[key].failures)
                result = self._apply(key, decoded[key])
                for message in result.outputs:
                    self._emit(message)
                emitted += len(result.outputs)
                for rejected in result.rejected:
                    self.dead_letter(good[rejected.index], rejected.reason)
                open_.dead_lettered += len(result.rejected)
                open_.offsets[key] = TopicPartition(
                    self.config.physical(key[0]),
                    key[1],
                    slice_[-1].offset() + 1,
                    metadata=encode_watermark(self.app.watermark_ms(key)),
                )
            open_.produced += emitted
        except KafkaException as exc:
            self._recover(exc)
            return
        open_.busy_s += time.perf_counter() - started
        if (
            emitted
            or open_.consumed >= self.config.batch_size
            or time.monotonic() - open_.began >= self.config.commit_interval_s
        ):
            self._commit_open()

    def _commit_open(self, leaving: Sequence[TopicPartitionId] = ()) -> None:
        """Commit the open transaction, if any: its offsets with everything it produced.

        ``leaving``: partitions being revoked; if the commit aborts, only the others are rewound
        and rebuilt (the next owner reads the revoked ones from their commits)."""
        open_ = self._open
        if open_ is None:
            return
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        committing = time.perf_counter()
        offsets = list(open_.offsets.values())
        timeout = self.config.commit_timeout_s
        try:
            # A retriable error of either call may be retried (librdkafka's transactional API);
            # one that requires an abort goes to _recover.
            if offsets:  # none when it holds only the dead letters of a broadcast input
                through_faults(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), timeout
                    ),
                    f"{self.group_id}: adding its offsets to the transaction",
                    log,
                )
            through_faults(
                lambda: producer.commit_transaction(timeout),
                f"{self.group_id}: committing its transaction",
                log,
            )
        except KafkaException as exc:
            self._recover(exc, leaving)
            return
        self._open = None
        done = time.perf_counter()
        self.metrics.commit_seconds.observe(done - committing)
        self.metrics.consumed += open_.consumed
        self.metrics.produced += open_.produced
        self.metrics.dead_lettered += open_.dead_lettered
        for tp in offsets:
            self.metrics.committed[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.record_batch(open_.busy_s + done - committing)

    def _recover(self, exc: KafkaException, leaving: Sequence[TopicPartitionId] = ()) -> None:
        err: KafkaError = exc.args[0]
        if err.fatal() or not err.txn_requires_abort():
            raise WorkerStopped(
                f"{self.group_id}: transaction failed and cannot be retried: {err.str()}",
                fenced=err.code() in FENCED_CODES,
            ) from None
        self._abort_open(err.str(), keep=sorted(k for k in self._owned if k not in leaving))

    def _abort_open(self, reason: str, keep: Sequence[TopicPartitionId]) -> None:
        """Abort the open transaction and rewind the partitions of ``keep`` to their committed
        offsets, their state rebuilt from there: the aborted batches are read again."""
        log.warning("%s: aborting the open transaction and rewinding: %s", self.group_id, reason)
        assert self._producer is not None and self._consumer is not None
        if self._open is not None:  # its broadcast dead letters go again in the next one
            self._broadcast_rejects[:0] = self._open.broadcast_rejects
        self._open = None
        self._producer.abort_transaction(self.config.commit_timeout_s)
        self.metrics.aborted_transactions += 1
        assigned = [TopicPartition(self.config.physical(t), p) for t, p in keep]
        if not assigned:
            return
        consumer = self._consumer
        committed = through_faults(
            lambda: consumer.committed(assigned, timeout=self.config.commit_timeout_s),
            f"{self.group_id}: reading its committed offsets",
            log,
        )
        for tp in committed:
            # No committed offset yet: start where a fresh group would (auto.offset.reset).
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
            key = (self.catalog_name(tp.topic), tp.partition)
            self.app.revoke(key)
            self.app.assign(key)
        self._restore(self._consumer, assigned)

    def _emit(self, message) -> None:
        key, value, headers = encode(message)
        topic = self.config.physical(topic_of(message))
        self.produce(topic, key, value, headers, timestamp_ms(message))
