"""Counters a worker keeps: what it consumed, produced and dead-lettered, how long batches took."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

# Batch latencies kept for the percentiles: at one batch every ~50 ms this is the last minute or so.
LATENCY_SAMPLES = 1024


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
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def record_batch(self, seconds: float) -> None:
        self.batches += 1
        self._latencies.append(seconds)

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
