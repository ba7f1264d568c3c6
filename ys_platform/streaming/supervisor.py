"""Restart a standalone worker that stopped on an error, as the keep-alive sensor does a run.

A worker stops (``WorkerStopped``) when it cannot go on by itself: a broker fault outlasting
``through_faults``' deadline, a fatal producer error, dead letters that could not be delivered.
Under Dagster the keep-alive sensor relaunches the run; a worker started with ``processor run``
or ``sink run`` is relaunched here, in its own process, with the same backoff, so a fault never
needs a person. Every restart builds new clients (a fatal producer error is only cured so).

Not restarted: a worker stopped on request (``stop``), which ends normally, and a bug (any
other exception). A *fenced* worker is restarted too: under broker faults a worker fences
itself (its static member id rejoining after a session timeout, its transaction aborted by a
coordinator that moved), and only a new client mends that. If another instance really holds its
id, the two fence each other at the backoff's pace, and each restart's line says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaException

from ys_platform.streaming.member import FENCED_CODES, WorkerStopped

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE_S = 15.0
"""The first restart's delay: a broker that is restarting is back within it (10-20 s measured,
``clients/kafka_faults.py``), without a restart loop hammering a cluster that is not."""
BACKOFF_MAX_S = 600.0
"""A worker failing for a structural reason (topic deleted, authorization) retries every 10
minutes at most; the operator sees the failures meanwhile."""
HEALTHY_AFTER_S = 600.0
"""A run that lasted this long before it stopped starts the backoff from the beginning again."""


def backoff_s(failures: int) -> float:
    """The delay before the restart after ``failures`` consecutive failures (0: none)."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)


def restartable(exc: BaseException) -> bool:
    """Whether a worker that raised ``exc`` may be started again: it stopped on a fault (a
    client error that escaped the worker's handling included), not on a bug."""
    return isinstance(exc, WorkerStopped | KafkaException)


def _fenced(exc: BaseException) -> bool:
    if isinstance(exc, WorkerStopped):
        return exc.fenced
    return isinstance(exc, KafkaException) and exc.args[0].code() in FENCED_CODES


def supervise(
    run_once: Callable[[], T],
    name: str,
    stop: threading.Event,
    *,
    restart: bool = True,
    backoff: Callable[[int], float] = backoff_s,
) -> T:
    """``run_once()`` until it returns; after an error it may recover from (:func:`restartable`),
    wait out the backoff and run it again, saying so in one line. ``stop`` set during the wait
    ends it: the error that stopped the worker is raised then, as it is with ``restart=False``.
    """
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return run_once()
        except (WorkerStopped, KafkaException) as exc:
            if not restart or not restartable(exc) or stop.is_set():
                raise
            reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            if _fenced(exc):
                reason += (
                    "; fenced: another instance with its id runs, or the cluster aborted its "
                    "transaction or membership during a fault"
                )
            failures = 1 if time.monotonic() - started >= HEALTHY_AFTER_S else failures + 1
            delay = backoff(failures)
            log.error(
                "%s stopped (%s); restarting it in %.0f s (failure %d in a row)",
                name,
                reason,
                delay,
                failures,
            )
            if stop.wait(delay):
                raise
            log.info("%s: restarting", name)
