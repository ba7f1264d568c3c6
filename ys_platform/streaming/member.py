"""One consumer-group member: the loop every processor and every sink runs.

A member subscribes to its group's inputs with static membership, consumes batches, hands them to
its commit strategy and keeps what both strategies share: the namespace mapping between physical
and catalog topic names, the partitions it owns and since when (the idle clock), lag, dead
letters with their one produce-with-retry, and an orderly close. The two strategies are the two
subclasses:

* :class:`~ys_platform.streaming.worker.TransactionalWorker` (processors) commits outputs, dead
  letters and consumed offsets in one Kafka transaction;
* :class:`~ys_platform.streaming.sink_worker.SinkWorker` (sinks) lets the store own the offsets:
  each partition's offset range is stored beside its rows and the Kafka commit is a hint.

A subclass implements the ``_``-prefixed hooks below (``_start``, ``_take``, ``_tick``,
``_finish``, ``_assigned``, ``_revoked``, ``_lost``); the loop, the callbacks and the clocks are
here, once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ys_platform.catalog.codec import DecodeError, decode_batch, headers_of
from ys_platform.catalog.columnar import decode_columns
from ys_platform.catalog.envelope import (
    event_time_bounds_ms,
    event_time_error,
    header_error,
    key_error,
)
from ys_platform.catalog.models import MODELS
from ys_platform.catalog.topics import ConsumerGroupSpec
from ys_platform.clients.kafka import KafkaConnection, produce_record, valid_records
from ys_platform.streaming.app import TopicPartitionId
from ys_platform.streaming.dead_letter import dead_letter_headers
from ys_platform.streaming.exporter import (
    MetricsEndpoint,
    MetricsPortsExhausted,
    MetricsServer,
    WorkerIdentity,
)
from ys_platform.streaming.metrics import WorkerMetrics

log = logging.getLogger(__name__)

_PARTITION = operator.methodcaller("partition")
_TOPIC = operator.methodcaller("topic")

ProgressCallback = Callable[[WorkerMetrics], None]


def standalone_instance_id() -> str:
    """An instance id no Dagster replica uses, for a worker started by hand without one.

    It joins the group beside the Dagster replicas (the partitions are shared among all members)
    instead of taking replica 0's static membership and transactional id, which would fence the
    Dagster run, whose relaunch would then fence this one in turn.
    """
    return f"standalone-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class MemberConfig:
    """What every member is configured with; the strategies add their batch settings."""

    poll_timeout_s: float = 0.05
    """Longest wait of one consume call for a batch that is not full: at a steady input below
    a full batch per poll it is added to every record's latency (bench/latency.py: p50 669 ms
    with 0.2 s, 268 ms with 0.02 s at 20,000 msg/s); at high rates batches fill first."""
    progress_interval_s: float = 5.0
    commit_timeout_s: float = 60.0
    namespace: str = ""
    """Prefix of every physical topic, group and transactional id: isolates a test, a replay or
    a staging copy from the catalog's topics on the same cluster."""
    instance_id: str | None = None
    """This replica's stable id among the group's members: its ``group.instance.id`` (static
    membership, so a restarted replica takes its partitions back at once, not after the dead
    one's session timeout) and, for processors, its transactional id (a restart fences the open
    transaction of its predecessor). None: :func:`standalone_instance_id`."""
    metrics: MetricsEndpoint | None = field(default_factory=MetricsEndpoint.from_settings)
    """Where the worker serves its Prometheus metrics while it runs (from the settings:
    ``YS_WORKER_METRICS_*`` and ``YS_HOME``); None serves none."""

    def physical(self, name: str) -> str:
        return f"{self.namespace}{name}"


# What a worker whose id another instance took over gets: its producer fenced by the newer
# transactional id's epoch, or its static member id taken by a newer consumer.
FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class WorkerStopped(RuntimeError):
    """The worker cannot go on (fenced, a fatal client error, undeliverable dead letters); the
    message says why. ``fenced``: another instance with this worker's id took over, so starting
    this one again would only fence that one in turn."""

    def __init__(self, message: str, *, fenced: bool = False) -> None:
        super().__init__(message)
        self.fenced = fenced


class _Deliveries:
    """Delivery reports of the dead-letter path (served inside poll/flush): the first failure."""

    def __init__(self) -> None:
        self.failed: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.failed is None:
            self.failed = f"{msg.topic()}: {err.str()}"


