"""Sources of data for the platform: the deterministic market simulator and its publisher.

``simulator`` is pure generation (no I/O); ``publish`` produces to Kafka and, in dev, hands the
CDC-captured entities to ``record``, which writes them into their PostgreSQL tables.
"""

from ys_platform.sources.simulator import DEFAULT_MIX, Anomaly, MarketSimulator

__all__ = ["DEFAULT_MIX", "Anomaly", "MarketSimulator"]
