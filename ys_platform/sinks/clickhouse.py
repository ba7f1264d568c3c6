"""The exactly-once ClickHouse sink: topics into tables, each record stored once across crashes.

The design is that of ClickHouse's own Kafka Connect sink (its ``docs/DESIGN.md``), with the
state kept in ClickHouse beside the data (:data:`~ys_platform.catalog.tables.PROGRESS_TABLE`):

* Per topic partition, a batch is a range of offsets ``[min, max]`` and its rows are exactly the
  records of the partition in that range that decode (decoding is deterministic, so a replay
  rebuilds the same rows). Its **token** is a function of (topic, partition, min, max) alone.
* Before the insert the range is recorded as ``BEFORE``; the rows go in with
  ``insert_deduplication_token = token``; then the range is recorded as ``AFTER``. The tables
  keep the hashes of their last :data:`~ys_platform.catalog.tables.DEDUPLICATION_WINDOW` insert
  blocks, so a batch sent twice with its token is stored once.
* On (re)assignment, ``AFTER`` resumes at ``max + 1``; ``BEFORE`` (the insert may or may not
  have landed) resumes at ``min``, and the partition's next rows are regrouped so that exactly
  ``[min, max]`` goes first, under the same token, before anything new. Records older than the
  range are dropped, a replay that arrives in pieces is held until complete, and anything that
  cannot rebuild the range (records missing, offsets moved backwards) stops the sink with a
  sentence saying what to do, since inserting it any other way could duplicate rows.

The state writes of one flush are batched: one ``BEFORE`` insert for every partition of the
flush, the partitions' inserts, one ``AFTER`` insert. That is safe because a ``BEFORE`` row is
written only when everything before its ``min`` is stored (a pending replay is re-sent first).

chDB and the client: the sink holds one client, used only by the thread that opened it (chDB
sessions are not thread-safe). Opening costs 0.2-0.65 s here (measured on 2 busy cores, the
sink's tables in place; an insert of 100k rows takes 40-190 ms), so a client per flush would
cost several times the inserts. While it holds a chDB path no other process can open it, so a
process that wants the path says it waits (:class:`~ys_platform.clients.locks.WaitingReaders`,
which ``open_clickhouse`` does by itself) and, given ``readers``, the sink lets go between two
flushes when someone waits (:meth:`ClickHouseSink.serve_readers`, called by the runtime at every
poll) and opens the path again, once the waiters got in, at its next flush. Nothing the sink
needs lives in the client: its progress is in the store, written inside each flush, so closing
between flushes changes nothing for exactly-once. A reader then waits at most the flush in hand,
and the sink pays a reopen only when someone came. With a ClickHouse server
(``YS_CLICKHOUSE_URL``) none of this applies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import to_json

from ys_platform.catalog.models import Message
from ys_platform.catalog.tables import (
    LAYOUTS,
    PROGRESS_TABLE,
    TableSpec,
    progress_table_ddl,
    table_name,
    table_spec,
)
from ys_platform.catalog.topics import ConsumerGroupSpec, consumer_group
from ys_platform.clients.clickhouse import ClickHouseClientFactory, ClickHouseUnavailableError
from ys_platform.clients.locks import StoreLockedError, WaitingReaders
from ys_platform.package_files import CONNECTORS_DIR
from ys_platform.sinks.mapping import SinkConfigError, SinkGroup, read_mapping_file
from ys_platform.streaming.app import PartitionBatch, StoreUnavailable, TopicPartitionId

__all__ = [
    "DEFAULT_MAPPING_PATH",
    "MAPPING_FILE",
    "ClickHouseSink",
    "ClickHouseSinkMapping",
    "PartitionPlan",
    "RangeState",
    "SinkRangeError",
    "SinkTableError",
    "build_arrow",
    "load_mapping",
    "plan_partition",
    "token_for",
]

log = logging.getLogger(__name__)

# The store out of reach for now, not a bad batch: the chDB path held by another process past
# the lock timeout, a server that does not answer or drops the connection.
_UNREACHABLE = (StoreLockedError, ClickHouseUnavailableError, OperationalError)

MAPPING_FILE = "clickhouse-sink.json"
"""The mapping's file name in the connectors folder (``Settings.connectors_dir``)."""
DEFAULT_MAPPING_PATH = CONNECTORS_DIR / MAPPING_FILE

