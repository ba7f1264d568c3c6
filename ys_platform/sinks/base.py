"""The contract between the sink runtime and one sink (ClickHouse, vector store).

A sink writes each partition's records idempotently: writing the same (partition, offsets) twice
stores them once. Delivery is then at-least-once from Kafka and exactly-once in the store. A sink
that records its own progress (ClickHouse keeps each partition's offset range beside the rows)
tells the runtime where to resume; otherwise the group's committed offsets are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

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
