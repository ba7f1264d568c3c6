"""ClickHouse tables of the platform, derived from the message models: one per sinked topic.

The column list is the model's fields in declaration order, typed from their annotations, plus
the Kafka provenance of every row (``_topic``, ``_partition``, ``_offset``): the exactly-once
sink and the asset checks use it to prove that each record is stored once. Only the physical
layout (sort key, partitioning, whether rows are versioned) is declared by hand, per topic, in
:data:`LAYOUTS`. Tables of change-stream topics are ReplacingMergeTrees keyed by the row's
identity and read with ``FINAL``; the transactions table also stores deletes
(:data:`DELETED_COLUMN`), so that ``FINAL`` shows exactly the rows of the table of record.

Type mapping (``column_type``):

* timestamps → ``DateTime64(3, 'UTC')`` (the wire carries milliseconds, always UTC);
* ``float`` → ``Float64``; ``int`` → the smallest unsigned type its ``ge``/``le`` bounds allow
  (``UInt8`` for ``decimals``), ``UInt64`` if only ``ge >= 0``, else ``Int64``; ``bool`` → ``Bool``;
* ``str`` → ``String``, or ``LowCardinality(String)`` for ``Literal`` fields and for names that
  are dimensions with a few hundred values at most (symbol, chain, venue, source, protocol, ...):
  dictionary-encoded, they cost a byte or two per row and filter/group much faster;
* tuples, lists, dicts and nested models (portfolio positions, labels) → ``String`` holding
  their JSON, as on the wire: readable with ClickHouse's ``JSONExtract*`` functions;
* an optional field (``X | None``) → ``Nullable(X)`` (``LowCardinality(Nullable(String))``).

Exactly-once storage relies on ClickHouse's insert de-duplication; see
:data:`DEDUPLICATION_WINDOW` and :data:`PROGRESS_TABLE`.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

import annotated_types
from pydantic import AwareDatetime, BaseModel

from ys_platform.catalog.models import MODELS, Message

__all__ = [
    "DEDUPLICATION_WINDOW",
    "DELETED_COLUMN",
    "LAYOUTS",
    "PROGRESS_TABLE",
    "PROVENANCE_COLUMNS",
    "Column",
    "TableLayout",
    "TableSpec",
    "column_type",
    "progress_table_ddl",
    "table_name",
    "table_spec",
]

DEDUPLICATION_WINDOW = 1000
"""``non_replicated_deduplication_window``: how many recent insert blocks a table remembers.

A batch left in state BEFORE by a crash is re-sent with its token on restart, as the first write
of its partition; between the two, the table receives at most the other partitions' batches of
the same flush and of the few flushes that complete the replayed range, each one or two parts
(a batch can straddle a partition boundary of the table): 24 partitions × 2 parts × a few
flushes ≈ 100-200 blocks on one sink, more with several sink instances on a ClickHouse server.
1000 (what ClickHouse itself uses for ``replicated_deduplication_window`` since 23.x) leaves a
wide margin at no measurable cost: the window is a set of hashes, checked in memory and kept on
disk in the table's ``deduplication_logs``. Replicated tables use the replicated setting instead.
"""

PROGRESS_TABLE = "_ys_sink_offsets"
"""Where the ClickHouse sink records each partition's last batch: offsets, state and token."""

PROVENANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_topic", "LowCardinality(String)"),
    # Kafka partition ids are int32 but no topic of ours comes near 65,535 partitions.
    ("_partition", "UInt16"),
    ("_offset", "UInt64"),
)

DELETED_COLUMN = ("_is_deleted", "UInt8")
"""On tables that keep deletes: 1 on the version that deletes its row (ReplacingMergeTree's
``is_deleted``, which ``FINAL`` hides together with the versions before it)."""

