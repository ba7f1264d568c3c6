"""The contracts between the streaming runtime and what it drives: a processor's logic
(:class:`StreamApp`) and a sink (:class:`Sink`), with their optional capabilities declared as
protocols of their own (:class:`BroadcastApp`, :class:`DeletingSink`, :class:`ServingSink`).

A processor keeps its state per *input partition*: the outputs it emits for a partition are a
function of that partition's record sequence alone, whatever the batching or the other
partitions do. That is what makes restore by replay exact — replaying a partition's recent
history rebuilds the same state the crashed worker had at its committed offset — and what lets
a backfill reproduce the live output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import ConsumerGroupSpec

if TYPE_CHECKING:
    import pyarrow as pa

TopicPartitionId = tuple[str, int]
"""(catalog topic name, partition)."""


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
        """Apply one partition's slice of a batch, in offset order; return what to emit.

        ``timestamps_ms[i]`` is the record timestamp of ``messages[i]`` (computed on first use:
        an app that windows on a message field never pays for it)."""


@runtime_checkable
class ColumnarApp(StreamApp, Protocol):
    """An app that takes a partition's slice as columns: the runtime decodes and validates the
    slice into an Arrow table in one call (:mod:`ys_platform.catalog.columnar`) and hands it over
    without building a model per record. Only for inputs whose model is columnar; others still
    reach :meth:`process`."""

    def process_columns(
        self,
        partition: TopicPartitionId,
        columns: pa.Table,
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        """:meth:`process` on the slice's valid records as a table (one row per record, in
        offset order, a column per model field); ``Rejected.index`` is a row of the table."""


@runtime_checkable
class BroadcastApp(StreamApp, Protocol):
    """An app that also reads reference data every instance needs whole (a global table)."""

    broadcast_inputs: tuple[str, ...]
    """Inputs read whole by every worker as reference data (no group, never committed)."""

    broadcast_lookback_ms: int
    """How far back a starting worker reads its broadcast inputs."""

    def on_broadcast(self, messages: Sequence[Message]) -> None:
        """Take reference data; called before each batch with what arrived since the last."""


# --- sinks ----------------------------------------------------------------------------------------


class StoreUnavailable(RuntimeError):
    """The sink's store cannot be reached or written for now (a server down, a chDB path held
    by another process past the lock timeout): the message says why. The sink has dropped what
    it held in memory about its progress; its store still says where each partition resumes."""


class Sink(Protocol):
    """A store the runtime writes into. Writing the same (partition, offsets) twice stores them
    once, so delivery is at-least-once from Kafka and exactly-once in the store. A sink that
    records its own progress (ClickHouse keeps each partition's offset range beside the rows)
    tells the runtime where to resume; otherwise the group's committed offsets are used.

    ``resume_offsets`` and ``write_many`` raise :class:`StoreUnavailable` when the store is out
    of reach for a while; the worker then commits nothing, retries, and resumes every partition
    from ``resume_offsets`` once the store answers (a flush the store may have half taken is
    replayed from there, which its idempotence makes harmless)."""

    group: ConsumerGroupSpec

    def open(self) -> None:
        """Acquire clients and create what the sink writes into (tables, collections)."""

    def close(self) -> None:
        """Release clients; called once, also after a failure."""

    def resume_offsets(
        self, partitions: Sequence[TopicPartitionId]
    ) -> Mapping[TopicPartitionId, int]:
        """The next offset to read per partition from the sink's own store ({} if it has none)."""

    def write_many(self, batches: Sequence[PartitionBatch]) -> int:
        """Store the decoded records of a flush (each partition at most once), idempotently;
        returns how many rows/points were written. The sink may share per-flush work among the
        partitions (the ClickHouse sink records all their progress in two inserts)."""


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
    columns: pa.Table | None = None
    """The decoded records as a table, one column per model field, for a sink that takes
    columns (:class:`ColumnarSink`); ``messages`` is then empty."""


@runtime_checkable
class ColumnarSink(Sink, Protocol):
    """A sink that can take a topic's records as decoded columns (:attr:`PartitionBatch.columns`)
    instead of models, for the topics it names."""

    def takes_columns(self, topic_name: str) -> bool:
        """Whether batches of catalog topic ``topic_name`` may come as columns."""


@runtime_checkable
class DeletingSink(Sink, Protocol):
    """A sink that removes entities by key: tombstones, and on a change-stream topic the
    records marked as deletes, reach it as deletes instead of rows."""

    def delete(self, topic_name: str, keys: Sequence[str]) -> int:
        """Remove the entities of ``keys`` (record keys of catalog topic ``topic_name``);
        returns how many were removed. Idempotent."""


@runtime_checkable
class ServingSink(Sink, Protocol):
    """A sink whose store admits one process at a time (chDB or Qdrant local mode on a path):
    other processes' readers get their turn through it, between the sink's own writes."""

    def serve_readers(self) -> None:
        """Called by the runtime between flushes, at least every poll (~50 ms) even when no
        record arrives: serve the readers waiting now (let them into the store, or answer
        their requests). Cheap when nobody waits: one lock probe."""
