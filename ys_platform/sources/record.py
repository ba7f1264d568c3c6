"""Catalog messages of the CDC-captured topics written into their PostgreSQL tables of record.

A captured topic (``TopicSpec.change_stream`` in the catalog) is fed by Debezium from one table
(:data:`ys_platform.postgres.CAPTURED`), whose columns are the topic model's fields, named and
typed alike (``0001_initial.sql``). So the mapping is the model itself, both ways:
:func:`row_of` gives a message's fields as column values (positions as a JSONB document, chains
as a ``text[]``), and :func:`message_of_row` reads a row — as psycopg returns it, or as the
connector unwraps it onto the topic — back into the model. A :class:`RecordWriter` upserts
batches of messages by each table's primary key, one PostgreSQL transaction per flush.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ys_platform.catalog.codec import topic_of
from ys_platform.catalog.models import MODELS, Message
from ys_platform.catalog.topics import TOPICS, topic
from ys_platform.postgres import CAPTURED, CapturedTable

__all__ = [
    "CAPTURED_TOPICS",
    "RecordWriteError",
    "RecordWriter",
    "TableLayout",
    "captured_table",
    "inspect_layout",
    "is_captured",
    "message_of_row",
    "row_of",
]

_BY_TOPIC: Mapping[str, CapturedTable] = {c.topic: c for c in CAPTURED}

CAPTURED_TOPICS: tuple[str, ...] = tuple(t.name for t in TOPICS if t.change_stream)
"""The catalog topics fed by CDC from a table of record, in catalog order."""

# A batch is written when it holds this many rows or its oldest row has waited this long. The
# connector streams a commit to its topic within a second or two (tests/integration/test_cdc.py),
# so a 0.1 s hold adds little, and bounds a fast stream to ten commits a second.
DEFAULT_BATCH_ROWS = 1_000
DEFAULT_MAX_DELAY_S = 0.1

_HINT = "run `ys-platform db migrate` against this database"


class RecordWriteError(RuntimeError):
    """PostgreSQL lacks a captured table (or a column of it) or refused a batch of rows."""


def is_captured(topic_name: str) -> bool:
    """Whether ``topic_name`` reaches Kafka through CDC from a table (``change_stream``)."""
    return topic(topic_name).change_stream


def captured_table(topic_name: str) -> CapturedTable:
    """The table of record feeding a captured topic; KeyError for any other topic."""
    if not is_captured(topic_name):
        raise KeyError(f"{topic_name!r} is not fed by CDC: it has no table of record")
    return _BY_TOPIC[topic_name]


def message_of_row(topic_name: str, row: Mapping[str, Any]) -> Message:
    """A row of the topic's table (column -> value) as the catalog message it stands for.

    Column names are field names; a JSONB column may come as its JSON text (what the connector
    puts on the topic) or parsed (what psycopg returns): the model accepts both.
    """
    return MODELS[topic_name].model_validate(dict(row))


@dataclass(frozen=True)
class TableLayout:
    """How a captured topic's messages go into its table: columns (model field order), the
    primary key, and which columns hold a JSONB document or an array."""

    topic: str
    table: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    jsonb: frozenset[str]
    arrays: frozenset[str]

    def upsert(self) -> sql.Composed:
        """``INSERT ... ON CONFLICT (primary key) DO UPDATE``: the latest message of a key wins,
        as on the topic; a transaction whose identity changes is refused by 0002's trigger."""
        updated = [c for c in self.columns if c not in self.primary_key]
        return sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values})"
            " ON CONFLICT ({key}) DO UPDATE SET {set}"
        ).format(
            table=sql.Identifier(self.table),
            columns=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(self.columns)),
            key=sql.SQL(", ").join(map(sql.Identifier, self.primary_key)),
            set=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated
            ),
        )


def row_of(message: Message, layout: TableLayout) -> tuple[Any, ...]:
    """The message's fields as the values of ``layout.columns``, adapted for psycopg."""
    fields = message.model_dump()
    documents = message.model_dump(mode="json", include=set(layout.jsonb)) if layout.jsonb else {}
    values = []
    for column in layout.columns:
        if column in layout.jsonb:
            values.append(Jsonb(documents[column]))
        elif column in layout.arrays:
            values.append(list(fields[column]))
        else:
            values.append(fields[column])
    return tuple(values)


