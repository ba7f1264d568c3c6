"""The contract between the streaming runtime and a processor's logic.

A processor keeps its state per *input partition*: the outputs it emits for a partition are a
function of that partition's record sequence alone, whatever the batching or the other
partitions do. That is what makes restore by replay exact — replaying a partition's recent
history rebuilds the same state the crashed worker had at its committed offset — and what lets
a backfill reproduce the live output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import ConsumerGroupSpec

TopicPartitionId = tuple[str, int]


@dataclass(frozen=True)
class Rejected:
    """An input the logic refused after decoding (e.g. a tick too late for its window)."""

    index: int
    """Position in the batch handed to :meth:`StreamApp.process`."""
    reason: str


@dataclass
class ProcessResult:
    outputs: list[Message]
    rejected: list[Rejected]


class StreamApp(Protocol):
    """A processor's logic as the runtime drives it."""

    group: ConsumerGroupSpec

    restore_span_ms: int
    """Event time before a partition's watermark that rebuilds its state (0: stateless)."""

    broadcast_inputs: tuple[str, ...]
    """Inputs read whole by every worker as reference data (no group, never committed)."""

    broadcast_lookback_ms: int
    """How far back a starting worker reads its broadcast inputs."""

    def on_broadcast(self, messages: Sequence[Message]) -> None:
        """Take reference data; called before each batch with what arrived since the last."""

    def assign(self, partition: TopicPartitionId) -> None:
        """Start empty state for a newly assigned partition."""

    def revoke(self, partition: TopicPartitionId) -> None:
        """Drop the state of a partition this worker no longer owns."""

    def watermark_ms(self, partition: TopicPartitionId) -> int | None:
        """The partition's event-time watermark, committed beside its offset for restore."""

    def process(
        self,
        partition: TopicPartitionId,
        messages: Sequence[Message],
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        """Apply one partition's slice of a batch, in offset order; return what to emit."""