@dataclass(frozen=True)
class DecodedSlice:
    """One partition's slice of a batch, decoded: the valid records as models or as a table
    (a row or model per record of ``good``, in offset order) and the failures."""

    good: Sequence[Message]
    failures: list[tuple[Message, DecodeError]]
    messages: Sequence[Any] = ()
    table: pa.Table | None = None


def _decode_models(topic: str, records: Sequence[Message]) -> DecodedSlice:
    messages, failures = decode_batch(topic, [r.value() for r in records])
    if not failures:
        return DecodedSlice(records, [], messages)
    failed = {index for index, _ in failures}
    good = [r for i, r in enumerate(records) if i not in failed]
    return DecodedSlice(good, [(records[i], error) for i, error in failures], messages)


def _decode_columns(
    topic: str,
    keys: Sequence[TopicPartitionId],
    slices: Mapping[TopicPartitionId, Sequence[Message]],
) -> dict[TopicPartitionId, DecodedSlice]:
    records: list[Message] = []
    bounds = [0]
    for key in keys:
        records.extend(slices[key])
        bounds.append(len(records))
    batch = decode_columns(topic, [r.value() for r in records], threads=True)
    out: dict[TopicPartitionId, DecodedSlice] = {}
    if not batch.failures:
        for i, key in enumerate(keys):
            start, stop = bounds[i], bounds[i + 1]
            out[key] = DecodedSlice(slices[key], [], table=batch.table.slice(start, stop - start))
        return out
    # Rows are the valid records in input order: each partition's rows are one run of them.
    rows = np.searchsorted(batch.indices, bounds).tolist()
    failed_at = [index for index, _ in batch.failures]
    failures = np.searchsorted(failed_at, bounds).tolist()
    indices = batch.indices.tolist()
    for i, key in enumerate(keys):
        first, last = rows[i], rows[i + 1]
        out[key] = DecodedSlice(
            [records[j] for j in indices[first:last]],
            [(records[j], error) for j, error in batch.failures[failures[i] : failures[i + 1]]],
            table=batch.table.slice(first, last - first),
        )
    return out


