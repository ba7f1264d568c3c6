"""A deterministic, seeded DeFi market simulator: catalog messages in event-time order.

Pure generation (no Kafka, no clock): the same seed and parameters give byte-identical encoded
output (pinned by ``tests/unit/test_simulator_golden.py``); event time starts at ``start_ms``
(default :data:`DEFAULT_START_MS`, a fixed instant) and advances only with the generated stream.
:mod:`ys_platform.sources.publish` produces it to Kafka (and, in dev, the CDC-captured entities
to PostgreSQL).

What it models, one module each:

* :mod:`~.reference` — the fixed reference data: assets, price sources, protocols and chains;
  ``defi.protocols`` / ``defi.tokens`` (:meth:`MarketSimulator.reference_messages`).
* :mod:`~.prices` — ``market.prices``: a hidden mid per symbol on a geometric random walk,
  ticks from CEX, oracle and DEX feeds, and the price anomalies (cross-chain *dislocations*,
  *stale* sources, *outliers*).
* :mod:`~.crosschain` — ``crosschain.events``: gas prices, bridge quotes, *gas spikes*.
* :mod:`~.lending` — ``users.portfolios`` and ``defi.transactions``: lending users, their
  positions, transactions and *liquidations*.
* :mod:`~.encoding` — the fast path: ticks written straight to the codec's JSON bytes.
* :mod:`~.market` — :class:`MarketSimulator`, the facade composing them, and the event stream
  mixed as :data:`DEFAULT_MIX` (85 % prices, 5 % each of the others).

Anomalies are scheduled in event time (so independently of the message rate) by their own
random streams and recorded in :attr:`MarketSimulator.injected` / :attr:`.anomalies`.
Timestamps are whole milliseconds (the wire precision); amounts are token units, values USD.
"""

from ys_platform.sources.simulator.anomalies import Anomaly
from ys_platform.sources.simulator.clock import DEFAULT_START_MS
from ys_platform.sources.simulator.market import DEFAULT_MIX, MarketSimulator
from ys_platform.sources.simulator.reference import CHAINS, OFFCHAIN, SOURCES, SourceSpec

__all__ = [
    "CHAINS",
    "DEFAULT_MIX",
    "DEFAULT_START_MS",
    "OFFCHAIN",
    "SOURCES",
    "Anomaly",
    "MarketSimulator",
    "SourceSpec",
]