# Fields whose values form a small, slowly growing set (pairs, tickers, chains, venues, sources,
# protocols): LowCardinality stores them as a per-part dictionary plus small indices.
LOW_CARDINALITY_FIELDS = frozenset(
    {
        "symbol",
        "base",
        "quote",
        "asset",
        "source",
        "chain",
        "venue",
        "protocol",
        "action",
        "category",
        "kind",
        "severity",
        "type",
        "token0",
        "token1",
        "from_chain",
        "to_chain",
        "buy_chain",
        "buy_venue",
        "sell_chain",
        "sell_venue",
    }
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATETIME = "DateTime64(3, 'UTC')"


@dataclass(frozen=True)
class TableLayout:
    """The physical design of a table: what it is sorted by and how it is partitioned."""

    order_by: tuple[str, ...]
    partition: Literal["day", "month"] = "month"
    """``day`` (``toDate``) for the high-volume streams, ``month`` (``toYYYYMM``) otherwise."""
    versioned: bool = False
    """``order_by`` is the identity of a row: ``ReplacingMergeTree(_offset)`` keeps its latest
    version, so an updated row (a change-stream topic re-sends the whole row) replaces the one
    before. Rows of one identity share a Kafka partition (their key is part of the identity),
    where the offset orders their versions. Read with ``FINAL`` for the latest state."""
    keeps_deletes: bool = False
    """Deletes of rows (change streams) are stored as versions with ``_is_deleted = 1``
    (ReplacingMergeTree's ``is_deleted``): ``FINAL`` then shows exactly the source's rows.
    Without it a delete is left out: the table is a history, and history is not undone."""

    def __post_init__(self) -> None:
        if self.keeps_deletes and not self.versioned:
            raise ValueError("keeps_deletes needs versioned rows (ReplacingMergeTree)")


# Sort keys follow the queries: per-symbol time ranges for prices, analytics and arbitrage
# (TWAP/backfill reads one symbol's window), per-user history for transactions and risk (the
# risk processor's unit), per-strategy series for yields.
#
# Partitioning: market.prices (85 % of the simulated stream, thousands of ticks/s) and
# defi.transactions (the seed's "high volume" topic, kept 30 days in Kafka) get one partition a
# day: daily analytics assets and retention then drop or read whole partitions, and a year is
# ~365 partitions, well under the ~1000 ClickHouse advises as a ceiling. The other topics are
# a few rows a second at most: monthly partitions keep their parts large.
#
# The change-stream topics (fed by CDC from PostgreSQL) are versioned:
# - transactions mirrors its table of record: one row per tx_hash, updates replace it, deletes
#   remove it (under FINAL). The identity leads with user_id for per-user reads; user_id and ts
#   (the partition) are immutable in the source (migration 0002 refuses to change them), so a
#   transaction never moves between sort keys or partitions.
# - yield_data is the history of each strategy's observations: one row per (strategy, ts), a
#   re-sent or corrected observation replaces its row, and deleting a strategy keeps its history.
LAYOUTS: Mapping[str, TableLayout] = MappingProxyType(
    {
        "defi.transactions": TableLayout(
            ("user_id", "tx_hash"), "day", versioned=True, keeps_deletes=True
        ),
        "market.prices": TableLayout(("symbol", "ts"), "day"),
        "market.analytics": TableLayout(("symbol", "window_end")),
        "defi.yields": TableLayout(("protocol", "strategy_id", "ts"), versioned=True),
        "risk.assessments": TableLayout(("user_id", "assessed_at")),
        "crosschain.arbitrage": TableLayout(("symbol", "detected_at")),
    }
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    field: str | None = None
    """The model field the column is read from; None for provenance columns."""


@dataclass(frozen=True)
class TableSpec:
    """A ClickHouse table fed from one topic."""

    name: str
    topic: str
    model: type[Message]
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    partition_by: str
    json_fields: frozenset[str] = frozenset()
    """Fields stored as their JSON text (nested values)."""
    versioned: bool = False
    """See :attr:`TableLayout.versioned`: read with ``FINAL``."""
    keeps_deletes: bool = False
    """See :attr:`TableLayout.keeps_deletes`: the table has the :data:`DELETED_COLUMN`."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def engine(self) -> str:
        if self.keeps_deletes:
            return f"ReplacingMergeTree(_offset, {DELETED_COLUMN[0]})"
        return "ReplacingMergeTree(_offset)" if self.versioned else "MergeTree"

    def ddl(self, prefix: str = "") -> str:
        """``CREATE TABLE IF NOT EXISTS`` for this table (named ``prefix + name``)."""
        columns = ",\n".join(f"    `{c.name}` {c.type}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS `{prefix}{self.name}`\n(\n{columns}\n)\n"
            f"ENGINE = {self.engine}\n"
            f"PARTITION BY {self.partition_by}\n"
            f"ORDER BY ({', '.join(self.order_by)})\n"
            f"SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        )


def table_name(name: str) -> str:
    """``name`` if it is a plain ClickHouse identifier; a ValueError naming it otherwise."""
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"{name!r} is not a valid table name: use letters, digits and underscores, "
            "not starting with a digit"
        )
    return name


def table_spec(topic_name: str, name: str) -> TableSpec:
    """The table ``name`` holding ``topic_name``'s messages, with the topic's layout."""
    table_name(name)
    try:
        model = MODELS[topic_name]
        layout = LAYOUTS[topic_name]
    except KeyError:
        raise KeyError(
            f"{topic_name!r} has no ClickHouse table layout; topics with one: "
            f"{', '.join(sorted(LAYOUTS))}"
        ) from None
    columns: list[Column] = []
    json_fields: set[str] = set()
    for field_name, info in model.model_fields.items():
        type_ = column_type(field_name, info.annotation, info.metadata)
        if _is_nested(info.annotation):
            json_fields.add(field_name)
        columns.append(Column(field_name, type_, field_name))
    columns += [Column(n, t) for n, t in PROVENANCE_COLUMNS]
    if layout.keeps_deletes:
        columns.append(Column(*DELETED_COLUMN))
    event_time = model.EVENT_TIME_FIELD
    partition_by = (
        f"toDate({event_time})" if layout.partition == "day" else f"toYYYYMM({event_time})"
    )
    names = {c.name for c in columns}
    unknown = [c for c in layout.order_by if c not in names]
    if unknown:
        raise ValueError(f"{topic_name}: ORDER BY names unknown columns {unknown}")
    return TableSpec(
        name=name,
        topic=topic_name,
        model=model,
        columns=tuple(columns),
        order_by=layout.order_by,
        partition_by=partition_by,
        json_fields=frozenset(json_fields),
        versioned=layout.versioned,
        keeps_deletes=layout.keeps_deletes,
    )


def progress_table_ddl(prefix: str = "") -> str:
    """The sink's progress table: the last batch of each topic partition.

    A ReplacingMergeTree keyed by (topic, partition) keeps one row per partition after merges;
    readers use ``FINAL`` so that unmerged rows never show (the table holds a row per partition,
    so FINAL costs nothing). ``next_offset`` is where the partition resumes after an AFTER: one
    past ``max_offset``, or further when the records after the batch all failed to decode (they
    went to the dead-letter topic). ``version`` orders the states of one partition without a
    clock: ``2 × next_offset + (1 if AFTER else 0)`` (a BEFORE's next_offset is max + 1) grows
    with every new batch, and a batch's AFTER outranks its BEFORE. ``updated_at`` is for people.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS `{prefix}{PROGRESS_TABLE}`\n(\n"
        "    `topic` LowCardinality(String),\n"
        "    `partition` UInt16,\n"
        "    `min_offset` UInt64,\n"
        "    `max_offset` UInt64,\n"
        "    `next_offset` UInt64,\n"
        "    `state` Enum8('BEFORE' = 1, 'AFTER' = 2),\n"
        "    `token` String,\n"
        "    `version` UInt64,\n"
        f"    `updated_at` {DATETIME} DEFAULT now64(3)\n"
        ")\n"
        "ENGINE = ReplacingMergeTree(version)\n"
        "ORDER BY (topic, partition)"
    )


# --- type mapping --------------------------------------------------------------------------------


def column_type(name: str, annotation: Any, metadata: list[Any] | None = None) -> str:
    """The ClickHouse type of a model field (see the module docstring for the rules)."""
    inner, optional = _unwrap_optional(annotation)
    inner, extra = _unwrap_annotated(inner)
    metadata = [*(metadata or []), *extra]
    base = _base_type(name, inner, metadata)
    if not optional:
        return base
    if base.startswith("LowCardinality("):
        return f"LowCardinality(Nullable({base[len('LowCardinality(') : -1]}))"
    return f"Nullable({base})"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def _unwrap_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    extra: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        for item in args[1:]:
            # pydantic's Field(...) inside Annotated carries the constraints in .metadata.
            extra.extend(getattr(item, "metadata", None) or [item])
    return annotation, extra


def _is_nested(annotation: Any) -> bool:
    inner, _ = _unwrap_optional(annotation)
    inner, _ = _unwrap_annotated(inner)
    origin = typing.get_origin(inner) or inner
    return origin in (tuple, list, dict) or (
        isinstance(origin, type) and issubclass(origin, BaseModel)
    )


def _base_type(name: str, annotation: Any, metadata: list[Any]) -> str:
    if typing.get_origin(annotation) is Literal:
        return "LowCardinality(String)"
    if _is_nested(annotation):
        return "String"  # the nested value's JSON text
    if annotation is AwareDatetime:  # pydantic's marker class, not a datetime subclass
        return DATETIME
    if isinstance(annotation, type):
        if issubclass(annotation, datetime):
            return DATETIME
        if issubclass(annotation, bool):  # before int: bool is an int subclass
            return "Bool"
        if issubclass(annotation, int):
            return _int_type(metadata)
        if issubclass(annotation, float):
            return "Float64"
        if issubclass(annotation, str):
            return "LowCardinality(String)" if name in LOW_CARDINALITY_FIELDS else "String"
    raise TypeError(f"field {name!r}: no ClickHouse type for {annotation!r}")


def _int_type(metadata: list[Any]) -> str:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low = item.gt + 1
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high = item.lt - 1
    if low is None or low < 0:
        return "Int64"
    for bits in (8, 16, 32):
        if high is not None and high < 2**bits:
            return f"UInt{bits}"
    # Only a lower bound: counts of ticks, sources, ... Unbounded above, so the widest type.
    return "UInt64"
