"""Bounded waiting for an on-disk store that another process holds.

chDB and qdrant-client's local mode both allow one process per data directory and enforce it with
an ``flock`` on a file inside it (chDB: ``<path>/status``; Qdrant: ``<path>/.lock``). A worker, the
CLI and ``dagster dev`` can all want the same directory for a moment, so opening one waits, with
exponential backoff and jitter, up to a deadline, and then fails with `StoreLockedError`: a
sentence naming the directory and what to do.

While waiting we poll the lock file with a non-blocking ``flock`` probe instead of re-opening the
store: a failed chDB start prints a line to stderr each time, and a failed Qdrant open first loads
every collection from SQLite, so repeated attempts would be noisy and slow.

A waiter also says that it waits (`WaitingReaders`): a holder that can let go between two units of
its own work (the ClickHouse sink between flushes) checks for waiters and closes its client, and
waits for them to get in before it opens the store again, so that a reader gets its turn within a
flush instead of waiting out a fixed sharing interval.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

try:  # POSIX only; without it we cannot probe and simply retry the open itself.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoreLockedError(RuntimeError):
    """Another process held a store's directory for longer than we were willing to wait."""

    def __init__(self, message: str, *, path: str, waited_s: float) -> None:
        super().__init__(message)
        self.path = path
        self.waited_s = waited_s


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter.

    The defaults start at 50 ms, so a holder that is just closing costs us almost nothing, and
    cap at 250 ms, so a release is noticed within a quarter of a second: a holder that lets
    waiters in (`WaitingReaders`) does so within a flush, and a reader must answer within 5 s in
    all (README, "Readers beside the sinks"). The probe is a single syscall, so polling that
    often is free. Jitter (each delay scaled by a random factor in
    [1 - jitter, 1]) keeps several waiters from retrying in lock-step.
    """

    initial_s: float = 0.05
    max_s: float = 0.25
    multiplier: float = 2.0
    jitter: float = 0.5

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay * (1.0 - self.jitter * random.random())
            delay = min(delay * self.multiplier, self.max_s)


DEFAULT_BACKOFF = Backoff()


def flock_held(lock_file: Path) -> bool | None:
    """Whether some other open file holds an ``flock`` on ``lock_file``.

    Returns False when the file does not exist (chDB removes ``status`` on a clean close) and None
    when the platform cannot tell. The probe takes a shared lock for an instant and releases it;
    ``flock`` locks belong to the open file, so this never disturbs a lock this process holds.
    """
    return _lock_conflicts(lock_file, exclusive=False)


def _lock_conflicts(lock_file: Path, *, exclusive: bool) -> bool | None:
    """Whether a lock some other open file holds on ``lock_file`` keeps this process from taking
    one, shared or ``exclusive``, at this instant (taken and released at once if free).

    A shared probe conflicts only with an exclusive holder, an exclusive probe with any holder.
    False when the file does not exist, None when the platform cannot tell.
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


READERS_FILE = ".readers-waiting"
"""The file in a store's directory on which waiters hold shared locks (see `WaitingReaders`)."""


class WaitingReaders:
    """The processes waiting for an exclusive store, each holding a shared ``flock`` on
    ``<store>/.readers-waiting`` while it waits.

    A lock, not a marker file: a waiter that dies drops it with its file descriptors, so a crash
    never leaves a holder yielding to nobody. Waiters take it shared, so any number can wait at
    once; `any` probes it exclusive without blocking, which fails exactly while one is held.
    """

    def __init__(self, store_dir: Path) -> None:
        self.file = store_dir / READERS_FILE

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce a waiter for the block's duration (nothing if the store has no directory)."""
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            # No directory (nobody holds the store, then) or none we may write: wait unannounced.
            yield
            return
        try:
            # Blocking is fine: the only exclusive holder is `any`, for one syscall.
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # drops the lock

    def any(self) -> bool:
        """Whether some process waits for the store now (one that cannot tell says no)."""
        return _lock_conflicts(self.file, exclusive=True) is True

    def wait_until_served(self, timeout_s: float, poll_s: float = 0.02) -> float:
        """Wait until nobody waits any more (they got in), at most ``timeout_s``; the seconds
        waited. A waiter stops waiting as soon as it has opened the store."""
        started = time.monotonic()
        while self.any() and time.monotonic() - started < timeout_s:
            time.sleep(poll_s)
        return time.monotonic() - started


def open_when_unlocked(
    open_once: Callable[[], T],
    *,
    is_locked: Callable[[Exception], bool],
    lock_file: Path,
    timeout_s: float,
    locked_error: Callable[[float], StoreLockedError],
    backoff: Backoff = DEFAULT_BACKOFF,
    probe_first: bool = False,
    readers: WaitingReaders | None = None,
) -> T:
    """Call ``open_once`` until it succeeds, waiting while another process holds ``lock_file``.

    ``is_locked`` decides which exceptions mean "held by someone else"; any other exception
    propagates at once. After ``timeout_s`` (0 = try once) ``locked_error(waited_s)`` is raised,
    chained to the store's own error. ``probe_first``: probe the lock before the first attempt
    too, and wait without trying while it is held, so a store that complains on stderr when it
    finds the lock taken (chDB) stays quiet. Only for a caller that knows this process does not
    hold the lock itself: the probe cannot tell this process's own lock from another's.
    ``readers``: announce this process there while it waits, so a holder that yields to waiters
    lets it in.
    """
    started = time.monotonic()
    deadline = started + max(timeout_s, 0.0)
    delays = backoff.delays()
    last_error: Exception | None = None
    held_at_start = probe_first and flock_held(lock_file) is True
    with ExitStack() as announcement:  # held from the first wait until we return or give up
        announced = False
        while True:
            if held_at_start:
                held_at_start = False
            else:
                try:
                    return open_once()
                except Exception as exc:
                    if not is_locked(exc):
                        raise
                    last_error = exc
            if not announced:
                if readers is not None:
                    announcement.enter_context(readers.waiting())
                # One line, not one per retry: the operator needs to know why we are idle.
                logger.info(
                    "%s is held by another process; waiting up to %.1f s",
                    lock_file.parent,
                    timeout_s,
                )
                announced = True
            # Wait quietly until the probe says the lock is gone (or cannot tell), then open.
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise locked_error(time.monotonic() - started) from last_error
                time.sleep(min(next(delays), remaining))
                if flock_held(lock_file) is not True:
                    break
