"""Free loopback ports for the servers tests start (below 32768, the workplace's rule)."""

from __future__ import annotations

import socket
from collections.abc import Container


def free_port(first: int, count: int = 100, *, besides: Container[int] = ()) -> int:
    """The first port in ``first .. first + count - 1`` that nothing listens on now and that is
    not in ``besides`` (ports already handed out to a server that has not bound them yet)."""
    for port in range(first, first + count):
        if port in besides:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {first}-{first + count - 1}")
