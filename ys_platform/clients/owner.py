"""Reads through the process that owns an exclusive store: a Unix socket beside the store.

qdrant-client's local mode lets one client at a time hold a directory and loads every point into
memory when it opens: measured here (2 busy cores), 1.1 s at 2,000 points of 384-d and 8.5 s at
20,000. So a reader that waits for the vector sink to let go and then opens the store itself
would pay seconds for the open alone, and so would the sink to take it back. The sink has the
points in memory already: it answers other processes' requests instead, on its own thread
between two writes (local mode's SQLite connections belong to that thread), where a query takes
15-30 ms at 20k points (REFERENCES.md).

The door is a Unix stream socket inside the store's directory (``<store>/.owner.sock``): only
processes that may read the store's files can reach it, no port is taken, and it exists only
while an owner serves. One request per connection, one JSON line each way. A socket file left by
an owner that died refuses connections; a reader then falls back to opening the store itself.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OWNER_SOCKET", "OwnerDoor", "OwnerNotAnsweringError", "ask_owner", "owner_socket"]

log = logging.getLogger(__name__)

OWNER_SOCKET = ".owner.sock"
# A request carries a 384-d vector as JSON (~8 KiB); anything much larger is not ours.
_MAX_LINE = 1 << 20
# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class OwnerNotAnsweringError(TimeoutError):
    """An owner serves the store but did not answer in time; the message says which store."""


def owner_socket(store_dir: str | Path) -> Path:
    """Where the owner of the store at ``store_dir`` answers."""
    return Path(os.path.realpath(store_dir)) / OWNER_SOCKET


@dataclass
class _Pending:
    request: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class OwnerDoor:
    """The owner's side: accepts requests on a helper thread and queues them; the owner answers
    them on its own thread with :meth:`serve_pending` (the only place the store is touched).

    ``answer_timeout_s`` bounds how long a connection waits for the owner to come round.
    """

    def __init__(self, path: Path, *, answer_timeout_s: float = 30.0) -> None:
        self.path = path
        self.answer_timeout_s = answer_timeout_s
        self._pending: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self.served = 0

    def open(self) -> bool:
        """Start serving; False (with a warning) if the socket cannot be made here."""
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            log.warning(
                "%s: the path is too long for a Unix socket; other processes will wait for the "
                "store instead of asking this one",
                self.path,
            )
            return False
        # We own the store (we hold its lock), so a socket file here was left by a dead owner.
        self.path.unlink(missing_ok=True)
        door = self

        class _Connection(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                door._handle(self.rfile, self.wfile)

        server = socketserver.ThreadingUnixStreamServer(str(self.path), _Connection)
        server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.name = "store-owner-door"
        self._thread.start()
        return True

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self.path.unlink(missing_ok=True)
        # Whoever still waits gets an answer rather than a timeout.
        self.serve_pending(lambda _: {"error": "the store's owner is stopping; ask again"})

    def serve_pending(self, answer: Handler) -> int:
        """Answer every queued request with ``answer`` (on the caller's thread); how many."""
        served = 0
        while True:
            try:
                pending = self._pending.get_nowait()
            except queue.Empty:
                self.served += served
                return served
            try:
                pending.reply = answer(pending.request)
            except Exception as exc:  # the reader gets the sentence; the owner goes on
                pending.reply = {"error": f"{type(exc).__name__}: {exc}"}
            pending.done.set()
            served += 1

    def _handle(self, rfile: Any, wfile: Any) -> None:
        line = rfile.readline(_MAX_LINE)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            reply: dict[str, Any] = {"error": f"bad request: {exc}"}
        else:
            pending = _Pending(request)
            self._pending.put(pending)
            if pending.done.wait(self.answer_timeout_s) and pending.reply is not None:
                reply = pending.reply
            else:
                reply = {"error": "the store's owner did not come round in time"}
        try:
            wfile.write(json.dumps(reply).encode() + b"\n")
        except OSError:  # the reader gave up waiting and hung up: nobody to tell
            log.debug("%s: a reader left before its answer", self.path)


def ask_owner(path: Path, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any] | None:
    """Send ``request`` to the owner serving at ``path`` and return its reply; None when no
    owner serves there (no socket, or one left by an owner that died).

    Raises :class:`OwnerNotAnsweringError` when an owner took the request but did not answer
    within ``timeout_s``, and RuntimeError with the owner's sentence when it answered an error.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except OSError as exc:  # a path too long for a socket: no owner can serve there either
            log.debug("no owner at %s: %s", path, exc)
            return None
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as replies:
                line = replies.readline(_MAX_LINE)
        except TimeoutError:
            raise OwnerNotAnsweringError(
                f"The process that holds the store at '{path.parent}' took the request but did "
                f"not answer within {timeout_s:.1f} s."
            ) from None
    finally:
        sock.close()
    if not line:
        return None  # the owner went away mid-request: as if there were none
    reply = json.loads(line)
    if "error" in reply:
        raise RuntimeError(f"The store at '{path.parent}' answered: {reply['error']}")
    return reply