# Largest batch one flush may hold: 10 M records is ~3 GiB of decoded models, beyond any sane
# setting on the machines this runs on.
MAX_BATCH_SIZE = 10_000_000
# How long the sink, about to open the path again, lets the processes it yielded to get in: a
# waiter notices the release within 0.25 s (clients.locks.Backoff) and opens chDB in 0.2-0.65 s
# (measured here), after which it no longer counts as waiting. Past this the sink opens anyway,
# waiting on the path's lock like any other process (a waiter that never gets in stalls nobody).
READERS_TURN_S = 5.0
TOKEN_VERSION = "ys2"  # ys2: deletes of rows on change-stream topics (_is_deleted)
"""Part of every token: bump it if the rows built from a range ever change (new columns, ...),
so that a replay across the upgrade is not taken for the old batch."""


# --- the mapping file ----------------------------------------------------------------------------


class SinkTableError(RuntimeError):
    """A table in ClickHouse does not have the layout the catalog gives it; says how to fix."""


class ClickHouseSinkMapping(BaseModel):
    """``connectors/clickhouse-sink.json``: which topic goes to which table, and batching."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "clickhouse-sink"
    group: SinkGroup = Field(default="clickhouse-sink", description="The catalog consumer group.")
    topics: dict[str, str] = Field(description="Catalog topic -> table name.")
    batch_size: int = Field(default=100_000, ge=1, le=MAX_BATCH_SIZE)
    """Records per flush (all partitions): big batches make few, large parts."""
    flush_interval_ms: int = Field(default=5_000, ge=10, le=3_600_000)
    """Flush at least this often while records are buffered: bounds how stale the tables are."""

    @field_validator("topics")
    @classmethod
    def _tables(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("map at least one topic to a table")
        seen: dict[str, str] = {}
        for topic_name, table in value.items():
            if topic_name not in LAYOUTS:
                raise ValueError(
                    f"topic {topic_name!r} has no ClickHouse table definition (known: "
                    f"{', '.join(sorted(LAYOUTS))})"
                )
            try:
                table_name(table)
            except ValueError as exc:
                raise ValueError(f"topic {topic_name!r}: {exc}") from None
            if table in seen:
                raise ValueError(
                    f"topics {seen[table]!r} and {topic_name!r} both map to table {table!r}"
                )
            seen[table] = topic_name
        return value

    @model_validator(mode="after")
    def _inputs(self) -> ClickHouseSinkMapping:
        inputs = consumer_group(self.group).inputs
        for topic_name in self.topics:
            if topic_name not in inputs:
                raise ValueError(
                    f"topic {topic_name!r} is not an input of consumer group {self.group!r} "
                    f"(inputs: {', '.join(inputs)}); add it to the catalog first"
                )
        return self

    @property
    def consumer_group(self) -> ConsumerGroupSpec:
        return consumer_group(self.group)

    def tables(self) -> dict[str, TableSpec]:
        """Catalog topic -> table definition."""
        return {t: table_spec(t, name) for t, name in self.topics.items()}


def load_mapping(path: str | Path | None = None) -> ClickHouseSinkMapping:
    """Read and validate the mapping file (default :data:`DEFAULT_MAPPING_PATH`).

    Raises :class:`SinkConfigError` with one sentence naming the file and the offending key.
    """
    path = Path(path) if path is not None else DEFAULT_MAPPING_PATH
    raw = read_mapping_file(path, "ClickHouse sink")
    try:
        return ClickHouseSinkMapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise SinkConfigError(f"{path}: key '{key}': {message}") from None


# --- ranges, tokens and plans (pure) -------------------------------------------------------------


class SinkRangeError(RuntimeError):
    """A partition's records cannot rebuild the batch the sink recorded; inserting anyway could
    store rows twice, so the sink stops. The message says which partition and what to do."""


def token_for(topic: str, partition: int, min_offset: int, max_offset: int) -> str:
    """The insert de-duplication token of a batch: a function of its range alone, so a replay
    of the same range carries the same token. ``topic`` is the physical (Kafka) name."""
    return f"{TOKEN_VERSION}:{topic}:{partition}:{min_offset}-{max_offset}"


@dataclass(frozen=True)
class RangeState:
    """The last batch recorded for a partition."""

    min_offset: int
    max_offset: int
    state: Literal["BEFORE", "AFTER"]
    token: str
    next_offset: int = -1
    """Where an AFTER resumes: ``max_offset + 1`` (the default) or past trailing records that
    failed to decode."""

    def __post_init__(self) -> None:
        if self.next_offset < self.max_offset + 1:
            object.__setattr__(self, "next_offset", self.max_offset + 1)

    @property
    def version(self) -> int:
        # See progress_table_ddl: grows with each batch, and AFTER outranks BEFORE.
        return 2 * self.next_offset + (1 if self.state == "AFTER" else 0)

    @property
    def resume_offset(self) -> int:
        return self.min_offset if self.state == "BEFORE" else self.next_offset


@dataclass(frozen=True)
class Chunk:
    """Records ``[start, stop)`` of a partition's input, inserted as one batch."""

    start: int
    stop: int
    min_offset: int
    max_offset: int
    token: str
    replay: bool
    """The re-send of a range left in BEFORE (its state row is already written)."""


