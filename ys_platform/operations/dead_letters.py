"""A consumer group's dead letters: counted, shown, and replayed to their source at most once.

Dead letters are produced by the streaming runtime (:mod:`ys_platform.streaming.dead_letter`):
the original key, value and headers on ``dlq.<group>``, plus ``ys.dlq.*`` headers naming the
reason and the source topic, partition, offset and timestamp.

Replay re-produces each one to its source topic and partition with its key, value, original
headers and event time, plus ``ys.replay.*`` headers naming the dead letter. What has been
replayed is the committed offset of the group ``<group>.dlq-replay`` on the dead-letter topic,
moved in the same Kafka transaction as the replayed records (``send_offsets_to_transaction``):
a crash mid-replay leaves both or neither, so no dead letter is lost or replayed twice, and a
second replay (even a concurrent one: the transactional id fences the first) starts where the
first committed.

A dead letter that carries ``ys.replay.*`` headers is a replayed record the worker rejected
again: it is passed over, not replayed, so a rejection that no fix has cured cannot loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.kafka import KafkaConnection, produce_record
from ys_platform.operations.admin import OperationError, reason
from ys_platform.operations.records import (
    READ_TIMEOUT_S,
    READER_SETTINGS,
    partitions,
    read_ranges,
)
from ys_platform.streaming import dead_letter

REPLAY_TOPIC = "ys.replay.topic"
REPLAY_PARTITION = "ys.replay.partition"
REPLAY_OFFSET = "ys.replay.offset"
"""Headers of a replayed record: the dead letter (topic, partition, offset) it came from."""

_DLQ_PREFIX = "ys.dlq."

# Dead letters per transaction: each transaction's records and offsets are one unit; a few
# hundred keeps a transaction far below the broker's 60 s transaction timeout.
REPLAY_CHUNK = 500


@dataclass(frozen=True)
class DeadLetterTopic:
    """Where a group's dead letters are and the group that records what has been replayed."""

    group_id: str
    namespace: str = ""

    def __post_init__(self) -> None:
        consumer_group(self.group_id)  # KeyError naming an unknown group

    @property
    def topic(self) -> str:
        return f"{self.namespace}{consumer_group(self.group_id).dead_letter_topic}"

    @property
    def replay_group(self) -> str:
        return f"{self.namespace}{self.group_id}.dlq-replay"

    def catalog_name(self, physical: str) -> str:
        return physical.removeprefix(self.namespace)


def _replayed_up_to(consumer: Consumer, dlq: DeadLetterTopic, ids: Sequence[int]) -> dict[int, int]:
    """The replay group's committed offset per partition (0 where it never committed)."""
    try:
        committed = consumer.committed(
            [TopicPartition(dlq.topic, p) for p in ids], timeout=READ_TIMEOUT_S
        )
    except KafkaException as exc:
        raise OperationError(
            f"could not read the offsets of group {dlq.replay_group}: {reason(exc)}"
        ) from None
    return {tp.partition: max(tp.offset, 0) for tp in committed}


@dataclass(frozen=True)
class DeadLetterSummary:
    topic: str
    total: int
    replayed: int
    """How many lie before the replay group's committed offsets (replayed or passed over)."""
    by_source_and_reason: tuple[tuple[str, str, int], ...]
    """(source catalog topic, reason, count), most frequent first."""


def summarize(connection: KafkaConnection, dlq: DeadLetterTopic) -> DeadLetterSummary:
    consumer = connection.consumer(dlq.replay_group, **READER_SETTINGS)
    try:
        bounds = partitions(consumer, dlq.topic)
        done = _replayed_up_to(consumer, dlq, list(bounds))
        found = read_ranges(consumer, dlq.topic, bounds)
    finally:
        consumer.close()
    counts: Counter[tuple[str, str]] = Counter()
    replayed = 0
    for p, records in found.items():
        for record in records:
            headers = record.headers()
            source = dead_letter.header(headers, dead_letter.SOURCE_TOPIC) or "?"
            why = dead_letter.header(headers, dead_letter.ERROR) or "?"
            counts[(dlq.catalog_name(source), why)] += 1
            replayed += record.offset() < done[p]
    return DeadLetterSummary(
        topic=dlq.topic,
        total=sum(counts.values()),
        replayed=replayed,
        by_source_and_reason=tuple(
            (source, why, n)
            for (source, why), n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
        ),
    )


# --- replay -------------------------------------------------------------------------------------

REPLAY = "replay"
PASSED_OVER_SINCE = "before --since"
PASSED_OVER_REPLAYED = "rejected again after a replay"
PASSED_OVER_NO_SOURCE = "no source headers"


@dataclass(frozen=True)
class ReplayItem:
    partition: int
    offset: int
    action: str
    """:data:`REPLAY`, or why it is passed over (``PASSED_OVER_*``)."""
    source: tuple[str, int] | None
    reason: str | None


