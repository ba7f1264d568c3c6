"""End-to-end latency of the processors' outputs under a load whose event time is wall time.

The definition (one for every processor): the latency of an output record is

    visible − (event time + emit delay)

* **visible**: the wall time a ``read_committed`` consumer of the output topic receives it, i.e.
  once the processor's transaction committed (the reader fetches with ``fetch.min.bytes=1``, so
  a fetch returns as soon as a commit makes records readable);
* **event time**: the output's record timestamp. Every processor stamps an output with the event
  time of the input that triggered it: ``crosschain.arbitrage``'s ``detected_at`` is the
  triggering tick's, ``risk.assessments``' ``assessed_at`` the triggering transaction's or
  snapshot's (:mod:`ys_platform.processors`); a price-aggregation window carries its end ``E``;
* **emit delay**: how much input event time past its own event time a processor waits for before
  it emits an output (:class:`DelayedOutputs`): a window ending at ``E`` is emitted once its
  partition's watermark reaches ``E + grace``, i.e. by the first tick at or past ``E + grace``.
  The other processors emit on the triggering record itself (0).

The load generator (:mod:`ys_platform.operations.load`) stamps every record with the wall time it
is due and produces it then, so ``event time + emit delay`` is the wall time the output's
triggering input was (due to be) produced: the sum spans produce, the broker, the processor's
consume, logic and transaction, and the read_committed fetch. Measuring from the *due* time, not
from when the generator got round to it, keeps a generator falling behind from hiding latency
(coordinated omission): its delay counts. Nothing per input record is logged: the output alone
says when its cause was produced.

Two known biases, both small or visible: a window still waits for its partition's next tick after
``E + grace`` (a few ms at a few thousand msg/s: ~140 ticks/s per partition at 2,000 msg/s over
12 partitions); a risk assessment triggered by a price *move* carries the moving window's end, so
it also counts that window's grace and the aggregation's latency — hence percentiles per output
topic beside the overall ones.

``bench/latency.py`` measures price aggregation alone, down to its stages, from each window's
exact closing tick (it logs the crossing ticks' produce and acknowledgement times); it takes its
percentiles from :func:`percentile` here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "DelayedOutputs",
    "LatencyStats",
    "OutputSeen",
    "latency_by_topic",
    "percentile",
]


@runtime_checkable
class DelayedOutputs(Protocol):
    """A processor that emits an output only once its input's event time is ``emit_delay_ms``
    past the output's own event time (a window waiting out its grace period)."""

    emit_delay_ms: int


@dataclass(frozen=True, slots=True)
class OutputSeen:
    """One output record as the reader received it."""

    topic: str
    """Catalog name of the output topic (no namespace)."""
    timestamp_ms: int
    """The record timestamp: the output's event time."""
    visible_ms: float
    """Wall time (epoch ms) the read_committed reader received it."""


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``: the smallest value
    with at least ``q`` of them at or below it."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    ordered = sorted(values)
    # The rank is rounded to 9 digits first: 0.95 * 100 is 95.00000000000001 in floating point.
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles (ms) of a set of latency samples."""

    samples: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencyStats | None:
        """The stats of ``latencies_ms``; None for no samples (nothing to say)."""
        if not latencies_ms:
            return None
        ordered = sorted(latencies_ms)
        return cls(
            samples=len(ordered),
            p50_ms=percentile(ordered, 0.50),
            p95_ms=percentile(ordered, 0.95),
            p99_ms=percentile(ordered, 0.99),
            max_ms=ordered[-1],
        )


def latency_by_topic(
    seen: Iterable[OutputSeen],
    emit_delay_ms: Mapping[str, int],
    first_input_ms: int,
    last_input_ms: int,
) -> dict[str, list[float]]:
    """Each output topic's latency samples (ms), by the module's definition.

    Only outputs whose cause falls within the load — ``event time + emit delay`` between
    ``first_input_ms`` and ``last_input_ms`` (the first and last input's event times) — are
    samples: others were caused by traffic before or beside it. ``emit_delay_ms`` holds each
    output topic's delay (a topic missing from it has none).
    """
    samples: dict[str, list[float]] = {}
    for output in seen:
        cause_ms = output.timestamp_ms + emit_delay_ms.get(output.topic, 0)
        if first_input_ms <= cause_ms <= last_input_ms:
            samples.setdefault(output.topic, []).append(output.visible_ms - cause_ms)
    return samples
