"""The exactly-once consume-transform-produce loop that runs every processor.

One iteration: consume a batch, decode and validate it in bulk per partition, hand each
partition's slice to the logic, then — inside one Kafka transaction — produce the outputs and the
dead letters and commit the consumed offsets (``send_offsets_to_transaction``). Readers with
``isolation.level=read_committed`` see a batch's outputs exactly when its offsets are committed.

On an abortable transaction error the batch is aborted, the consumer rewinds to the committed
offsets and the state is rebuilt from there; a fatal error (this worker was fenced by a newer
instance with the same transactional id) stops the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ys_platform.catalog.codec import (
    DecodeError,
    decode_batch,
    encode,
    is_delete,
    timestamp_ms,
    topic_of,
)
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.streaming.app import StreamApp, TopicPartitionId
from ys_platform.streaming.broadcast import BroadcastReader
from ys_platform.streaming.dead_letter import dead_letter_headers
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.restore import encode_watermark, replay, replay_ranges

log = logging.getLogger(__name__)

ProgressCallback = Callable[[WorkerMetrics], None]


@dataclass(frozen=True)
class WorkerConfig:
    batch_size: int = 10_000
    """Records per consume call and per transaction: large enough to amortise the commit's
    ~9 ms of broker round trips (bench/README.md: 5,000 → 10,000 gained ~10 %), small enough to
    keep a batch well under the 5 s emit interval."""
    poll_timeout_s: float = 0.2
    instance_id: str = "0"
    """Stable per replica: a restarted replica fences its predecessor's open transaction."""
    progress_interval_s: float = 5.0
    commit_timeout_s: float = 60.0
    namespace: str = ""
    """Prefix of every physical topic, group and transactional id: isolates a test, a replay or
    a staging copy from the catalog's topics on the same cluster."""

    def physical(self, name: str) -> str:
        return f"{self.namespace}{name}"


class WorkerStopped(RuntimeError):
    """The worker cannot go on (fenced, or a fatal client error); the message says why."""


