"""Qdrant clients: qdrant-client's local mode on disk, or a Qdrant server.

Local mode keeps collections in SQLite under one directory and allows one client per directory
at a time, across processes and within one: it takes an ``flock`` on ``<path>/.lock`` and a second
client fails with ``RuntimeError("Storage folder <path> is already accessed by another instance
of Qdrant client. ...")``. `open_qdrant` waits, bounded, for such a holder to go away. The vector
sink never goes away while it runs, and opening loads every point (seconds at 10k points), so
searches beside it are asked of the sink instead (:mod:`ys_platform.clients.owner`,
:func:`ys_platform.sinks.vector_search.search_store`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr
from qdrant_client import QdrantClient

from ys_platform.clients.locks import StoreLockedError, open_when_unlocked

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "QdrantClientFactory",
    "StoreKind",
    "StoreLockedError",
    "client_factory",
    "open_qdrant",
    "store_kind",
]

# As for chDB (clients/clickhouse.py): readers hold the directory briefly, 30 s outlasts them.
DEFAULT_LOCK_TIMEOUT_S = 30.0

StoreKind = Literal["server", "memory", "disk"]


class QdrantClientFactory(Protocol):
    """Opens a client for one unit of work: ``with factory() as client: ...``.

    ``QdrantResource.get_client`` is one (with the resource's lock timeout); the command line
    builds one with :func:`client_factory`.
    """

    def __call__(self) -> AbstractContextManager[QdrantClient]: ...


_LOCKED_TEXT = "is already accessed by another instance of Qdrant client"
_MEMORY = ":memory:"


def _open_local(path: str | Path, lock_timeout_s: float) -> QdrantClient:
    if str(path) == _MEMORY:
        # A private in-memory store: no directory, no lock.
        return QdrantClient(location=_MEMORY)
    directory = Path(os.path.realpath(path))

    def is_locked(exc: Exception) -> bool:
        return isinstance(exc, RuntimeError) and _LOCKED_TEXT in str(exc)

    def locked_error(waited_s: float) -> StoreLockedError:
        return StoreLockedError(
            f"The Qdrant local store at '{directory}' is locked by another client (for example "
            f"a running vector sink, a worker or `dagster dev`, in this or another process); "
            f"waited {waited_s:.1f} s for it. Stop that process, or set YS_QDRANT_URL to a Qdrant "
            "server, which many processes can share.",
            path=str(directory),
            waited_s=waited_s,
        )

    return open_when_unlocked(
        lambda: QdrantClient(path=str(directory)),
        is_locked=is_locked,
        lock_file=directory / ".lock",
        timeout_s=lock_timeout_s,
        locked_error=locked_error,
    )


@contextmanager
def open_qdrant(
    url: str | None = None,
    path: str | Path | None = None,
    api_key: str | SecretStr | None = None,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Iterator[QdrantClient]:
    """A Qdrant client for one unit of work, closed (and its lock released) when the block exits.

    Give exactly one of ``url`` (a Qdrant server; ``api_key`` is sent, never logged) or ``path``
    (local mode on disk; ``":memory:"`` for a private in-memory store). In local mode, if another
    client holds the directory, wait up to ``lock_timeout_s`` with backoff and then raise
    `StoreLockedError`. Local mode's SQLite connections belong to the opening thread: use the
    client on that thread only.
    """
    if (url is None) == (path is None):
        raise ValueError(
            "Give exactly one of a Qdrant server URL (YS_QDRANT_URL) or a local-mode path."
        )
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"The Qdrant URL must start with http:// or https://, not {url!r}.")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        client = QdrantClient(url=url, api_key=key)
    else:
        assert path is not None  # narrowed by the check above
        client = _open_local(path, lock_timeout_s)
    try:
        yield client
    finally:
        client.close()


def client_factory(
    url: str | None = None,
    path: str | Path | None = None,
    api_key: str | SecretStr | None = None,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> QdrantClientFactory:
    """A :class:`QdrantClientFactory` of :func:`open_qdrant`, outside Dagster."""
    return partial(open_qdrant, url=url, path=path, api_key=api_key, lock_timeout_s=lock_timeout_s)


def store_kind(client: QdrantClient) -> StoreKind:
    """Where ``client`` keeps its points: a Qdrant server, memory, or local mode on disk."""
    # init_options: the constructor's arguments, a public property of qdrant-client.
    options = client.init_options
    if options.get("location") == _MEMORY:
        return "memory"
    return "disk" if options.get("path") is not None else "server"
