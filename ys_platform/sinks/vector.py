"""The vector sink: topic records rendered to text, embedded, and upserted into Qdrant.

``connectors/vector-sink.json`` maps each input topic of the ``vector-sink`` consumer group to a
collection, a text template over the message's fields (what is embedded) and the fields kept in
the payload (:class:`VectorSinkMapping`, :func:`load_mapping`).

Idempotence instead of progress records: a point's id is ``uuid5(topic, key)`` (the key is the
record key, :func:`~ys_platform.catalog.codec.key_of`), so writing a record again — a replay
after a crash, a rebalance, a re-run from offset 0 — overwrites the same point, and an update of
an entity (a protocol's new TVL) replaces its point. The store then holds each entity once, at
its latest version, whatever the delivery count; Kafka's committed offsets are enough to resume
(``resume_offsets`` returns ``{}``). Within one write the last record of a key wins, as on the
compacted topic.

Tombstones (a None value deleting a key on compacted ``defi.protocols``) never reach ``write``:
the sink runtime decodes every record and sends a value that is not a message to the group's
dead-letter topic. :meth:`VectorSink.delete` removes the points of given keys for a runtime (or
an operator) that hands tombstones over.

Throughput (``bench/vector_sink.py`` measures it):

* A write pipelines its two stages: chunk k+1 is embedded on a helper thread while chunk k is
  upserted on the caller's thread. Both wait outside the GIL (onnxruntime kernels, SQLite), so
  the sink runs at the pace of the slower stage instead of the sum of both.
* qdrant-client's local mode on disk commits every point in its own SQLite transaction, so each
  point waits for an fsync: ~1,000 points/s on a quiet disk, 130-700/s measured here on a busy
  shared one — no faster than the model (200-400 texts/s on 2 cores), so the store, not the
  model, would bound the sink. Batching upserts does not change that (the client commits per
  point anyway). The sink therefore puts its collections' SQLite files in WAL mode with
  ``synchronous=NORMAL`` (commits no longer fsync; still atomic, and nothing is lost if the
  process dies) and, at the end of every write, runs a ``wal_checkpoint(FULL)``: one fsync per
  write, before the runtime commits the Kafka offsets, so a write that returned survives an OS
  crash too. Measured on the busy disk (upserts alone, checkpoint included): 250-700 ->
  3,400-5,000 points/s. This reaches into qdrant-client's local-mode internals (its
  ``CollectionPersistence`` connection); if they change, the sink logs a warning and keeps the
  client's per-point commits (slower, equally correct). ``durable_batches=False`` turns it off.

The Qdrant client is used only on the thread that opened the sink: local mode's SQLite
connections belong to that thread.

Readers beside the sink: local mode admits one client per directory and loads every point when it
opens (8.5 s at 20k points here), so the sink does not let go of the store for readers, as the
ClickHouse sink does; given ``serve_at`` it answers their searches itself
(:mod:`ys_platform.clients.owner`), on its thread, between two flushes and between the chunks of
a flush, so a search waits at most for one chunk (256 points: ~1 s of embedding). Readers call
:func:`~ys_platform.sinks.vector_search.search_store`, which asks the sink when one serves and
opens the store itself otherwise.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import string
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from qdrant_client import QdrantClient, models

from ys_platform.catalog.codec import key_of
from ys_platform.catalog.models import MODELS, Message
from ys_platform.catalog.topics import ConsumerGroupSpec, consumer_group
from ys_platform.clients.owner import OwnerDoor
from ys_platform.clients.qdrant import QdrantClientFactory, StoreKind, store_kind
from ys_platform.embeddings.model import DIMENSION, shared_embedder
from ys_platform.package_files import CONNECTORS_DIR
from ys_platform.sinks.mapping import SinkConfigError, SinkGroup, read_mapping_file
from ys_platform.sinks.vector_search import collection_prefix
from ys_platform.streaming.app import PartitionBatch, TopicPartitionId

__all__ = [
    "DEFAULT_MAPPING_PATH",
    "MAPPING_FILE",
    "META_FIELDS",
    "POINT_NAMESPACE",
    "CollectionMapping",
    "SinkConfigError",
    "TextEmbedder",
    "VectorSink",
    "VectorSinkMapping",
    "collection_prefix",
    "ensure_collection",
    "load_mapping",
    "point_id",
    "query_vector",
    "render_text",
    "search_collection",
]

log = logging.getLogger(__name__)

MAPPING_FILE = "vector-sink.json"
"""The mapping's file name in the connectors folder (``Settings.connectors_dir``)."""
DEFAULT_MAPPING_PATH = CONNECTORS_DIR / MAPPING_FILE

