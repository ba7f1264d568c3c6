"""Graceful stop of a standalone worker: SIGTERM or SIGINT sets its stop event."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(stop: threading.Event, name: str) -> Iterator[threading.Event]:
    """While the block runs, SIGTERM/SIGINT ask ``stop`` to be set (the worker then finishes and
    commits what it holds). Only the main thread can take signals; elsewhere this does nothing."""
    previous = {}
    if threading.current_thread() is threading.main_thread():

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: signal %d, finishing what is in hand", name, signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