@dataclass(frozen=True)
class PartitionPlan:
    dropped: int
    """Leading records already stored (at or below an AFTER max, or below a BEFORE min)."""
    chunks: tuple[Chunk, ...]
    held: int = 0
    """Trailing records kept back: a BEFORE range not yet complete (``held`` from the end)."""


def plan_partition(
    state: RangeState | None,
    offsets: Sequence[int],
    token: Callable[[int, int], str],
) -> PartitionPlan:
    """How to insert a partition's decoded records (``offsets`` ascending) given its last state.

    * no state: one new batch;
    * AFTER: drop offsets below its ``next_offset`` (stored, or failed to decode); the rest is
      one new batch;
    * BEFORE: drop offsets < min; the records must then start at min and contain max: they are
      split into the replay ``[min, max]`` (the recorded token) and a new batch for the rest.
      If they end before max, all are held back until the rest arrives.

    Raises :class:`SinkRangeError` when a BEFORE range cannot be rebuilt exactly.
    """
    n = len(offsets)
    if state is None:
        return PartitionPlan(0, (_new(offsets, 0, n, token),) if n else ())
    if state.state == "AFTER":
        start = _first_above(offsets, state.next_offset - 1)
        return PartitionPlan(start, (_new(offsets, start, n, token),) if start < n else ())
    start = _first_above(offsets, state.min_offset - 1)
    if start == n:
        return PartitionPlan(start, ())
    if offsets[start] != state.min_offset:
        raise SinkRangeError(
            f"the batch [{state.min_offset}, {state.max_offset}] was left unconfirmed, but the "
            f"records now start at offset {offsets[start]}, not {state.min_offset} (deleted by "
            "retention, or the consumer did not rewind), so it cannot be re-sent identically"
        )
    end = _first_above(offsets, state.max_offset)
    if offsets[end - 1] != state.max_offset:
        if end == n:  # the range has not fully arrived yet
            return PartitionPlan(start, (), held=n - start)
        raise SinkRangeError(
            f"the batch [{state.min_offset}, {state.max_offset}] was left unconfirmed, but offset "
            f"{state.max_offset} is no longer a valid record of the partition, so it cannot be "
            "re-sent identically"
        )
    replay = Chunk(start, end, state.min_offset, state.max_offset, state.token, replay=True)
    chunks = [replay] + ([_new(offsets, end, n, token)] if end < n else [])
    return PartitionPlan(start, tuple(chunks))


def _first_above(offsets: Sequence[int], bound: int) -> int:
    """Index of the first offset > bound (offsets ascending): a bisection."""
    lo, hi = 0, len(offsets)
    while lo < hi:
        mid = (lo + hi) // 2
        if offsets[mid] <= bound:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _new(offsets: Sequence[int], start: int, stop: int, token: Callable[[int, int], str]) -> Chunk:
    lo, hi = offsets[start], offsets[stop - 1]
    return Chunk(start, stop, lo, hi, token(lo, hi), replay=False)


# --- Arrow ---------------------------------------------------------------------------------------


