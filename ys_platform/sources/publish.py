"""Produce simulated (or any catalog) messages to Kafka, or the CDC-captured ones to PostgreSQL.

Records carry the catalog's key and headers (``codec.encode_record``) and the
message's event time as their timestamp, so windows, retention and ``offsets_for_times`` all see
event time. :func:`publish` paces to a rate of wall time (``make dev``) or goes as fast as the
producer allows; given a :class:`~ys_platform.sources.record.RecordWriter`, it writes messages of
the CDC-captured topics into their tables of record instead. :func:`fill_topic` pre-fills a
topic with already-encoded records for a benchmark; :func:`run_simulation` is what
``ys-platform simulate`` and ``make dev`` run.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from ys_platform.catalog.codec import CONTENT_TYPE, encode_record, headers_of, topic_of
from ys_platform.catalog.models import MODELS, Message
from ys_platform.clients.kafka import (
    POLL_EVERY,
    AckWatch,
    DeliveryError,
    KafkaConnection,
    flush_watched,
    produce_record,
)
from ys_platform.clients.postgres import open_postgres
from ys_platform.sources.record import RecordWriter

if TYPE_CHECKING:
    from ys_platform.settings import Settings

__all__ = ["FILL_PRODUCER_OVERRIDES", "Pace", "fill_topic", "publish", "run_simulation"]

Pace = Callable[[int, Message], None]
"""``pace(i, message)`` returns when message ``i`` of a stream is due to be produced."""

FILL_PRODUCER_OVERRIDES: dict[str, Any] = {
    # Throughput over latency for a one-off bulk load: 1 MB batches, filled for up to 50 ms,
    # compressed with lz4 (cheaper to compress than snappy at a similar ratio on JSON).
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    # Room for a few seconds of records in flight at several 100k/s (librdkafka's maxima are
    # far higher; its defaults of 100k messages / 1 GB would stall the loop on the count).
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}

# Under this much lead over the schedule we do not sleep: sleeping has ~0.1 ms granularity and a
# fast stream would spend more time waking up than producing.
_MIN_SLEEP_S = 0.002


class _Deliveries:
    """Collects delivery failures from librdkafka's callbacks (run inside poll/flush)."""

    def __init__(self) -> None:
        self.failures = 0
        self.first: str | None = None

    def __call__(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:
            self.failures += 1
            if self.first is None:
                self.first = f"{msg.topic()}[{msg.partition()}]: {err.str()}"

    def check(self, count: int) -> None:
        if self.failures:
            raise DeliveryError(
                f"{self.failures} of {count} messages were not delivered; first: {self.first}"
            )


def publish(
    connection: KafkaConnection,
    messages: Iterable[Message],
    *,
    rate: float | None = None,
    pace: Pace | None = None,
    namespace: str = "",
    stop: threading.Event | None = None,
    counts: Counter[str] | None = None,
    flush_timeout_s: float = 60.0,
    records: RecordWriter | None = None,
    **producer_overrides: Any,
) -> int:
    """Produce ``messages`` to their catalog topics; returns how many were produced and acked.

    ``rate`` paces to that many messages per second of wall time (None: as fast as possible);
    ``pace``, when given, is the schedule instead (the load generator's: each message at its
    event time). ``namespace`` prefixes the topic names, as a worker's namespace does.
    Setting ``stop`` ends the stream early (between two messages); what was produced is still
    flushed. ``counts``, when given, is incremented per topic for every message produced.
    With ``records``, messages of the topics it takes (the CDC-captured ones) are written to
    PostgreSQL through it instead of produced, in the same pacing, and count like the others;
    its rows are flushed at the end too. Raises :class:`DeliveryError` if any message was not
    acknowledged, :class:`~ys_platform.sources.record.RecordWriteError` if PostgreSQL refused
    a batch.
    """
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError("rate must be a positive number of messages per second")
    producer = connection.producer(**producer_overrides)
    deliveries = _Deliveries()
    if pace is None:
        pace = _pacer(rate, stop)
    count = produced = 0
    watch = AckWatch(producer, f"publishing to {namespace}<catalog topic>")
    try:
        for message in messages:
            if stop is not None and stop.is_set():
                break
            pace(count, message)
            if stop is not None and stop.is_set():  # set while we were waiting
                break
            topic = topic_of(message)
            if records is not None and records.takes(topic):
                records.add(message)
            else:
                _, key, value, headers, timestamp = encode_record(message)
                produce_record(
                    producer, namespace + topic, value, key, headers, timestamp, deliveries
                )
                produced += 1
            count += 1
            if counts is not None:
                counts[topic] += 1
            if records is not None:
                records.poll()
            if count % POLL_EVERY == 0:
                watch.observe(produced)  # serves the delivery reports (poll) first
                deliveries.check(count)  # fail early rather than after the whole stream
    finally:
        try:
            if records is not None:
                records.flush()
        finally:
            remaining = flush_watched(producer, flush_timeout_s, watch, produced)
    if remaining:
        raise DeliveryError(
            f"{remaining} of {count} messages still undelivered after {flush_timeout_s}s"
        )
    deliveries.check(count)
    return count


def fill_topic(
    connection: KafkaConnection,
    topic: str,
    encoded: Iterable[tuple[bytes, bytes, int]],
    *,
    flush_timeout_s: float = 300.0,
    **producer_overrides: Any,
) -> int:
    """Bulk-produce ``(key, value, timestamp_ms)`` records to ``topic``; returns the count.

    Uses :data:`FILL_PRODUCER_OVERRIDES` (large batches, 50 ms linger, lz4) under any
    ``producer_overrides``. Records get the headers ``encode`` would give the topic's messages.
    """
    model = MODELS.get(topic)
    headers = headers_of(model) if model is not None else [("content-type", CONTENT_TYPE)]
    producer = connection.producer(**{**FILL_PRODUCER_OVERRIDES, **producer_overrides})
    deliveries = _Deliveries()
    count = 0
    try:
        for key, value, ts_ms in encoded:
            produce_record(producer, topic, value, key, headers, ts_ms, deliveries)
            count += 1
            if count % POLL_EVERY == 0:
                producer.poll(0)
                deliveries.check(count)
    finally:
        remaining = producer.flush(flush_timeout_s)
    if remaining:
        raise DeliveryError(
            f"{remaining} of {count} records to {topic} still undelivered after {flush_timeout_s}s"
        )
    deliveries.check(count)
    return count


def run_simulation(
    settings: Settings,
    rate: float,
    duration_s: float,
    seed: int,
    stop: threading.Event | None = None,
    *,
    symbols: int = 40,
    users: int = 200,
    start_ms: int | None = None,
    cdc: bool = False,
) -> dict[str, int]:
    """Stream the simulator to the platform of ``settings``: the reference set (defi.protocols,
    defi.tokens) at once, then ``rate`` messages per second for ``duration_s`` seconds
    (``math.inf``: until ``stop`` is set). Returns how many messages went to each topic.

    Where they go: with ``cdc=False`` (the default, for tests and benchmarks) every message is
    produced straight to its Kafka topic. With ``cdc=True`` (``make dev``) the messages of the
    CDC-captured topics (``TopicSpec.change_stream``: defi.protocols, defi.tokens,
    defi.transactions, users.portfolios) are upserted into their PostgreSQL tables
    (``settings.postgres_conninfo()``), whence the Debezium connector carries them to their
    topics; market.prices, crosschain.events and every other topic not captured still go
    straight to Kafka. The captured topics' counts are then the rows written.

    Event time starts at ``start_ms``, by default *now*: records stamped in the past would fall
    outside the topics' retention and the processors' windows. The content is fixed by ``seed``;
    with ``cdc=True``, rerunning a seed at another start into the same database is refused by
    PostgreSQL (migration 0002: a transaction's hash cannot move to another time), so each run
    there takes its own seed.
    """
    from ys_platform.security.principals import PRODUCER_NAME
    from ys_platform.sources.simulator import MarketSimulator

    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000
    connection = settings.kafka.as_principal(PRODUCER_NAME)
    simulator = MarketSimulator(seed, symbols=symbols, users=users, start_ms=start_ms)
    counts: Counter[str] = Counter()
    with open_postgres(settings.postgres_conninfo()) if cdc else nullcontext() as conn:
        records = RecordWriter(conn) if conn is not None else None
        reference = simulator.reference_messages()
        publish(connection, reference, stop=stop, counts=counts, records=records)
        events = simulator.events(duration_s, rate)
        publish(connection, events, rate=rate, stop=stop, counts=counts, records=records)
    return dict(sorted(counts.items()))


def _pacer(rate: float | None, stop: threading.Event | None) -> Pace:
    """``pace(i, _)`` waits until message ``i`` is due: i / rate seconds after the first."""
    if rate is None:
        return lambda _index, _message: None
    started = time.monotonic()

    def pace(index: int, _message: Message) -> None:
        lead = started + index / rate - time.monotonic()
        if lead >= _MIN_SLEEP_S:
            if stop is not None:
                stop.wait(lead)  # wakes at once when stopped
            else:
                time.sleep(lead)

    return pace