_COLUMNS = """
SELECT a.attname, t.typcategory, coalesce(a.attnum = ANY(i.indkey), false)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def inspect_layout(conn: psycopg.Connection, topic_name: str) -> TableLayout:
    """The layout of a captured topic's table as the database has it; RecordWriteError if the
    table or a column for one of the model's fields is missing."""
    table = captured_table(topic_name).table
    rows = conn.execute(_COLUMNS, (table,)).fetchall()
    if not rows:
        raise RecordWriteError(f"PostgreSQL has no table {table} for {topic_name}: {_HINT}")
    fields = tuple(MODELS[topic_name].model_fields)
    present = {name for name, _, _ in rows}
    missing = [f for f in fields if f not in present]
    if missing:
        raise RecordWriteError(
            f"table {table} has no column for {topic_name} field(s) {', '.join(missing)}: {_HINT}"
        )
    primary_key = tuple(name for name, _, is_key in rows if is_key)
    if not primary_key:
        raise RecordWriteError(f"table {table} has no primary key to upsert {topic_name} by")
    category = {name: cat for name, cat, _ in rows}
    return TableLayout(
        topic=topic_name,
        table=table,
        columns=fields,
        primary_key=primary_key,
        # pg_type.typcategory: 'A' array, 'U' user-defined (jsonb, json).
        jsonb=frozenset(f for f in fields if category[f] == "U"),
        arrays=frozenset(f for f in fields if category[f] == "A"),
    )


class RecordWriter:
    """Upserts messages of captured topics into their tables in batches.

    :meth:`add` buffers a message and writes the buffered rows when there are ``batch_rows`` of
    them; :meth:`poll` writes them once the oldest has waited ``max_delay_s`` (a paced stream
    calls it after every message); :meth:`flush` writes what is buffered now.
    Each write is one PostgreSQL transaction (``executemany`` per table, pipelined by psycopg),
    so Debezium sees whole batches, each table's rows in the order they were added.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
    ) -> None:
        if conn.autocommit:
            raise ValueError("RecordWriter needs a connection outside autocommit")
        self._conn = conn
        self._batch_rows = batch_rows
        self._max_delay_s = max_delay_s
        self._layouts = {name: inspect_layout(conn, name) for name in CAPTURED_TOPICS}
        conn.commit()  # end the catalog read's transaction: nothing is held between batches
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._count = 0
        self._oldest = 0.0
        self.written = 0
        """Rows written (committed) so far."""

    @property
    def pending(self) -> int:
        """Rows buffered, not yet written."""
        return self._count

    def takes(self, topic_name: str) -> bool:
        """Whether messages of ``topic_name`` belong in a table (see :func:`is_captured`)."""
        return topic_name in self._layouts

    def add(self, message: Message) -> None:
        """Buffer ``message`` (of a captured topic: else KeyError), writing if a batch is due."""
        topic_name = topic_of(message)
        layout = self._layouts.get(topic_name)
        if layout is None:
            raise KeyError(f"{topic_name!r} is not fed by CDC: publish it to Kafka instead")
        if not self._count:
            self._oldest = time.monotonic()
        self._pending.setdefault(topic_name, []).append(row_of(message, layout))
        self._count += 1
        if self._count >= self._batch_rows:
            self.flush()

    def poll(self) -> int:
        """Write the buffered rows if the oldest has waited ``max_delay_s``; returns how many."""
        if self._count and time.monotonic() - self._oldest >= self._max_delay_s:
            return self.flush()
        return 0

    def write(self, messages: Iterable[Message]) -> int:
        """Add every message, then flush; returns how many rows this call wrote."""
        before = self.written + self._count
        for message in messages:
            self.add(message)
        self.flush()
        return self.written - before

    def flush(self) -> int:
        """Write the buffered rows in one transaction; returns how many were written."""
        if not self._count:
            return 0
        pending, count = self._pending, self._count
        self._pending, self._count = {}, 0
        try:
            with self._conn.cursor() as cur:
                for topic_name, rows in pending.items():
                    layout = self._layouts[topic_name]
                    try:
                        cur.executemany(layout.upsert(), rows)
                    except psycopg.Error as exc:
                        raise RecordWriteError(
                            f"PostgreSQL refused {len(rows)} {topic_name} row(s) for table "
                            f"{layout.table}: {' '.join(str(exc).split())}"
                        ) from None
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        self.written += count
        return count
