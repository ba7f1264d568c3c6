"""The anomalies a simulator injects, recorded for tests and demos to check processors against."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

# Bounded so a days-long `make dev` does not grow without limit; tests read a few.
_KEPT = 10_000


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly, for tests and demos to check the processors' reaction against."""

    kind: str  # "dislocation", "stale", "outlier", "gas_spike" or "liquidation"
    start_ms: int
    end_ms: int
    symbol: str | None = None
    source: str | None = None
    chain: str | None = None
    magnitude: float = 0.0
    """Relative price offset (dislocation, outlier), gas multiple, or USD repaid."""


class AnomalyLog:
    """Shared by the parts of one simulator: counts by kind and the latest anomalies."""

    def __init__(self) -> None:
        self.injected: Counter[str] = Counter()
        """How many anomalies were injected, by kind: ``dislocation``, ``dislocated_ticks``
        (ticks a dislocation moved), ``stale`` (windows), ``outlier``, ``gas_spike``,
        ``liquidation``."""
        self.anomalies: deque[Anomaly] = deque(maxlen=_KEPT)

    def record(self, anomaly: Anomaly) -> None:
        self.injected[anomaly.kind] += 1
        self.anomalies.append(anomaly)
