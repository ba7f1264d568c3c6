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
  it emits an output (:class:`WindowedOutputs`): a window ending at ``E`` (a multiple of the emit
  interval) is emitted once its partition's watermark reaches ``E + grace``, i.e. by the first
  tick at or past ``E + grace``. The other processors emit on the triggering record itself (0).
  An output that carries an *upstream* window's end as its event time — a risk assessment
  triggered by a price move is stamped with the moving window's end — was caused by that
  window's closing tick too: an output of a processor reading a windowed output, whose event
  time is a multiple of that window's interval and at least its delay before the output was
  seen, counts from ``E + grace`` (:class:`Attribution`); the chain's two hops are both in it.

The load generator (:mod:`ys_platform.operations.load`) stamps every record with the wall time it
is due and produces it then, so ``event time + emit delay`` is the wall time the output's
triggering input was (due to be) produced: the sum spans produce, the broker, the processor's
consume, logic and transaction, and the read_committed fetch. Measuring from the *due* time, not
from when the generator got round to it, keeps a generator falling behind from hiding latency
(coordinated omission): its delay counts. Nothing per input record is logged: the output alone
says when its cause was produced.

One known bias, small: a window still waits for its partition's next tick after ``E + grace``
(a few ms at a few thousand msg/s: ~140 ticks/s per partition at 2,000 msg/s over 12
partitions). A downstream output whose own trigger falls on a multiple of the interval (a
transaction at a whole 5 s, 1 in 5,000) and that took longer than the grace period would be
counted from 5 s later: too rare to move a percentile.

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
    "Attribution",
    "Cadence",
    "LatencyStats",
    "OutputSeen",
    "WindowedOutputs",
    "attributions",
    "latency_by_topic",
    "percentile",
]


@runtime_checkable
class WindowedOutputs(Protocol):
    """A processor whose outputs' event times are multiples of ``emit_interval_ms``, each emitted
    once its input's event time is ``emit_delay_ms`` past it (a window waiting out its grace)."""

    emit_interval_ms: int
    emit_delay_ms: int


@dataclass(frozen=True, slots=True)
class Cadence:
    """A windowed processor's :class:`WindowedOutputs` figures."""

    interval_ms: int
    delay_ms: int


@dataclass(frozen=True)
class Attribution:
    """How the records of one output topic name the time their cause was produced."""

    own: Cadence | None = None
    """The producing processor's cadence, if it windows (every output waits its delay)."""
    upstream: tuple[Cadence, ...] = ()
    """Cadences of the windowed processors whose outputs the producing processor reads."""

    def cause_ms(self, timestamp_ms: int, visible_ms: float) -> int:
        """The event time (= due wall time) of the input that caused an output stamped
        ``timestamp_ms`` and seen at ``visible_ms``: see the module docstring."""
        if self.own is not None:
            return timestamp_ms + self.own.delay_ms
        for cadence in self.upstream:
            closed_ms = timestamp_ms + cadence.delay_ms
            # A window's end, seen after the window could close: the window caused it.
            if timestamp_ms % cadence.interval_ms == 0 and closed_ms <= visible_ms:
                return closed_ms
        return timestamp_ms


def attributions(
    inputs: Mapping[str, Sequence[str]],
    outputs: Mapping[str, Sequence[str]],
    cadences: Mapping[str, Cadence],
) -> dict[str, Attribution]:
    """Each output topic's :class:`Attribution`, from every processor's ``inputs`` and
    ``outputs`` (catalog names, by group id) and the ``cadences`` of the windowed ones."""
    producer_of = {topic: group for group, topics in outputs.items() for topic in topics}
    found: dict[str, Attribution] = {}
    for group, topics in outputs.items():
        upstream = tuple(
            cadences[producer_of[name]]
            for name in inputs.get(group, ())
            if name in producer_of and producer_of[name] in cadences
        )
        for topic in topics:
            found[topic] = Attribution(cadences.get(group), upstream)
    return found


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
    attribution: Mapping[str, Attribution],
    first_input_ms: int,
    last_input_ms: int,
) -> dict[str, list[float]]:
    """Each output topic's latency samples (ms), by the module's definition.

    Only outputs whose cause falls within the load — between ``first_input_ms`` and
    ``last_input_ms``, the first and last input's event times — are samples: others were caused
    by traffic before or beside it. A topic missing from ``attribution`` counts from the
    output's event time.
    """
    plain = Attribution()
    samples: dict[str, list[float]] = {}
    for output in seen:
        cause_ms = attribution.get(output.topic, plain).cause_ms(
            output.timestamp_ms, output.visible_ms
        )
        if first_input_ms <= cause_ms <= last_input_ms:
            samples.setdefault(output.topic, []).append(output.visible_ms - cause_ms)
    return samples