class TransactionalWorker:
    def __init__(
        self,
        connection: KafkaConnection,
        app: StreamApp,
        config: WorkerConfig | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.connection = connection
        self.app = app
        self.config = config or WorkerConfig()
        self.on_progress = on_progress
        self.group = app.group
        self.metrics = WorkerMetrics(group_id=self.group_id)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned: set[TopicPartitionId] = set()
        self._assigned_at: float | None = None
        self._broadcast: BroadcastReader | None = None
        self._change_streams = self.group.change_stream_inputs

    @property
    def group_id(self) -> str:
        return self.config.physical(self.group.group_id)

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}.{self.config.instance_id}"

    def _catalog_name(self, physical_topic: str) -> str:
        return physical_topic.removeprefix(self.config.namespace)

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, max_idle_s: float | None = None) -> WorkerMetrics:
        """Process until ``stop`` is set (or nothing arrived for ``max_idle_s``), then close.

        The batch in hand when ``stop`` is set is finished and committed first. Idleness counts
        from the later of the last record and the last partition assignment: waiting to join the
        group is not idleness (see :meth:`_idle`).
        """
        self._producer = self.connection.producer(
            transactional_id=self.transactional_id,
            # Outputs leave at commit time anyway; a short linger only bounds the batch wait.
            linger_ms=5,
        )
        self._producer.init_transactions(self.config.commit_timeout_s)
        broadcast = getattr(self.app, "broadcast_inputs", ())
        if broadcast:
            self._broadcast = BroadcastReader(
                self.connection,
                [(self.config.physical(name), name) for name in broadcast],
                self.group_id,
                self.app.broadcast_lookback_ms,
            )
            self.app.on_broadcast(self._broadcast.start())
        # Static membership: a replica restarted after a crash takes its partitions back at once
        # instead of waiting out its dead predecessor's session (30 s), and a second copy of the
        # same replica is fenced rather than sharing the work.
        self._consumer = self.connection.consumer(
            self.group_id, group_instance_id=self.transactional_id
        )
        self._consumer.subscribe(
            [self.config.physical(name) for name in self.group.inputs if name not in broadcast],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        started = last_progress = last_data = time.monotonic()
        try:
            while not stop.is_set():
                records = self._consume()
                if self._broadcast is not None:
                    reference = self._broadcast.top_up()
                    if reference:
                        self.app.on_broadcast(reference)
                now = time.monotonic()
                if records:
                    self._process(records)
                    last_data = now
                elif max_idle_s is not None and self._idle(now, last_data, started, max_idle_s):
                    break
                if self.on_progress and now - last_progress >= self.config.progress_interval_s:
                    self._update_lag()
                    self.on_progress(self.metrics)
                    last_progress = now
        finally:
            self._close()
        self._update_lag()
        return self.metrics

    def _idle(self, now: float, last_data: float, started: float, max_idle_s: float) -> bool:
        if self._assigned_at is not None:
            return now - max(last_data, self._assigned_at) > max_idle_s
        # Not assigned yet: still joining the group. A worker restarted after a crash waits out
        # its dead predecessor's session (session.timeout.ms) before the group rebalances, often
        # longer than max_idle_s; stopping then would exit "idle" without draining anything.
        # Still bounded, so an unreachable cluster does not keep a drain-and-exit run forever.
        config = self.connection.consumer_config(self.group_id)
        session_s = float(config.get("session.timeout.ms", 45_000)) / 1000
        return now - started > 2 * session_s + max_idle_s

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as exc:
                log.warning("%s: closing the consumer failed: %s", self.group_id, exc)
        if self._producer is not None:
            self._producer.flush(self.config.commit_timeout_s)
        if self._broadcast is not None:
            self._broadcast.close()
        self._consumer = self._producer = self._broadcast = None

    # --- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(self._catalog_name(tp.topic), tp.partition) for tp in partitions]
        for key in keys:
            self.app.assign(key)
        self._assigned.update(keys)
        self._restore(consumer, partitions)
        self._assigned_at = time.monotonic()  # the idle clock restarts after a rebalance

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch commits before the next consume, so nothing is in flight here.
        for tp in partitions:
            key = (self._catalog_name(tp.topic), tp.partition)
            self.app.revoke(key)
            self._assigned.discard(key)

    def _restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.app.restore_span_ms <= 0 or not partitions:
            return
        committed = consumer.committed(
            [TopicPartition(tp.topic, tp.partition) for tp in partitions],
            timeout=self.config.commit_timeout_s,
        )
        ranges = replay_ranges(consumer, committed, self.app.restore_span_ms)
        for (physical_topic, partition), records in replay(self.connection, ranges, self.group_id):
            key = (self._catalog_name(physical_topic), partition)
            messages, _, good = self._decode(key, records)
            self.app.process(key, messages, [r.timestamp()[1] for r in good])
            self.metrics.restored_records += len(records)
        if ranges:
            log.info(
                "%s: restored %d partitions from %d records",
                self.group_id,
                len(ranges),
                self.metrics.restored_records,
            )

    # --- the loop ----------------------------------------------------------------------------
    def _consume(self) -> list[Message]:
        assert self._consumer is not None
        batch = self._consumer.consume(
            num_messages=self.config.batch_size, timeout=self.config.poll_timeout_s
        )
        records = []
        for record in batch:
            err = record.error()
            if err is None:
                records.append(record)
            elif err.fatal():
                raise WorkerStopped(f"{self.group_id}: consumer failed: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consume error: %s", self.group_id, err.str())
        return records

    def _decode(
        self, key: TopicPartitionId, records: list[Message]
    ) -> tuple[list, list[tuple[Message, DecodeError]], list[Message]]:
        """``(messages, [(record, error), ...], the records of messages)`` for one partition.

        On a change-stream topic the deletes of rows are left out: a processor reads these
        topics as events and facts (a transaction, a portfolio snapshot), and a deleted row is
        neither; it is consumed and committed like any record, in restores too.
        """
        if key[0] in self._change_streams:
            records = [r for r in records if not is_delete(r.headers())]
        messages, failures = decode_batch(key[0], [r.value() for r in records])
        if not failures:
            return messages, [], records
        failed = {index for index, _ in failures}
        good = [r for i, r in enumerate(records) if i not in failed]
        return messages, [(records[i], error) for i, error in failures], good

    def _process(self, records: list[Message]) -> None:
        started = time.perf_counter()
        by_partition: dict[TopicPartitionId, list[Message]] = {}
        for record in records:
            key = (self._catalog_name(record.topic()), record.partition())
            by_partition.setdefault(key, []).append(record)

        producer = self._producer
        assert producer is not None and self._consumer is not None
        producer.begin_transaction()
        produced = dead = 0
        offsets = []
        try:
            for key, slice_ in by_partition.items():
                messages, failures, good = self._decode(key, slice_)
                for record, error in failures:
                    self._dead_letter(record, str(error))
                dead += len(failures)
                result = self.app.process(key, messages, [r.timestamp()[1] for r in good])
                for message in result.outputs:
                    self._emit(message)
                produced += len(result.outputs)
                for rejected in result.rejected:
                    self._dead_letter(good[rejected.index], rejected.reason)
                dead += len(result.rejected)
                offsets.append(
                    TopicPartition(
                        self.config.physical(key[0]),
                        key[1],
                        slice_[-1].offset() + 1,
                        metadata=encode_watermark(self.app.watermark_ms(key)),
                    )
                )
            producer.send_offsets_to_transaction(
                offsets, self._consumer.consumer_group_metadata(), self.config.commit_timeout_s
            )
            self._commit(producer)
        except KafkaException as exc:
            self._recover(exc)
            return
        self.metrics.consumed += len(records)
        self.metrics.produced += produced
        self.metrics.dead_lettered += dead
        for tp in offsets:
            self.metrics.committed[f"{tp.topic}[{tp.partition}]"] = tp.offset
        self.metrics.record_batch(time.perf_counter() - started)

    def _commit(self, producer: Producer) -> None:
        while True:
            try:
                producer.commit_transaction(self.config.commit_timeout_s)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    continue
                raise

    def _recover(self, exc: KafkaException) -> None:
        err: KafkaError = exc.args[0]
        if err.fatal() or not err.txn_requires_abort():
            raise WorkerStopped(
                f"{self.group_id}: transaction failed and cannot be retried: {err.str()}"
            ) from None
        log.warning("%s: aborting the batch and rewinding: %s", self.group_id, err.str())
        assert self._producer is not None and self._consumer is not None
        self._producer.abort_transaction(self.config.commit_timeout_s)
        self.metrics.aborted_transactions += 1
        assigned = self._physical_assignment()
        committed = self._consumer.committed(assigned, timeout=self.config.commit_timeout_s)
        for tp in committed:
            # No committed offset yet: start where a fresh group would (auto.offset.reset).
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
            key = (self._catalog_name(tp.topic), tp.partition)
            self.app.revoke(key)
            self.app.assign(key)
        self._restore(self._consumer, assigned)

    def _physical_assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.config.physical(t), p) for t, p in sorted(self._assigned)]

    def _emit(self, message) -> None:
        key, value, headers = encode(message)
        topic = self.config.physical(topic_of(message))
        self._produce(topic, key, value, headers, timestamp_ms(message))

    def _dead_letter(self, record: Message, reason: str) -> None:
        headers = dead_letter_headers(record, reason, self.group_id)
        topic = self.config.physical(self.group.dead_letter_topic)
        self._produce(topic, record.key(), record.value(), headers, None)

    def _produce(self, topic, key, value, headers, timestamp) -> None:
        assert self._producer is not None
        kwargs = {"timestamp": timestamp} if timestamp is not None else {}
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            positions = consumer.position(self._physical_assignment())
            for tp in positions:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag[f"{tp.topic}[{tp.partition}]"] = max(high - tp.offset, 0)
        except KafkaException as exc:
            log.debug("lag update failed: %s", exc)