def _arrow_type(ch_type: str) -> pa.DataType:
    inner = ch_type
    for wrapper in ("LowCardinality(", "Nullable("):
        if inner.startswith(wrapper):
            inner = inner[len(wrapper) : -1]
    if inner.startswith("DateTime64(3"):
        return pa.timestamp("ms", tz="UTC")
    simple = {
        "String": pa.string(),
        "Float64": pa.float64(),
        "Int64": pa.int64(),
        "UInt8": pa.uint8(),
        "UInt16": pa.uint16(),
        "UInt32": pa.uint32(),
        "UInt64": pa.uint64(),
        "Bool": pa.bool_(),
    }
    try:
        return simple[inner]
    except KeyError:
        raise TypeError(f"no Arrow type for ClickHouse type {ch_type}") from None


def field_table(spec: TableSpec, messages: Sequence[Message]) -> pa.Table:
    """The field columns of ``spec`` (no Kafka metadata) from decoded models, column-wise.

    One ``pa.array`` per column from a list of attribute values: the conversion runs in C, and
    the same records always give the same table, which a replay needs.
    """
    arrays: list[pa.Array] = []
    names: list[str] = []
    for column in spec.columns:
        if column.field is None:
            continue
        values: list[Any] = [getattr(m, column.field) for m in messages]
        if column.field in spec.json_fields:
            values = [None if v is None else to_json(v).decode() for v in values]
        arrays.append(pa.array(values, _arrow_type(column.type)))
        names.append(column.name)
    return pa.Table.from_arrays(arrays, names=names)


def columns_table(spec: TableSpec, columns: pa.Table) -> pa.Table:
    """The field columns of ``spec`` from a table decoded by the columnar decoder (one column
    per model field): the same table :func:`field_table` builds from the models, without them."""
    arrays: list[pa.Array] = []
    names: list[str] = []
    for column in spec.columns:
        if column.field is None:
            continue
        if column.field in spec.json_fields:
            raise TypeError(f"{spec.name}.{column.name} is JSON: build it from the models")
        arrays.append(columns.column(column.field).cast(_arrow_type(column.type)))
        names.append(column.name)
    return pa.Table.from_arrays(arrays, names=names)


def takes_columns(spec: TableSpec) -> bool:
    """Whether the table can be built from decoded columns (no field stored as JSON text)."""
    return not spec.json_fields


def with_kafka_columns(
    spec: TableSpec,
    fields: pa.Table,
    topic: str,
    partition: int,
    offsets: Sequence[int],
    deleted: AbstractSet[int] = frozenset(),
) -> pa.Table:
    """The rows to insert: ``fields`` (one row per offset) with the record's topic, partition,
    offset and, on a table that keeps deletes, the deleted mark. ``deleted`` holds the offsets
    of rows' deletes (:attr:`PartitionBatch.deleted`): stored as versions marked deleted on a
    table that keeps deletes, left out of any other table."""
    offsets_array = np.asarray(offsets, dtype=np.uint64)
    flags = None
    if deleted:
        is_deleted = np.isin(offsets_array, np.fromiter(deleted, np.uint64, len(deleted)))
        if spec.keeps_deletes:
            flags = is_deleted.astype(np.uint8)
        else:
            keep = np.flatnonzero(~is_deleted)
            fields = fields.take(pa.array(keep))
            offsets_array = offsets_array[keep]
    n = fields.num_rows
    arrays = [*fields.columns]
    arrays.append(pa.array([topic] * n, pa.string()))
    arrays.append(pa.array(np.full(n, partition, dtype=np.uint16)))
    arrays.append(pa.array(offsets_array))
    if spec.keeps_deletes:
        arrays.append(pa.array(flags if flags is not None else np.zeros(n, dtype=np.uint8)))
    return pa.Table.from_arrays(arrays, names=list(spec.column_names))


def build_arrow(
    spec: TableSpec,
    messages: Sequence[Message],
    topic: str,
    partition: int,
    offsets: Sequence[int],
    deleted: AbstractSet[int] = frozenset(),
) -> pa.Table:
    """The rows of ``messages`` as an Arrow table with ``spec``'s columns (see
    :func:`field_table` and :func:`with_kafka_columns`)."""
    return with_kafka_columns(spec, field_table(spec, messages), topic, partition, offsets, deleted)


# --- the sink ------------------------------------------------------------------------------------