def decode_slices(
    slices: Mapping[TopicPartitionId, Sequence[Message]],
    columnar: AbstractSet[str] = frozenset(),
    now_ms: int | None = None,
) -> dict[TopicPartitionId, DecodedSlice]:
    """Decode and validate a batch, partition by partition, in bulk.

    A record is valid when its envelope fits the catalog (a UTF-8 key, the topic's
    ``schema-version`` if it names one: :mod:`~ys_platform.catalog.envelope`), its value is a
    message of the topic, and its event time is plausible at ``now_ms`` (the wall clock if
    None); each failure says which.

    The partitions of a topic in ``columnar`` are decoded together, in ONE call into an
    Arrow table (:func:`~ys_platform.catalog.columnar.decode_columns`), then sliced per
    partition: the decoder's fixed cost per call (its ~50 vectorised checks) is paid once per
    batch, not once per partition — on 12 partitions of a 10,000-record batch that is the
    difference between ~4 and ~2.5 µs per record here. The others become models
    (:func:`~ys_platform.catalog.codec.decode_batch`) per partition.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    admitted: dict[TopicPartitionId, Sequence[Message]] = {}
    refused: dict[TopicPartitionId, list[tuple[Message, DecodeError]]] = {}
    for key, records in slices.items():
        admitted[key], refused[key] = _envelopes(key[0], records)
    out: dict[TopicPartitionId, DecodedSlice] = {}
    by_topic: dict[str, list[TopicPartitionId]] = {}
    for key, records in admitted.items():
        if key[0] in columnar:
            by_topic.setdefault(key[0], []).append(key)
        else:
            out[key] = _decode_models(key[0], records)
    for topic, keys in by_topic.items():
        out.update(_decode_columns(topic, keys, admitted))
    return {key: _plausible(key[0], decoded, now_ms, refused[key]) for key, decoded in out.items()}


def _envelopes(
    topic: str, records: Sequence[Message]
) -> tuple[Sequence[Message], list[tuple[Message, DecodeError]]]:
    """The records whose key and headers fit ``topic``, and the others with the reason.

    In C for the common batch (~0.2 µs a record): one UTF-8 check of all the keys joined (a
    newline cannot end a truncated sequence, so they are UTF-8 exactly when each is), and the
    headers compared with what the catalog's producers write; record by record only where
    that differs (CDC records, whose headers are the connector's, or a suspect)."""
    keys = list(map(_KEY, records))
    keys_ok = True
    try:
        b"\n".join(filter(None, keys)).decode()
    except UnicodeDecodeError:
        keys_ok = False
    usual = _usual_headers(topic)
    headers = list(map(_HEADERS, records))
    suspects = [i for i, h in enumerate(headers) if h is not None and h != usual]
    if not keys_ok:
        suspects = sorted({*suspects, *range(len(records))})
    refused: list[tuple[Message, DecodeError]] = []
    refused_at: set[int] = set()
    for i in suspects:
        error = header_error(topic, headers[i]) or (None if keys_ok else key_error(topic, keys[i]))
        if error is not None:
            refused.append((records[i], error))
            refused_at.add(i)
    if not refused:
        return records, refused
    return [r for i, r in enumerate(records) if i not in refused_at], refused


_KEY = operator.methodcaller("key")
_HEADERS = operator.methodcaller("headers")


@functools.cache
def _usual_headers(topic: str) -> list[tuple[str, bytes]]:
    """The headers the catalog's producers put on every message of ``topic`` (codec.encode)."""
    return list(headers_of(MODELS[topic]))


def _plausible(
    topic: str,
    decoded: DecodedSlice,
    now_ms: int,
    refused: list[tuple[Message, DecodeError]],
) -> DecodedSlice:
    """``decoded`` without the records whose event time is implausible at ``now_ms``; those
    and the ``refused`` join its failures (in offset order)."""
    earliest, latest = event_time_bounds_ms(now_ms)
    field = MODELS[topic].EVENT_TIME_FIELD
    if decoded.table is not None:
        event_ms = decoded.table.column(field).cast(pa.int64()).to_numpy()
        bad = np.flatnonzero((event_ms < earliest) | (event_ms > latest)).tolist()
    else:
        # Datetimes compared in C; the bounds in the messages' own tzinfo (pydantic's TzInfo(0),
        # one object), since two aware datetimes of different tzinfo objects compare through
        # utcoffset(): 0.2 instead of 1.1 µs a message (100k market.prices models).
        times = list(map(operator.attrgetter(field), decoded.messages))
        zone = times[0].tzinfo if times else UTC
        low, high = _datetime_of(earliest).astimezone(zone), _datetime_of(latest).astimezone(zone)
        bad = [i for i, t in enumerate(times) if not low <= t <= high]
    if not bad:
        if not refused:
            return decoded
        failures = sorted([*decoded.failures, *refused], key=_offset_of_failure)
        return DecodedSlice(decoded.good, failures, decoded.messages, decoded.table)
    late = [(decoded.good[i], _event_time_error(topic, decoded, field, i, now_ms)) for i in bad]
    failures = sorted([*decoded.failures, *refused, *late], key=_offset_of_failure)
    out = set(bad)
    kept = [i for i in range(len(decoded.good)) if i not in out]
    return DecodedSlice(
        [decoded.good[i] for i in kept],
        failures,
        [decoded.messages[i] for i in kept] if decoded.table is None else (),
        None if decoded.table is None else decoded.table.take(np.asarray(kept, np.int64)),
    )


def _datetime_of(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _event_time_error(
    topic: str, decoded: DecodedSlice, field: str, i: int, now_ms: int
) -> DecodeError:
    if decoded.table is not None:
        event = decoded.table.column(field)[i].as_py()
    else:
        event = getattr(decoded.messages[i], field)
    error = event_time_error(topic, (event - _EPOCH) // timedelta(milliseconds=1), now_ms)
    assert error is not None
    return error


def _offset_of_failure(failure: tuple[Message, DecodeError]) -> int:
    return failure[0].offset()


class GroupMember:
    """The shared member; see the module docstring. Not used directly."""

    def __init__(
        self,
        connection: KafkaConnection,
        group: ConsumerGroupSpec,
        config: MemberConfig,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.group = group
        self.config = config
        # The member's own principal (its group id) where each component has one.
        self.connection = connection.as_principal(self.group_id)
        self.instance_id = config.instance_id or standalone_instance_id()
        self.on_progress = on_progress
        self.metrics = WorkerMetrics(group_id=self.group_id)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._deliveries = _Deliveries()
        self._owned: set[TopicPartitionId] = set()
        self._rebalance_failure: BaseException | None = None
        self._assigned_at: float | None = None
        self._change_streams = group.change_stream_inputs

    @property
    def group_id(self) -> str:
        return self.config.physical(self.group.group_id)

    @property
    def member_id(self) -> str:
        """``group.instance.id`` of this member (and, for processors, its transactional id)."""
        return f"{self.group_id}.{self.instance_id}"

    def catalog_name(self, physical_topic: str) -> str:
        return physical_topic.removeprefix(self.config.namespace)

    # --- hooks of the strategies ---------------------------------------------------------------
    def _start(self) -> Producer:
        """Open what the strategy needs before the group is joined; return the producer."""
        raise NotImplementedError

    def _subscribed_inputs(self) -> Sequence[str]:
        """Catalog names of the inputs read as a group member."""
        return self.group.inputs

    def _consume_limit(self) -> int:
        raise NotImplementedError

    def _take(self, slices: dict[TopicPartitionId, list[Message]], now: float) -> None:
        """Handle one consumed batch, split by partition in offset order."""
        raise NotImplementedError

    def _tick(self, now: float, took: bool) -> None:
        """Called once per loop, after ``_take`` if records came (``took``): time-based work."""

    def _finish(self) -> None:
        """Called on a normal stop, before closing: commit what is held."""

    def _close_strategy(self) -> None:
        """Release what ``_start`` opened; called once, also after a failure."""

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions were assigned (``self._owned`` already includes them)."""

    def _revoked(self, keys: list[TopicPartitionId]) -> None:
        """Partitions are being revoked while still owned (before ``_owned`` drops them)."""

    def _lost(self, keys: list[TopicPartitionId]) -> None:
        """Partitions were lost (the session expired): another member may own them already."""
        self._revoked(keys)

    # --- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_idle_s: float | None = None) -> WorkerMetrics:
        """Work until ``stop`` is set (or nothing arrived for ``max_idle_s``), then close.

        What is in hand when ``stop`` is set is finished and committed first. Idleness counts
        from the later of the last record and the last partition assignment: waiting to join the
        group is not idleness (see :meth:`_idle`).
        """
        server = self._metrics_server()
        try:
            if server is not None:
                try:
                    server.start()
                except MetricsPortsExhausted as exc:
                    raise WorkerStopped(str(exc)) from None
            self._producer = self._start()
            self._consumer = self.connection.consumer(
                self.group_id, group_instance_id=self.member_id
            )
            self._consumer.subscribe(
                [self.config.physical(name) for name in self._subscribed_inputs()],
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
                    self._take(self._split(records), now)
                self._tick(now, bool(records))
                if (
                    not records
                    and max_idle_s is not None
                    and self._idle(now, last_data, started, max_idle_s)
                ):
                    break
                if now - last_progress >= self.config.progress_interval_s:
                    self.update_lag()  # cached watermarks: no broker round trip
                    if self.on_progress:
                        self.on_progress(self.metrics)
                    last_progress = now
            self._finish()
            self.update_lag()
        finally:
            try:
                self._close()
            finally:
                if server is not None:
                    server.stop()
        return self.metrics

    def _metrics_server(self) -> MetricsServer | None:
        endpoint = self.config.metrics
        if endpoint is None:
            return None
        identity = WorkerIdentity(
            worker=self.group.group_id,
            group=self.group_id,
            replica=self.instance_id,
            kind=self.group.kind,
        )
        return MetricsServer(endpoint, self.metrics, identity)

    def _consume(self) -> list[Message]:
        assert self._consumer is not None
        batch = self._consumer.consume(
            num_messages=self._consume_limit(), timeout=self.config.poll_timeout_s
        )
        self._raise_rebalance_failure()
        try:
            return valid_records(batch, self.group_id)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            raise WorkerStopped(
                f"{self.group_id}: consumer failed: {err.str()}", fenced=err.code() in FENCED_CODES
            ) from None

    def _split(self, records: list[Message]) -> dict[TopicPartitionId, list[Message]]:
        """The batch by (catalog topic, partition), each slice in offset order."""
        by_physical: dict[tuple[str, int], list[Message]] = {}
        # librdkafka hands a fetch over partition by partition, so the batch is a few long runs
        # of one partition: found in C (groupby on the partition) and each checked for one
        # topic in C, instead of a dict lookup and a tuple per record (1.2 us a record of the
        # ClickHouse sink's loop, 300k ticks, cProfile).
        for partition, run in itertools.groupby(records, _PARTITION):
            slice_ = list(run)
            topics = set(map(_TOPIC, slice_))
            if len(topics) == 1:
                key = (topics.pop(), partition)
                slot = by_physical.get(key)
                if slot is None:
                    by_physical[key] = slice_
                else:
                    slot.extend(slice_)
                continue
            # Two topics' same partition number side by side: record by record.
            for record in slice_:
                by_physical.setdefault((record.topic(), partition), []).append(record)
        # The catalog name once per partition, not per record.
        return {(self.catalog_name(t), p): slot for (t, p), slot in by_physical.items()}

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
        try:
            if self._consumer is not None:
                try:
                    self._consumer.close()
                except KafkaException as exc:
                    log.warning("%s: closing the consumer failed: %s", self.group_id, exc)
                failure, self._rebalance_failure = self._rebalance_failure, None
                if failure is not None:  # the revocation on close: what it held is not committed
                    log.error("%s: on closing, %s", self.group_id, failure)
            if self._producer is not None:
                try:
                    self._producer.flush(self.config.commit_timeout_s)
                except KafkaException as exc:  # a fatal producer (fenced): nothing left to send
                    log.warning("%s: closing the producer: %s", self.group_id, exc.args[0].str())
        finally:
            self._consumer = self._producer = None
            self._close_strategy()

    # --- rebalance callbacks -------------------------------------------------------------------
    def _keys(self, partitions: list[TopicPartition]) -> list[TopicPartitionId]:
        return [(self.catalog_name(tp.topic), tp.partition) for tp in partitions]

    # An error must not leave a rebalance callback: confluent-kafka (2.x) then calls its logger
    # with the exception still set, and consume() dies with a SystemError instead of the error
    # (seen under a rolling broker restart, issue 11). Each callback keeps its first failure and
    # _consume raises it once consume() has returned.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self._owned.update(self._keys(partitions))
            self._assigned(consumer, partitions)
            self._assigned_at = time.monotonic()  # the idle clock restarts after a rebalance
        except BaseException as exc:
            self._callback_failed("taking its new partitions", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            keys = self._keys(partitions)
            self._revoked(keys)
            self._owned.difference_update(keys)
        except BaseException as exc:
            self._callback_failed("handing its partitions over", exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            keys = self._keys(partitions)
            self._lost(keys)
            self._owned.difference_update(keys)
        except BaseException as exc:
            self._callback_failed("dropping its lost partitions", exc)

    def _callback_failed(self, what: str, exc: BaseException) -> None:
        if self._rebalance_failure is None:
            if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
                err: KafkaError = exc.args[0]
                exc = WorkerStopped(
                    f"{self.group_id}: {what} failed: {err.str()}",
                    fenced=err.code() in FENCED_CODES,
                )
            self._rebalance_failure = exc

    def _raise_rebalance_failure(self) -> None:
        failure, self._rebalance_failure = self._rebalance_failure, None
        if failure is not None:
            raise failure

    def physical_assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.config.physical(t), p) for t, p in sorted(self._owned)]

    # --- shared pieces -------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce one record to a *physical* topic with this member's producer."""
        assert self._producer is not None
        produce_record(self._producer, topic, value, key, headers, timestamp_ms, self._deliveries)

    def dead_letter(self, record: Message, reason: str) -> None:
        """Send ``record``'s original bytes to the group's DLQ, with headers saying why."""
        self.produce(
            self.config.physical(self.group.dead_letter_topic),
            record.key(),
            record.value(),
            dead_letter_headers(record, reason, self.group_id),
        )

    def flush_produced(self) -> None:
        """Wait until everything produced outside a transaction is acknowledged; stop if not."""
        assert self._producer is not None
        remaining = self._producer.flush(self.config.commit_timeout_s)
        if remaining or self._deliveries.failed:
            raise WorkerStopped(
                f"{self.group_id}: dead letters not delivered ({remaining} pending; "
                f"{self._deliveries.failed or 'timed out'}); stopping before the work moves past "
                "their records"
            )

    def update_lag(self) -> None:
        """Offset lag per owned partition: high watermark − position (cached watermarks)."""
        consumer = self._consumer
        if consumer is None or not self._owned:
            return
        try:
            for tp in consumer.position(self.physical_assignment()):
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag[f"{tp.topic}[{tp.partition}]"] = max(high - tp.offset, 0)
        except KafkaException as exc:
            log.debug("lag update failed: %s", exc)
