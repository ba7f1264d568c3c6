"""Run one processor in this process until stopped: the standalone service and the Dagster run
share this function."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.processors.registry import build_processor
from ys_platform.settings import Settings
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.worker import ProgressCallback, TransactionalWorker, WorkerConfig

log = logging.getLogger(__name__)


def run_processor(
    settings: Settings,
    name: str,
    *,
    config: WorkerConfig | None = None,
    stop: threading.Event | None = None,
    max_idle_s: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> WorkerMetrics:
    """Process until ``stop`` is set, SIGTERM/SIGINT arrives (main thread only) or the input
    stays idle for ``max_idle_s``; the batch in hand is committed before returning."""
    stop = stop or threading.Event()
    worker = TransactionalWorker(
        KafkaConnection.from_settings(settings), build_processor(name), config, on_progress
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: signal %d, finishing the batch in hand", worker.group_id, signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        return worker.run(stop, max_idle_s=max_idle_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
