"""Run one processor in this process until stopped: ``ys-platform processor run NAME``.

The Dagster run drives the same ``TransactionalWorker`` (see ``assets/workers.py``)."""

from __future__ import annotations

import threading

from ys_platform.processors.registry import build_processor
from ys_platform.settings import Settings
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.signals import stop_on_signals
from ys_platform.streaming.supervisor import supervise
from ys_platform.streaming.worker import ProgressCallback, TransactionalWorker, WorkerConfig


def run_processor(
    settings: Settings,
    name: str,
    *,
    config: WorkerConfig | None = None,
    stop: threading.Event | None = None,
    max_idle_s: float | None = None,
    on_progress: ProgressCallback | None = None,
    restart: bool = False,
) -> WorkerMetrics:
    """Process until ``stop`` is set, SIGTERM/SIGINT arrives (main thread only) or the input
    stays idle for ``max_idle_s``; the batch in hand is committed before returning. ``restart``:
    a worker stopped by an error is started again after a backoff (``streaming/supervisor.py``),
    each time with new clients."""
    stop = stop or threading.Event()

    def run_once() -> WorkerMetrics:
        worker = TransactionalWorker(settings.kafka, build_processor(name), config, on_progress)
        return worker.run(stop, max_idle_s=max_idle_s)

    with stop_on_signals(stop, name):
        return supervise(run_once, name, stop, restart=restart)