@dataclass
class _Partition:
    state: RangeState | None = None
    held_rows: pa.Table | None = None
    """The field columns of the records held back (a replay still arriving)."""
    held_offsets: list[int] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    """Offsets of rows' deletes not yet inserted (a replay may hold them over a flush)."""


class ClickHouseSink:
    """Writes topic partitions into their tables exactly once (see the module docstring).

    ``clients`` opens the sink's client (``ClickHouseResource.get_client`` in Dagster, so the
    resource's lock timeout applies; ``clients.clickhouse.client_factory`` elsewhere).
    ``namespace`` is the prefix of the physical topics (as in ``WorkerConfig.namespace``); the
    tables get it too, made a valid identifier (``t1a2b.`` → ``t1a2b_``), so that tests and
    replays sharing one ClickHouse do not meet.
    """

    def __init__(
        self,
        clients: ClickHouseClientFactory,
        mapping: ClickHouseSinkMapping | None = None,
        namespace: str = "",
        *,
        readers: WaitingReaders | None = None,
    ) -> None:
        self.clients = clients
        self.mapping = mapping or load_mapping()
        self.tables = self.mapping.tables()
        group = self.mapping.consumer_group
        # Consume only what is mapped: the catalog group may list inputs a deployment skips.
        self.group = replace(group, inputs=tuple(t for t in group.inputs if t in self.tables))
        self.namespace = namespace
        self.table_prefix = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in namespace)
        # Only for a store one process holds at a time (clients.clickhouse.waiting_readers):
        # a server is shared anyway.
        self.readers = readers
        self._client_cm: AbstractContextManager[Client] | None = None
        self._client: Client | None = None
        self.reader_turns = 0
        """How many times the sink let go of the store for a waiting process."""
        self._thread: int | None = None
        self._partitions: dict[TopicPartitionId, _Partition] = {}
        self.inserts = 0
        self.replayed_batches = 0

    # --- naming -----------------------------------------------------------------------------
    def physical_topic(self, topic_name: str) -> str:
        return f"{self.namespace}{topic_name}"

    def table(self, topic_name: str) -> str:
        """The physical table of a catalog topic."""
        return f"{self.table_prefix}{self.tables[topic_name].name}"

    @property
    def progress_table(self) -> str:
        return f"{self.table_prefix}{PROGRESS_TABLE}"

    # --- lifecycle --------------------------------------------------------------------------
    def open(self) -> None:
        self._thread = threading.get_ident()
        client = self._connect()
        for spec in self.tables.values():
            client.command(spec.ddl(self.table_prefix))
            self._check_table(client, spec)
        client.command(progress_table_ddl(self.table_prefix))

    def _check_table(self, client: Client, spec: TableSpec) -> None:
        """Refuse a table left by an older layout (``CREATE … IF NOT EXISTS`` keeps it as it is):
        inserting into it would fail on the first batch or, worse, store rows with other rules."""
        name = f"{self.table_prefix}{spec.name}"
        rows = client.query(
            "SELECT engine, (SELECT groupArray(name) FROM (SELECT name FROM system.columns"
            " WHERE database = currentDatabase() AND table = {t:String} ORDER BY position))"
            " FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": name},
        ).result_rows
        engine, columns = rows[0]
        expected_engine = spec.engine.split("(", 1)[0]
        if engine != expected_engine or tuple(columns) != spec.column_names:
            raise SinkTableError(
                f"ClickHouse table {name} was created by an older version of the platform "
                f"(engine {engine}, columns {', '.join(columns)}; expected {spec.engine} with "
                f"{', '.join(spec.column_names)}). To rebuild it from Kafka: DROP TABLE {name}, "
                f"delete the rows of topic {self.physical_topic(spec.topic)} from "
                f"{self.progress_table}, and restart the sink (it re-reads what the topic retains)."
            )

    def close(self) -> None:
        self._disconnect()
        self._partitions.clear()

    def _connect(self) -> Client:
        if threading.get_ident() != self._thread:
            # A chDB session used from two threads has been measured inserting the wrong rows.
            raise RuntimeError("ClickHouseSink must be used from the thread that opened it")
        if self._client is None:
            if self.readers is not None:
                self.readers.wait_until_served(READERS_TURN_S)
            # The factory waits (bounded by its lock timeout) while another process holds chDB.
            self._client_cm = self.clients()
            self._client = self._client_cm.__enter__()
        return self._client

    def _disconnect(self) -> None:
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Errors that say the store is out of reach for now, as :class:`StoreUnavailable`; the
        client and the partitions' state held in memory are dropped (the store has the truth)."""
        try:
            yield
        except _UNREACHABLE as exc:
            self._disconnect()
            self._partitions.clear()
            raise StoreUnavailable(str(exc)) from exc

    def serve_readers(self) -> None:
        """Between flushes: if another process waits for the store, let go of it (it is opened
        again at the next flush). See the module docstring."""
        if self.readers is not None and self._client is not None and self.readers.any():
            self._disconnect()
            self.reader_turns += 1

    # --- the contract -----------------------------------------------------------------------
    def takes_columns(self, topic_name: str) -> bool:
        """Batches of every table without JSON columns may come as decoded columns."""
        return takes_columns(self.tables[topic_name])

    def resume_offsets(self, partitions: Sequence[TopicPartitionId]) -> dict[TopicPartitionId, int]:
        """Read the recorded state of ``partitions`` (forgetting anything held in memory for
        them: a reassigned partition starts over from the store) and where each resumes."""
        with self._reachable():
            return self._resume_offsets(self._connect(), partitions)

    def _resume_offsets(
        self, client: Client, partitions: Sequence[TopicPartitionId]
    ) -> dict[TopicPartitionId, int]:
        for key in partitions:
            self._partitions[key] = _Partition()
        if not partitions:
            return {}
        by_physical = {(self.physical_topic(t), p): (t, p) for t, p in partitions}
        rows = client.query(
            "SELECT topic, partition, min_offset, max_offset, state, token, next_offset "
            f"FROM `{self.progress_table}` FINAL WHERE topic IN {{topics:Array(String)}}",
            parameters={"topics": sorted({t for t, _ in by_physical})},
        ).result_rows
        resume: dict[TopicPartitionId, int] = {}
        for topic, partition, lo, hi, state, token, next_offset in rows:
            key = by_physical.get((topic, partition))
            if key is None:
                continue
            range_state = RangeState(lo, hi, state, token, next_offset)
            self._partitions[key].state = range_state
            if state == "BEFORE":
                log.info(
                    "%s[%d]: batch [%d, %d] was not confirmed; re-sending it with its token",
                    topic,
                    partition,
                    lo,
                    hi,
                )
            resume[key] = range_state.resume_offset
        return resume

    def write(
        self, partition: TopicPartitionId, messages: Sequence[Message], offsets: Sequence[int]
    ) -> int:
        return self.write_many([PartitionBatch(partition, messages, offsets)])

    def write_many(self, batches: Sequence[PartitionBatch]) -> int:
        """Store several partitions' records (each partition at most once): replays first, then
        one BEFORE insert for all, the inserts, one AFTER insert. Returns the rows sent (a
        replay the table recognises is counted but stored once)."""
        if len({b.partition for b in batches}) != len(batches):
            raise ValueError("write_many takes each partition at most once")
        with self._reachable():
            return self._write_many(self._connect(), batches)

    def _write_many(self, client: Client, batches: Sequence[PartitionBatch]) -> int:
        Job = tuple[TopicPartitionId, Chunk, pa.Table, Sequence[int]]
        replays: list[Job] = []
        news: list[Job] = []
        final: dict[TopicPartitionId, RangeState] = {}
        for batch in batches:
            key = batch.partition
            part = self._partitions.setdefault(key, _Partition())
            spec = self.tables[key[0]]
            rows = (
                columns_table(spec, batch.columns)
                if batch.columns is not None
                else field_table(spec, batch.messages)
            )
            offsets = batch.offsets
            part.deleted.update(batch.deleted)
            if part.held_rows is not None:
                rows = pa.concat_tables([part.held_rows, rows])
                offsets = [*part.held_offsets, *offsets]
                part.held_rows, part.held_offsets = None, []
            plan = self._plan(key, part.state, offsets)
            if plan.held:
                start = len(offsets) - plan.held
                part.held_rows = rows.slice(start)
                part.held_offsets = list(offsets[start:])
                continue  # a replay in progress: the state must stay as recorded
            end = batch.end_offset if batch.end_offset is not None else -1
            for chunk in plan.chunks:
                (replays if chunk.replay else news).append(
                    (
                        key,
                        chunk,
                        rows.slice(chunk.start, chunk.stop - chunk.start),
                        offsets[chunk.start : chunk.stop],
                    )
                )
            if plan.chunks:
                last = plan.chunks[-1]
                final[key] = RangeState(last.min_offset, last.max_offset, "AFTER", last.token, end)
            elif (
                (part.state is None or part.state.state == "AFTER")
                and end > 0
                and (part.state is None or end > part.state.next_offset)
            ):
                # Only records that failed to decode: move past them (dead-lettered already).
                prev = part.state or RangeState(end - 1, end - 1, "AFTER", "")
                final[key] = replace(prev, next_offset=end)

        written = 0
        for key, chunk, fields, offsets in replays:
            written += self._insert(client, key, chunk, fields, offsets)
            self.replayed_batches += 1
        if news:
            self._record(client, [(k, _state(c, "BEFORE")) for k, c, _, _ in news])
            for key, chunk, fields, offsets in news:
                written += self._insert(client, key, chunk, fields, offsets)
        if final:
            self._record(client, list(final.items()))
            for key, state in final.items():
                self._partitions[key].state = state
        return written

    def _plan(
        self, key: TopicPartitionId, state: RangeState | None, offsets: Sequence[int]
    ) -> PartitionPlan:
        physical = self.physical_topic(key[0])

        def token(lo: int, hi: int) -> str:
            return token_for(physical, key[1], lo, hi)

        try:
            return plan_partition(state, offsets, token)
        except SinkRangeError as exc:
            raise SinkRangeError(
                f"{physical}[{key[1]}]: {exc}. To start this partition over, delete its row "
                f"from {self.progress_table} (and its rows from {self.table(key[0])})."
            ) from None

    # --- ClickHouse -------------------------------------------------------------------------
    def _insert(
        self,
        client: Client,
        key: TopicPartitionId,
        chunk: Chunk,
        fields: pa.Table,
        offsets: Sequence[int],
    ) -> int:
        topic_name, partition = key
        part = self._partitions[key]
        deleted = frozenset(o for o in part.deleted if o <= chunk.max_offset)
        table = with_kafka_columns(
            self.tables[topic_name],
            fields,
            self.physical_topic(topic_name),
            partition,
            offsets,
            deleted,
        )
        if table.num_rows == 0:
            return 0  # only deletes, on a table that leaves them out
        client.insert_arrow(
            self.table(topic_name),
            table,
            settings={
                "insert_deduplicate": 1,
                "insert_deduplication_token": chunk.token,
                # A token names a synchronous insert; async inserts de-duplicate differently.
                "async_insert": 0,
            },
        )
        self.inserts += 1
        if deleted:
            part.deleted -= deleted
        return table.num_rows

    def _record(self, client: Client, states: list[tuple[TopicPartitionId, RangeState]]) -> None:
        """One insert of state rows (a single block, so all of them land or none)."""
        physical = [self.physical_topic(t) for (t, _), _ in states]
        table = pa.table(
            {
                "topic": pa.array(physical, pa.string()),
                "partition": pa.array([p for (_, p), _ in states], pa.uint16()),
                "min_offset": pa.array([s.min_offset for _, s in states], pa.uint64()),
                "max_offset": pa.array([s.max_offset for _, s in states], pa.uint64()),
                "next_offset": pa.array([s.next_offset for _, s in states], pa.uint64()),
                "state": pa.array([s.state for _, s in states], pa.string()),
                "token": pa.array([s.token for _, s in states], pa.string()),
                "version": pa.array([s.version for _, s in states], pa.uint64()),
            }
        )
        # The progress table keeps no de-duplication window, so no token: a re-recorded
        # identical row is harmless, a dropped one would not be.
        client.insert_arrow(self.progress_table, table, settings={"async_insert": 0})

    def states(self) -> Mapping[TopicPartitionId, RangeState | None]:
        """The state this sink holds in memory per partition (for tests and metrics)."""
        return {k: v.state for k, v in self._partitions.items()}


def _state(chunk: Chunk, state: Literal["BEFORE", "AFTER"]) -> RangeState:
    return RangeState(chunk.min_offset, chunk.max_offset, state, chunk.token)
