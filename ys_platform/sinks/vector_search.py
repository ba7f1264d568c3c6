"""Searching the vector sink's collections from another process (``ys-platform search``).

While the vector sink runs on a local store it holds the directory and answers searches itself
(:mod:`ys_platform.clients.owner`, :meth:`~ys_platform.sinks.vector.VectorSink.serve_readers`):
this module asks it first. Only when no sink serves does it open the store (or the server) with a
client of its own. It imports no qdrant-client until then: building qdrant-client's models takes
3-9 s at import on the busy 2-core build machine, longer than the whole answer from the sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ys_platform.clients.owner import ask_owner, owner_socket

if TYPE_CHECKING:
    from ys_platform.sinks.vector import TextEmbedder

__all__ = ["NoSuchCollectionError", "collection_prefix", "count_from_owner", "search_store"]

# As long as a reader waits for a store's lock (clients.qdrant.DEFAULT_LOCK_TIMEOUT_S); the sink
# answers far sooner, within a chunk of its write (~1 s).
ANSWER_TIMEOUT_S = 30.0
_MEMORY = ":memory:"


class NoSuchCollectionError(LookupError):
    """The collection searched does not exist (yet): the vector sink creates it when it opens."""


def collection_prefix(namespace: str) -> str:
    """The collection prefix of a namespace (``t1a2b.`` -> ``t1a2b_``), as the ClickHouse sink
    names its tables: Qdrant names take letters, digits, ``_`` and ``-``."""
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in namespace)


def search_store(
    collection: str,
    query: str,
    limit: int = 5,
    *,
    url: str | None = None,
    path: str | Path | None = None,
    api_key: SecretStr | None = None,
    embedder: TextEmbedder | None = None,
    timeout_s: float = ANSWER_TIMEOUT_S,
) -> list[tuple[float, dict]]:
    """The ``limit`` points of the physical ``collection`` nearest to the text ``query``, best
    first, as ``[(cosine score, payload), ...]``, from a Qdrant server (``url``) or a local store
    (``path``; asked of the vector sink when one holds it, which embeds the text with its own
    model unless ``embedder`` is given; otherwise ``embedder`` or the shared model embeds it).

    Raises :class:`NoSuchCollectionError` when the collection does not exist.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    reply = None
    if url is None and path is not None and str(path) != _MEMORY:
        # The sink embeds the text with the model it holds: this process loads none.
        request = {"op": "search", "collection": collection, "text": query, "limit": limit}
        if embedder is not None:
            request = {**request, "vector": embedder.embed([query])[0].tolist()}
        reply = ask_owner(owner_socket(path), request, timeout_s=timeout_s)
    if reply is not None:
        if "error" in reply:
            raise RuntimeError(f"the vector sink refused a search: {reply['error']}")
        points = reply["points"]
    else:
        from ys_platform.clients.qdrant import open_qdrant
        from ys_platform.sinks.vector import query_vector

        if embedder is None:
            from ys_platform.embeddings import shared_embedder

            embedder = shared_embedder()
        # Embedded before the store is opened: its lock is not held while a model loads.
        vector = embedder.embed([query])[0].tolist()
        with open_qdrant(url=url, path=path, api_key=api_key, lock_timeout_s=timeout_s) as client:
            exists = client.collection_exists(collection)
            points = query_vector(client, collection, vector, limit) if exists else None
    if points is None:
        raise NoSuchCollectionError(f"no collection {collection!r}: is the vector sink running?")
    return [(float(score), dict(payload)) for score, payload in points]


def count_from_owner(
    path: str | Path, collections: Sequence[str], *, timeout_s: float = ANSWER_TIMEOUT_S
) -> dict[str, int | None] | None:
    """Points per collection, asked of the vector sink holding the local store at ``path``:
    ``{collection: count, or None if it does not exist}``; None when no sink serves (the
    caller may then open the store itself)."""
    request = {"op": "count", "collections": list(collections)}
    reply = ask_owner(owner_socket(path), request, timeout_s=timeout_s)
    if reply is None:
        return None
    if "error" in reply:
        raise RuntimeError(f"the vector sink refused a count: {reply['error']}")
    counts: dict[str, int | None] = reply["counts"]
    return counts
