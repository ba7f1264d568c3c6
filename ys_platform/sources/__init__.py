"""Sources of data for the platform: the deterministic market simulator and its publisher.

``simulator`` is pure generation (no I/O); ``publish`` produces to Kafka.
"""

from ys_platform.sources.simulator import DEFAULT_MIX, Anomaly, MarketSimulator

__all__ = ["DEFAULT_MIX", "Anomaly", "MarketSimulator"]
