"""The contract between the sink runtime and one sink (ClickHouse, vector store).

A sink writes each partition's records idempotently: writing the same (partition, offsets) twice
stores them once. Delivery is then at-least-once from Kafka and exactly-once in the store. A sink
that records its own progress (ClickHouse keeps each partition's offset range beside the rows)
tells the runtime where to resume; otherwise the group's committed offsets are used.

A sink may also implement :class:`BatchSink` (``write_many``): the runtime then hands it every
partition of a flush in one call, so it can share per-flush work among them (the ClickHouse sink
records all partitions' progress in two inserts instead of two per partition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import ConsumerGroupSpec

TopicPartitionId = tuple[str, int]
"""(catalog topic name, partition)."""


class Sink(Protocol):
    group: ConsumerGroupSpec

    def open(self) -> None:
        """Acquire clients and create what the sink writes into (tables, collections)."""

    def close(self) -> None:
        """Release clients; called once, also after a failure."""

    def resume_offsets(
        self, partitions: Sequence[TopicPartitionId]
    ) -> Mapping[TopicPartitionId, int]:
        """The next offset to read per partition from the sink's own store ({} if it has none)."""

    def write(
        self, partition: TopicPartitionId, messages: Sequence[Message], offsets: Sequence[int]
    ) -> int:
        """Store one partition's decoded records (``offsets[i]`` is ``messages[i]``'s offset),
        idempotently; returns how many rows/points were written."""


@dataclass(frozen=True)
class PartitionBatch:
    """One partition's decoded records of a flush, offsets ascending."""

    partition: TopicPartitionId
    messages: Sequence[Message]
    offsets: Sequence[int]
    end_offset: int | None = None
    """One past the last record consumed for this slice, those that failed to decode included
    (None: ``offsets[-1] + 1``). A sink that records its progress stores it, so that a restart
    does not read, and dead-letter, those records again. ``messages`` may then be empty."""
    deleted: frozenset[int] = frozenset()
    """Offsets (among ``offsets``) whose record is the delete of its row on a change-stream
    topic: the message is the deleted row. A sink that keeps the latest state of rows stores it
    as deleted; one that keeps history or events leaves it out."""


@runtime_checkable
class BatchSink(Sink, Protocol):
    def write_many(self, batches: Sequence[PartitionBatch]) -> int:
        """``write`` for several partitions at once (each partition at most once); returns the
        rows/points written. Same guarantees as ``write``, partition by partition."""