POINT_NAMESPACE = uuid.UUID("5b0f9c1e-7a43-5d2e-9a51-0c7d8e2f4b6a")
"""The uuid5 namespace of point ids: fixed forever, since changing it would orphan every point
already stored (a replay would then add a second copy instead of overwriting)."""

# Points per Qdrant upsert (and per pipeline stage): large enough to amortise the embedding
# batch and one request to a server, small enough that the first upsert starts after ~0.5 s of
# embedding, which is what lets the two stages overlap on a small write.
DEFAULT_CHUNK = 256
# Payload keys the sink adds beside the kept fields; the underscore keeps them apart from any
# message field (no catalog model has a field starting with one).
META_FIELDS = ("_topic", "_partition", "_offset", "_key")
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Errors found by a model validator carry their key in the text (see VectorSinkMapping._topics).
_KEY = "key '"


class TextEmbedder(Protocol):
    """What the sink needs of an embedder (:class:`~ys_platform.embeddings.Embedder`)."""

    dimension: int

    def embed(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...


# --- the mapping file ----------------------------------------------------------------------------


def _template_fields(template: str) -> list[str]:
    """The field names a template uses; ValueError for anything beyond plain ``{field}``."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"template {template!r}: '{{{name}}}' is not a plain field name (no positional, "
                "attribute or index fields)"
            )
        if spec or conversion:
            raise ValueError(
                f"template {template!r}: '{{{name}}}' has a format spec or conversion; fields "
                f"are rendered as text by the sink (write {{{name}}} alone)"
            )
        names.append(name)
    if not names:
        raise ValueError(f"template {template!r} uses no field: there would be nothing to embed")
    return names


class CollectionMapping(BaseModel):
    """Where one topic goes: its collection, the text embedded, the payload kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(description="Qdrant collection (before the namespace prefix).")
    text: str = Field(description="Template over message fields, e.g. '{name}: {description}'.")
    payload: tuple[str, ...] = Field(description="Message fields stored with the point.")

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not _COLLECTION_NAME.match(value):
            raise ValueError(
                f"collection {value!r} must be 1-128 letters, digits, '_' or '-' (Qdrant's "
                "portable names)"
            )
        return value

    @field_validator("text")
    @classmethod
    def _template(cls, value: str) -> str:
        _template_fields(value)
        return value

    @property
    def text_fields(self) -> list[str]:
        return _template_fields(self.text)


class VectorSinkMapping(BaseModel):
    """``connectors/vector-sink.json``: topic -> collection, text template and payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "vector-sink"
    group: SinkGroup = Field(default="vector-sink", description="The catalog consumer group.")
    topics: dict[str, CollectionMapping]
    batch_size: int = Field(default=2_000, ge=1, le=1_000_000)
    """Records per flush of the sink runtime. Embedding runs at a few hundred texts per second,
    so a flush stays ~5 s: far inside the consumer's max.poll.interval.ms (300 s)."""
    flush_interval_ms: int = Field(default=2_000, ge=10, le=3_600_000)
    """Flush at least this often while records are buffered: how stale search results can be."""
    embed_batch_size: int = Field(default=64, ge=1, le=4_096)
    """Texts per model run: 32-128 are within a few percent of each other on 2 cores."""

    @field_validator("topics")
    @classmethod
    def _some_topics(cls, value: dict[str, CollectionMapping]) -> dict[str, CollectionMapping]:
        if not value:
            raise ValueError("map at least one topic to a collection")
        return value

    @model_validator(mode="after")
    def _topics(self) -> VectorSinkMapping:
        # Checked here, where the topic is known, and reported with the full key (the loc of
        # a model validator is the top level): "key 'topics['defi.protocols'].text': ...".
        inputs = consumer_group(self.group).inputs
        seen: dict[str, str] = {}
        for topic_name, mapping in self.topics.items():
            at = f"topics[{topic_name!r}]"
            model = MODELS.get(topic_name)
            if model is None:
                raise ValueError(
                    f"{_KEY}{at}': {topic_name!r} is not a catalog topic with a message model"
                )
            if topic_name not in inputs:
                raise ValueError(
                    f"{_KEY}{at}': topic {topic_name!r} is not an input of consumer group "
                    f"{self.group!r} (inputs: {', '.join(inputs)}); add it to the catalog first"
                )
            fields = set(model.model_fields)
            known = ", ".join(model.model_fields)
            for name in mapping.text_fields:
                if name not in fields:
                    raise ValueError(
                        f"{_KEY}{at}.text': the template names unknown field {name!r} "
                        f"({model.__name__} has: {known})"
                    )
            for name in mapping.payload:
                if name not in fields:
                    raise ValueError(
                        f"{_KEY}{at}.payload': unknown field {name!r} "
                        f"({model.__name__} has: {known})"
                    )
            if mapping.collection in seen:
                raise ValueError(
                    f"{_KEY}{at}.collection': topics {seen[mapping.collection]!r} and "
                    f"{topic_name!r} both map to collection {mapping.collection!r}"
                )
            seen[mapping.collection] = topic_name
        return self

    @property
    def consumer_group(self) -> ConsumerGroupSpec:
        return consumer_group(self.group)

    def collection_of(self, topic_name: str) -> str:
        """The collection (without namespace) a catalog topic is written to."""
        return self.spec(topic_name).collection

    def spec(self, topic_name: str) -> CollectionMapping:
        """The mapping of a catalog topic; KeyError naming it if it is not mapped."""
        try:
            return self.topics[topic_name]
        except KeyError:
            raise KeyError(
                f"topic {topic_name!r} is not mapped by the vector sink (mapped: "
                f"{', '.join(self.topics)})"
            ) from None


def load_mapping(path: str | Path | None = None) -> VectorSinkMapping:
    """Read and validate the mapping file (default :data:`DEFAULT_MAPPING_PATH`).

    Raises :class:`SinkConfigError` with one sentence naming the file and the offending key.
    """
    path = Path(path) if path is not None else DEFAULT_MAPPING_PATH
    raw = read_mapping_file(path, "vector sink")
    return _validate(raw, str(path))


def _validate(raw: Any, source: str) -> VectorSinkMapping:
    try:
        return VectorSinkMapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # Topic names hold dots themselves, so the path is shown as keys in brackets where it
        # would be ambiguous: topics['defi.protocols'].text.
        key = "".join(
            f"[{part!r}]" if isinstance(part, str) and "." in part else f".{part}"
            for part in first["loc"]
        ).lstrip(".")
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"] and message.startswith(_KEY):
            raise SinkConfigError(f"{source}: {message}") from None
        raise SinkConfigError(f"{source}: key '{key or '(top level)'}': {message}") from None


# --- rendering and ids (pure) --------------------------------------------------------------------


def _text_of(value: Any) -> str:
    """A field value as prose for the embedder: no ``None``, lists joined, numbers short."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"  # 6 significant digits: what a sentence about a number says
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, BaseModel):
        # A nested record (a portfolio's positions) reads as "field value" pairs.
        parts = (
            f"{name} {_text_of(getattr(value, name))}"
            for name in type(value).model_fields
            if getattr(value, name) is not None
        )
        return " ".join(parts)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_text_of(v)}" for k, v in value.items())
    if isinstance(value, Iterable):
        separator = "; " if any(isinstance(v, BaseModel) for v in value) else ", "
        return separator.join(_text_of(v) for v in value)
    return str(value)


_SPACES = re.compile(r"\s+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")


def render_text(template: str, message: BaseModel) -> str:
    """The text of ``message`` under ``template``: fields as prose, empty fields leave no
    ``None`` nor empty brackets behind, whitespace collapsed."""
    values = {name: _text_of(getattr(message, name)) for name in _template_fields(template)}
    text = _EMPTY_BRACKETS.sub("", template.format_map(values))
    return _SPACES.sub(" ", text).strip(" :;,")


def point_id(topic_name: str, key: str) -> str:
    """The point of an entity: uuid5 of its catalog topic and record key (stable forever)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{topic_name}\x00{key}"))


def _offset_point_id(topic_name: str, partition: int, offset: int) -> str:
    # A record without a key has no entity to overwrite: its position identifies it, which
    # still makes a replay of the same record idempotent.
    return str(uuid.uuid5(POINT_NAMESPACE, f"{topic_name}\x00{partition}\x00{offset}"))


@dataclass(frozen=True)
class _Point:
    collection: str
    id: str
    text: str
    payload: dict[str, Any]


# --- the sink ------------------------------------------------------------------------------------


class VectorSink:
    """Embeds records of the mapped topics and upserts them into Qdrant (see the module doc).

    ``clients`` opens the sink's Qdrant client (``QdrantResource.get_client`` in Dagster, so the
    resource's lock timeout applies; ``clients.qdrant.client_factory`` elsewhere): a server, or
    local mode in a directory or in memory. ``namespace`` is the prefix of the physical topics
    (as in ``SinkConfig.namespace``); collections get it too, made a valid name, so tests sharing
    one store do not meet.
    """

    def __init__(
        self,
        clients: QdrantClientFactory,
        mapping: VectorSinkMapping | None = None,
        embedder: TextEmbedder | None = None,
        namespace: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK,
        durable_batches: bool = True,
        serve_at: Path | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.clients = clients
        self.mapping = mapping or load_mapping()
        self.embedder: TextEmbedder = embedder or shared_embedder()
        self.group = self.mapping.consumer_group
        self.namespace = namespace
        self.prefix = collection_prefix(namespace)
        self.chunk_size = chunk_size
        self.durable_batches = durable_batches
        # Only for local mode on disk (clients.owner.owner_socket of its directory).
        self.serve_at = serve_at
        self._door: OwnerDoor | None = None
        self._sqlite: dict[str, sqlite3.Connection] = {}
        self._stack: ExitStack | None = None
        self._client: QdrantClient | None = None
        self._store: StoreKind | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._thread: int | None = None
        self.upserted = 0
        self.deleted = 0

    @property
    def commit_mode(self) -> str:
        """How writes reach the disk once open: ``per-write`` (one fsync per write, see the
        module docstring), ``per-point`` (local mode's default) or ``server``/``memory``."""
        if self._store in ("server", "memory"):
            return self._store
        return "per-write" if self._sqlite else "per-point"

    def collection(self, topic_name: str) -> str:
        """The physical collection of a catalog topic."""
        return f"{self.prefix}{self.mapping.collection_of(topic_name)}"

    def collections(self) -> dict[str, str]:
        """Catalog topic -> physical collection, for every mapped topic."""
        return {t: self.collection(t) for t in self.mapping.topics}

    # --- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open the client and create missing collections (384-d, cosine)."""
        if self._client is not None:
            return
        stack = ExitStack()
        try:
            client = stack.enter_context(self.clients())
            self._store = store_kind(client)
            for name in self.collections().values():
                ensure_collection(client, name, self.embedder.dimension)
            if self.durable_batches and self._store == "disk":
                self._sqlite = _batch_commits(client, list(self.collections().values()))
            # One helper thread: the embedder of the pipeline (see the module docstring).
            self._executor = stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-sink-embed")
            )
            if self.serve_at is not None and self._store == "disk":
                door = OwnerDoor(self.serve_at)
                if door.open():
                    stack.callback(door.close)  # closed before the client (LIFO)
                    self._door = door
        except BaseException:
            stack.close()
            raise
        self._stack, self._client, self._thread = stack, client, threading.get_ident()

    def close(self) -> None:
        stack, self._stack, self._client, self._executor = self._stack, None, None, None
        self._sqlite = {}
        self._door = None
        if stack is not None:
            stack.close()

    def __enter__(self) -> VectorSink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_client(self) -> QdrantClient:
        if self._client is None:
            raise RuntimeError("VectorSink is not open: call open() first")
        if threading.get_ident() != self._thread:
            raise RuntimeError("VectorSink must be used from the thread that opened it")
        return self._client

    # --- the contract -----------------------------------------------------------------------
    def resume_offsets(
        self, partitions: Sequence[TopicPartitionId]
    ) -> Mapping[TopicPartitionId, int]:
        """``{}``: writes are idempotent, so the group's committed offsets are where to resume."""
        return {}

    def write(
        self, partition: TopicPartitionId, messages: Sequence[Message], offsets: Sequence[int]
    ) -> int:
        """Embed and upsert one partition's records; returns the points written."""
        return self._write(self._points(partition, messages, offsets))

    def write_many(self, batches: Sequence[PartitionBatch]) -> int:
        """``write`` for several partitions in one pipeline, so that the many small partitions
        of a flush share model runs and one durable commit."""
        points: list[_Point] = []
        for batch in batches:
            points.extend(self._points(batch.partition, batch.messages, batch.offsets))
        return self._write(points)

    def delete(self, topic_name: str, keys: Sequence[str]) -> int:
        """Remove the points of ``keys`` of a catalog topic (what a tombstone means)."""
        client = self._require_client()
        if not keys:
            return 0
        ids: list[models.ExtendedPointId] = [point_id(topic_name, k) for k in keys]
        client.delete(self.collection(topic_name), points_selector=ids, wait=True)
        self._sync({self.collection(topic_name)})
        self.deleted += len(ids)
        return len(ids)

    def serve_readers(self) -> None:
        """Answer the searches other processes sent (see the module docstring)."""
        if self._door is not None:
            self._door.serve_pending(self._answer)

    @property
    def readers_served(self) -> int:
        """Requests of other processes answered so far."""
        return self._door.served if self._door is not None else 0

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        client = self._require_client()
        if request.get("op") == "count":
            collections = request.get("collections")
            if not isinstance(collections, list) or not all(
                isinstance(c, str) for c in collections
            ):
                return {"error": "a count names a list of collections"}
            return {
                "counts": {
                    c: client.count(c, exact=True).count if client.collection_exists(c) else None
                    for c in collections
                }
            }
        if request.get("op") != "search":
            return {"error": f"unknown request {request.get('op')!r} (known: search, count)"}
        collection, vector, limit = (request.get(k) for k in ("collection", "vector", "limit"))
        if not isinstance(collection, str) or not isinstance(limit, int) or limit < 1:
            return {"error": "a search names a collection and a limit of at least 1"}
        text = request.get("text")
        if vector is None and isinstance(text, str):
            # The sink's model is loaded already: the asking process need not load its own
            # (~0.25 s of files, and onnxruntime's import, on its way to a 5 s answer).
            vector = self.embedder.embed([text])[0].tolist()
        if not isinstance(vector, list) or len(vector) != self.embedder.dimension:
            return {"error": f"a search carries a text or a {self.embedder.dimension}-d vector"}
        if not client.collection_exists(collection):
            return {"points": None}
        return {"points": query_vector(client, collection, vector, limit)}

    # --- writing -----------------------------------------------------------------------------
    def _points(
        self, partition: TopicPartitionId, messages: Sequence[Message], offsets: Sequence[int]
    ) -> list[_Point]:
        if len(messages) != len(offsets):
            raise ValueError(f"{len(messages)} messages but {len(offsets)} offsets")
        topic_name, number = partition
        spec = self.mapping.spec(topic_name)
        collection = self.collection(topic_name)
        keep = set(spec.payload)
        # The last record of a key wins (later offsets are newer versions of the entity): keep
        # one point per id, at the position of its last record.
        latest: dict[str, _Point] = {}
        for message, offset in zip(messages, offsets, strict=True):
            key = key_of(message)
            pid = (
                point_id(topic_name, key)
                if key is not None
                else _offset_point_id(topic_name, number, offset)
            )
            payload = message.model_dump(mode="json", include=keep)
            payload.update(_topic=topic_name, _partition=number, _offset=offset, _key=key)
            latest.pop(pid, None)
            latest[pid] = _Point(collection, pid, render_text(spec.text, message), payload)
        return list(latest.values())

    def _write(self, points: list[_Point]) -> int:
        client = self._require_client()
        if not points:
            return 0
        assert self._executor is not None
        chunks = [points[i : i + self.chunk_size] for i in range(0, len(points), self.chunk_size)]
        batch_size = self.mapping.embed_batch_size

        def embed(chunk: list[_Point]) -> np.ndarray:
            return self.embedder.embed([p.text for p in chunk], batch_size=batch_size)

        pending: Future[np.ndarray] = self._executor.submit(embed, chunks[0])
        for index, chunk in enumerate(chunks):
            vectors = pending.result()
            if index + 1 < len(chunks):
                # Embed the next chunk while this one is written: the two overlap.
                pending = self._executor.submit(embed, chunks[index + 1])
            self.serve_readers()  # a search waits one chunk, not a whole flush
            _upsert(client, chunk, vectors)
        self._sync({p.collection for p in points})
        self.upserted += len(points)
        return len(points)

    def _sync(self, collections: set[str]) -> None:
        """Make the WAL-committed points durable: one fsync per collection written."""
        for name in collections:
            connection = self._sqlite.get(name)
            if connection is not None:
                busy, _, _ = connection.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
                if busy:
                    # Only another connection to the file could block it; local mode allows one.
                    raise RuntimeError(f"Qdrant local store: checkpoint of {name!r} was blocked")

    # --- search ------------------------------------------------------------------------------
    def search(self, collection: str, query: str, limit: int = 5) -> list[tuple[float, dict]]:
        """The ``limit`` points of ``collection`` (a mapped collection name, without the
        namespace) nearest to ``query``, best first: ``[(cosine score, payload), ...]``."""
        client = self._require_client()
        names = {m.collection for m in self.mapping.topics.values()}
        if collection not in names:
            known = ", ".join(sorted(names))
            raise KeyError(f"{collection!r} is not a vector sink collection (known: {known})")
        return search_collection(
            client, f"{self.prefix}{collection}", query, limit, embedder=self.embedder
        )


def _batch_commits(client: QdrantClient, names: list[str]) -> dict[str, sqlite3.Connection]:
    """Switch the local-mode SQLite file of each collection to WAL with ``synchronous=NORMAL``
    (see the module docstring); the connections, or {} if qdrant-client's internals moved."""
    # qdrant-client 1.x: QdrantClient._client is QdrantLocal, whose .collections maps names to
    # LocalCollection, whose .storage (CollectionPersistence, None in memory) has .storage, the
    # sqlite3.Connection it commits every point on.
    collections = getattr(getattr(client, "_client", None), "collections", None)
    connections: dict[str, sqlite3.Connection] = {}
    for name in names:
        persistence = getattr(collections.get(name), "storage", None) if collections else None
        connection = getattr(persistence, "storage", None)
        if not isinstance(connection, sqlite3.Connection):
            log.warning(
                "qdrant-client's local storage layout is not the one the vector sink knows; "
                "keeping its per-point commits (correct, but ~10x slower on disk)"
            )
            return {}
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode.lower() != "wal":
            log.warning("%s: SQLite refused WAL mode (%s); keeping per-point commits", name, mode)
            return {}
        connection.execute("PRAGMA synchronous=NORMAL")
        connections[name] = connection
    return connections


def _upsert(client: QdrantClient, chunk: list[_Point], vectors: np.ndarray) -> None:
    by_collection: dict[str, list[int]] = {}
    for i, point in enumerate(chunk):
        by_collection.setdefault(point.collection, []).append(i)
    for name, rows in by_collection.items():
        client.upsert(
            name,
            points=models.Batch(
                ids=[chunk[i].id for i in rows],
                vectors=vectors[rows].tolist(),
                payloads=[chunk[i].payload for i in rows],
            ),
            wait=True,  # durable before the runtime commits the records' offsets
        )


def ensure_collection(client: QdrantClient, name: str, dimension: int = DIMENSION) -> bool:
    """Create collection ``name`` (``dimension``-d, cosine) unless it exists; True if created.

    An existing collection of another size or metric raises ValueError naming both: its vectors
    come from another model and cannot be mixed with these.
    """
    if client.collection_exists(name):
        params = client.get_collection(name).config.params.vectors
        if not isinstance(params, models.VectorParams) or (
            params.size != dimension or params.distance != models.Distance.COSINE
        ):
            raise ValueError(
                f"Qdrant collection {name!r} exists with vectors {params!r}, not {dimension}-d "
                "cosine: it holds another model's vectors. Delete it (it is rebuilt from the "
                "topics by replaying them) or map the topic to another collection."
            )
        return False
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE)
    )
    return True


def search_collection(
    client: QdrantClient,
    collection: str,
    query: str,
    limit: int = 5,
    *,
    embedder: TextEmbedder | None = None,
) -> list[tuple[float, dict]]:
    """Nearest points of the physical ``collection`` to the text ``query``, best first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    embedder = embedder or shared_embedder()
    return query_vector(client, collection, embedder.embed([query])[0].tolist(), limit)


def query_vector(
    client: QdrantClient, collection: str, vector: list[float], limit: int
) -> list[tuple[float, dict]]:
    """The ``limit`` points of ``collection`` nearest to ``vector``: ``[(score, payload), ...]``."""
    response = client.query_points(
        collection_name=collection, query=vector, limit=limit, with_payload=True
    )
    return [(float(p.score), dict(p.payload or {})) for p in response.points]
