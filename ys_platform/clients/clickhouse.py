"""ClickHouse clients: embedded chDB (``chdb://``) locally, a ClickHouse server over HTTP(S).

Both go through clickhouse-connect, so callers see one API (``query_arrow``, ``insert_arrow``, ...)
either way. chDB runs the engine inside this process, which brings two rules measured on chDB 4.4:

* one process per database path: the engine takes an ``flock`` on ``<path>/status``; a second
  process fails with "Cannot lock file <path>/status" on stderr while the Python error only says
  "Error initializing EmbeddedServer: . (BAD_ARGUMENTS)"; chDB's read-only mode (``?mode=ro``,
  ClickHouse's ``readonly=1``) takes the same lock and fails the same way, and its docs allow one
  session at a time per process;
* one path per process: while any client is open on one path, opening another (even
  ``:memory:``) fails with "EmbeddedServer already initialized with path ...".

So open a client per unit of work and close it promptly; `open_clickhouse` does both and waits,
bounded, while another process holds the path, announcing itself (`waiting_readers`) so that a
sink holding it lets go after its current flush (README, "Readers beside the sinks").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError
from pydantic import SecretStr

from ys_platform.clients.locks import (
    StoreLockedError,
    WaitingReaders,
    flock_held,
    open_when_unlocked,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "ChdbPathConflictError",
    "ClickHouseClientFactory",
    "ClickHouseUnavailableError",
    "StoreLockedError",
    "chdb_path",
    "client_factory",
    "is_exclusive",
    "open_clickhouse",
    "waiting_readers",
]

# Readers (assets, queries) hold a chDB path for well under a second, and a sink lets a waiter in
# after its current flush (about a second at 100k rows); 30 s outlasts a slow query or a long
# flush and still fails, with a sentence, while a process that never lets go holds the path.
DEFAULT_LOCK_TIMEOUT_S = 30.0


class ClickHouseClientFactory(Protocol):
    """Opens a client for one unit of work: ``with factory() as client: ...``.

    ``ClickHouseResource.get_client`` is one (with the resource's lock timeout); the command
    line builds one with :func:`client_factory`.
    """

    def __call__(self, *, database: str | None = None) -> AbstractContextManager[Client]: ...


# The Python-side text of a chDB start that failed; on its own it does not say why.
_ENGINE_START_FAILED = "Error initializing EmbeddedServer"
_LOCK_HELD = "Cannot lock file"
_PATH_CONFLICT = re.compile(r"EmbeddedServer already initialized with path '([^']*)'")
_MEMORY_LOCATIONS = ("", "memory", ":memory:")


class ChdbPathConflictError(RuntimeError):
    """This process already runs chDB on another path; chDB hosts one path per process."""


class ClickHouseUnavailableError(ConnectionError):
    """A ClickHouse server did not answer; the message names it without credentials."""


def chdb_path(dsn: str) -> Path | None:
    """The on-disk directory of a ``chdb://`` DSN, resolved as chDB will see it; None for memory.

    Mirrors clickhouse-connect's reading of the DSN: ``chdb:///abs/path`` is a path, the netloc
    form (``chdb://memory/db``) names a location and a database.
    """
    parsed = urlsplit(dsn)
    location = parsed.netloc.rpartition("@")[2] if parsed.netloc else parsed.path
    if location in _MEMORY_LOCATIONS:
        return None
    # clickhouse-connect realpath()s the location too; chDB compares paths literally.
    return Path(os.path.realpath(location))


def is_exclusive(dsn: str) -> bool:
    """Whether a client on ``dsn`` keeps every other process out: chDB on a path."""
    return urlsplit(dsn).scheme == "chdb" and chdb_path(dsn) is not None


def waiting_readers(dsn: str) -> WaitingReaders | None:
    """Where processes waiting for the chDB path of ``dsn`` say so; None if nobody can wait
    (a server, or a private in-memory engine)."""
    path = chdb_path(dsn) if urlsplit(dsn).scheme == "chdb" else None
    return WaitingReaders(path) if path is not None else None


def _secret_value(password: str | SecretStr | None) -> str | None:
    if isinstance(password, SecretStr):
        return password.get_secret_value()
    return password


def _redact_url(url: str) -> str:
    """The URL without its password (and without a query string, which may carry one)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# chDB clients this process has open (through open_clickhouse): while there are any, the process
# itself holds the engine's lock, so a lock probe would only see our own lock.
_OPEN_CHDB_CLIENTS: list[Client] = []


def _open_chdb(dsn: str, database: str | None, lock_timeout_s: float) -> Client:
    path = chdb_path(dsn)
    status_file = path / "status" if path is not None else None

    def open_once() -> Client:
        try:
            return clickhouse_connect.get_client(dsn=dsn, database=database)
        except ProgrammingError as exc:
            text = str(exc)
            if (
                status_file is not None
                and _ENGINE_START_FAILED in text
                and flock_held(status_file) is False
            ):
                # The holder may have exited between our attempt and the probe: try once more
                # before calling it something other than a lock.
                return clickhouse_connect.get_client(dsn=dsn, database=database)
            conflict = _PATH_CONFLICT.search(text)
            if conflict:
                raise ChdbPathConflictError(
                    f"This process already has chDB open at '{conflict.group(1)}', and chDB "
                    f"hosts one database path per process, so '{path or ':memory:'}' cannot be "
                    "opened here. Close every client on the first path before opening another, "
                    "or use the same path (YS_HOME) everywhere in one process."
                ) from exc
            raise

    if status_file is None:
        # In-memory engines are private to the process: nothing to wait for.
        return open_once()

    def is_locked(exc: Exception) -> bool:
        if not isinstance(exc, ProgrammingError):
            return False
        text = str(exc)
        if _LOCK_HELD in text:
            return True
        # The generic start failure is a lock only if someone actually holds the status file;
        # a permission problem, a full disk or a corrupt directory must surface as itself.
        return _ENGINE_START_FAILED in text and flock_held(status_file) is True

    def locked_error(waited_s: float) -> StoreLockedError:
        return StoreLockedError(
            f"The chDB database at '{path}' is locked by another process (for example a running "
            f"clickhouse sink, a worker or `dagster dev`); waited {waited_s:.1f} s for it. Stop "
            "that process, or set YS_CLICKHOUSE_URL to a ClickHouse server, which many processes "
            "can share.",
            path=str(path),
            waited_s=waited_s,
        )

    return open_when_unlocked(
        open_once,
        is_locked=is_locked,
        lock_file=status_file,
        timeout_s=lock_timeout_s,
        locked_error=locked_error,
        # chDB prints "Cannot lock file …" to stderr on every start that finds the path held:
        # probe first, unless this process holds it itself (then the open simply joins it).
        probe_first=not _OPEN_CHDB_CLIENTS,
        readers=waiting_readers(dsn),
    )


def _open_http(dsn: str, password: str | None, database: str | None) -> Client:
    try:
        # get_client pings the server, so an unreachable one fails here, not on first query.
        return clickhouse_connect.get_client(dsn=dsn, password=password or "", database=database)
    except OperationalError as exc:
        reason = str(exc)
        for secret in (password, urlsplit(dsn).password):
            if secret:
                reason = reason.replace(secret, "***")
        # Not chained: the driver's exception is rebuilt from request details we do not vet.
        raise ClickHouseUnavailableError(
            f"Cannot reach the ClickHouse server at {_redact_url(dsn)} ({reason}). Check that it "
            "is running and that YS_CLICKHOUSE_URL is right, or unset YS_CLICKHOUSE_URL to use "
            "the embedded chDB."
        ) from None


@contextmanager
def open_clickhouse(
    dsn: str,
    password: str | SecretStr | None = None,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    database: str | None = None,
) -> Iterator[Client]:
    """A clickhouse-connect client for one unit of work, closed when the block exits.

    ``dsn`` is ``chdb:///<path>`` (embedded chDB; ``chdb://memory`` for a private in-memory
    engine) or ``http(s)://user@host:port/db`` (a server; ``password`` is sent, never logged).

    For chDB, if another process holds the path, wait up to ``lock_timeout_s`` with backoff and
    then raise `StoreLockedError`; opening a second path in this process raises
    `ChdbPathConflictError`. A client is not thread-safe in practice: never share one across
    threads (chDB has been measured inserting another thread's rows); open one per thread.
    """
    scheme = urlsplit(dsn).scheme
    if scheme == "chdb":
        client = _open_chdb(dsn, database, lock_timeout_s)
        _OPEN_CHDB_CLIENTS.append(client)
    elif scheme in ("http", "https"):
        client = _open_http(dsn, _secret_value(password), database)
    else:
        raise ValueError(
            f"The ClickHouse DSN must start with chdb://, http:// or https://, not {scheme!r}://."
        )
    try:
        yield client
    finally:
        if scheme == "chdb":
            _OPEN_CHDB_CLIENTS.remove(client)
        client.close()


def client_factory(
    dsn: str,
    password: str | SecretStr | None = None,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> ClickHouseClientFactory:
    """A :class:`ClickHouseClientFactory` of :func:`open_clickhouse` on ``dsn``, outside Dagster."""
    return partial(open_clickhouse, dsn, password, lock_timeout_s=lock_timeout_s)
