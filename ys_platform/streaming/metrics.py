"""Counters a worker keeps: what it consumed, produced and dead-lettered, how long batches took.

The worker updates them once per batch (never per record); the Prometheus exporter
(:mod:`ys_platform.streaming.exporter`) and the Dagster metadata both read them, so each figure
exists once.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Batch latencies kept for the percentiles: at one batch every ~50 ms this is the last minute or so.
LATENCY_SAMPLES = 1024

# Bucket bounds (seconds, Prometheus' `le`). A processor's 20,000-record batch takes ~0.1-0.2 s
# at the measured 100-160k msg/s and a sink's flush up to its 5 s interval's worth of records;
# a transaction commit is ~9 ms of broker round trips (WorkerConfig.batch_size); a restore
# replays up to a window's span (a minute of input) per assignment.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    """Observations in fixed buckets, as Prometheus reads them; written by the worker's thread,
    read by the metrics server's (a lock keeps a bucket's count and the sum consistent)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = bisect_left(self.bounds, seconds)  # first bound >= seconds: `le` is inclusive
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bound (the last is +Inf, the number of observations) and the
        sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for count in counts:
            running += count
            cumulative.append(running)
        return cumulative, total

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)


@dataclass
class WorkerMetrics:
    group_id: str
    started_at: float = field(default_factory=time.time)
    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    batches: int = 0
    aborted_transactions: int = 0
    restored_records: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    """Offset lag per ``topic[partition]`` at the last batch (high watermark − position)."""
    committed: dict[str, int] = field(default_factory=dict)
    """Next offset to read per ``topic[partition]``, as committed in the last transaction."""
    batch_seconds: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    """One observation per committed batch (processor) or flush (sink), consume excluded."""
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))
    """The commit of a batch: the transaction's offsets and commit (processor), the write to
    the store that owns the offsets (sink)."""
    restore_seconds: Histogram = field(default_factory=lambda: Histogram(RESTORE_BUCKETS))
    """One observation per assignment: rebuilding the state (processor), asking the store where
    each partition resumes (sink)."""
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def record_batch(self, seconds: float) -> None:
        self.batches += 1
        self._latencies.append(seconds)
        self.batch_seconds.observe(seconds)

    def latency_percentile(self, q: float) -> float | None:
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())

    def summary(self) -> dict[str, float | int | None]:
        elapsed = max(time.time() - self.started_at, 1e-9)
        return {
            "consumed": self.consumed,
            "produced": self.produced,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "aborted_transactions": self.aborted_transactions,
            "restored_records": self.restored_records,
            "messages_per_s": round(self.consumed / elapsed, 1),
            "batch_latency_p50_s": self.latency_percentile(0.5),
            "batch_latency_p99_s": self.latency_percentile(0.99),
            "lag": self.total_lag,
        }