@dataclass
class ReplayReport:
    topic: str
    dry_run: bool
    items: list[ReplayItem] = field(default_factory=list)

    @property
    def replayed(self) -> int:
        return sum(1 for i in self.items if i.action == REPLAY)

    def passed_over(self) -> Counter[str]:
        return Counter(i.action for i in self.items if i.action != REPLAY)


def classify(record: Message, since_ms: int | None) -> ReplayItem:
    """What replay does with one dead letter: replay it, or why it is passed over."""
    headers = record.headers()
    source = dead_letter.header(headers, dead_letter.SOURCE_TOPIC)
    source_partition = dead_letter.header(headers, dead_letter.SOURCE_PARTITION)
    why = dead_letter.header(headers, dead_letter.ERROR)
    target = (source, int(source_partition)) if source and source_partition else None
    if since_ms is not None and record.timestamp()[1] < since_ms:
        action = PASSED_OVER_SINCE
    elif dead_letter.header(headers, REPLAY_TOPIC) is not None:
        action = PASSED_OVER_REPLAYED
    elif target is None:
        action = PASSED_OVER_NO_SOURCE
    else:
        action = REPLAY
    return ReplayItem(record.partition(), record.offset(), action, target, why)


def replayed_headers(record: Message) -> list[tuple[str, bytes]]:
    """The dead letter's headers without the ``ys.dlq.*`` ones, plus the replay headers."""
    kept = [(k, v) for k, v in record.headers() or () if not k.startswith(_DLQ_PREFIX)]
    return [
        *kept,
        (REPLAY_TOPIC, record.topic().encode()),
        (REPLAY_PARTITION, str(record.partition()).encode()),
        (REPLAY_OFFSET, str(record.offset()).encode()),
    ]


def _source_timestamp(record: Message) -> int | None:
    """The original record's timestamp (the event time, by the catalog's contract)."""
    value = dead_letter.header(record.headers(), dead_letter.SOURCE_TIMESTAMP)
    return int(value) if value is not None and int(value) >= 0 else None


def _replay_chunk(
    producer: Producer,
    consumer: Consumer,
    dlq: DeadLetterTopic,
    chunk: Sequence[tuple[Message, ReplayItem]],
) -> None:
    """Produce the chunk's replays and move the replay group past the whole chunk, atomically."""
    ends: dict[int, int] = {}
    try:
        producer.begin_transaction()
        for record, item in chunk:
            if item.action == REPLAY:
                assert item.source is not None
                produce_record(
                    producer,
                    item.source[0],
                    record.value(),
                    record.key(),
                    replayed_headers(record),
                    _source_timestamp(record),
                    partition=item.source[1],
                )
            ends[record.partition()] = record.offset() + 1
        producer.send_offsets_to_transaction(
            [TopicPartition(dlq.topic, p, end) for p, end in sorted(ends.items())],
            consumer.consumer_group_metadata(),
            READ_TIMEOUT_S,
        )
        producer.commit_transaction(READ_TIMEOUT_S)
    except KafkaException as exc:
        # If the abort fails too, the broker aborts it at its timeout: nothing of it commits.
        with suppress(KafkaException):
            producer.abort_transaction(READ_TIMEOUT_S)
        raise OperationError(
            f"replay of {dlq.topic} failed, nothing of this transaction was committed: "
            f"{reason(exc)}"
        ) from None


def replay(
    connection: KafkaConnection,
    dlq: DeadLetterTopic,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Replay every dead letter not yet replayed (those from ``since`` on; older ones are passed
    over for good) to its source; with ``dry_run`` only say what would be done."""
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    producer = None
    if not dry_run:
        producer = connection.producer(transactional_id=dlq.replay_group)
        try:
            # Before reading what was replayed: fences (and waits out) a replay still running.
            producer.init_transactions(READ_TIMEOUT_S)
        except KafkaException as exc:
            raise OperationError(f"could not start the replay transaction: {reason(exc)}") from None
    consumer = connection.consumer(dlq.replay_group, **READER_SETTINGS)
    report = ReplayReport(dlq.topic, dry_run)
    try:
        bounds = partitions(consumer, dlq.topic)
        done = _replayed_up_to(consumer, dlq, list(bounds))
        ranges = {p: (max(low, done[p]), end) for p, (low, end) in bounds.items()}
        found = read_ranges(consumer, dlq.topic, ranges)
        work = [(r, classify(r, since_ms)) for p in sorted(found) for r in found[p]]
        report.items = [item for _, item in work]
        if producer is not None:
            for start in range(0, len(work), REPLAY_CHUNK):
                _replay_chunk(producer, consumer, dlq, work[start : start + REPLAY_CHUNK])
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(READ_TIMEOUT_S)
    return report
