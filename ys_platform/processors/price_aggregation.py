"""Price aggregation: per symbol, one-minute sliding windows of ``market.prices`` emitted every
few seconds of event time as ``market.analytics`` (TWAP, VWAP, volatility, consolidated price)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from ys_platform.catalog.models import MarketAnalytics, MarketPrice, Message
from ys_platform.catalog.topics import consumer_group
from ys_platform.processing.windows import (
    SlidingWindowState,
    TickBatch,
    WindowAnalytics,
    WindowConfig,
)
from ys_platform.streaming.app import ProcessResult, Rejected, TopicPartitionId

GROUP = consumer_group("price-aggregation-processor")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def ticks_of(messages: Sequence[MarketPrice]) -> TickBatch:
    """The columns the window kernel works on, from decoded price messages."""
    return TickBatch.from_columns(
        [m.symbol for m in messages],
        np.fromiter((epoch_ms(m.ts) for m in messages), dtype=np.int64, count=len(messages)),
        np.fromiter((m.price for m in messages), dtype=np.float64, count=len(messages)),
        np.fromiter(
            (np.nan if m.volume is None else m.volume for m in messages),
            dtype=np.float64,
            count=len(messages),
        ),
        [m.source for m in messages],
    )


def to_message(window: WindowAnalytics) -> MarketAnalytics:
    return MarketAnalytics(
        symbol=window.symbol,
        window_start=datetime.fromtimestamp(window.window_start_ms / 1000, UTC),
        window_end=datetime.fromtimestamp(window.window_end_ms / 1000, UTC),
        twap=window.twap,
        vwap=window.vwap,
        volatility=window.volatility,
        consolidated_price=window.consolidated_price,
        sources=window.sources,
        ticks=window.ticks,
    )


class PriceAggregation:
    """The ``price-aggregation-processor`` logic, one window state per input partition."""

    group = GROUP
    broadcast_inputs: tuple[str, ...] = ()
    broadcast_lookback_ms = 0

    def __init__(self, config: WindowConfig | None = None) -> None:
        self.config = config or WindowConfig()
        # Replaying this much event time before the watermark rebuilds every tick a future
        # window can use: the window (or staleness bound), the grace period, the oldest prior
        # tick a window may carry, and one emit interval of slack.
        cfg = self.config
        self.restore_span_ms = (
            cfg.retention_ms + cfg.grace_ms + cfg.max_carry_ms + cfg.emit_interval_ms
        )
        self._states: dict[TopicPartitionId, SlidingWindowState] = {}

    def on_broadcast(self, messages: Sequence[Message]) -> None:
        """No reference data: prices are the only input."""

    def assign(self, partition: TopicPartitionId) -> None:
        self._states[partition] = SlidingWindowState(self.config)

    def revoke(self, partition: TopicPartitionId) -> None:
        self._states.pop(partition, None)

    def watermark_ms(self, partition: TopicPartitionId) -> int | None:
        state = self._states.get(partition)
        return None if state is None else state.watermark_ms

    def process(
        self,
        partition: TopicPartitionId,
        messages: Sequence[Message],
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = SlidingWindowState(self.config)
        if not messages:
            return ProcessResult([], [])
        windows, ingest = state.process(ticks_of(messages))  # type: ignore[arg-type]
        rejected = [
            Rejected(
                int(i),
                f"late tick: event time more than {self.config.grace_ms} ms behind the "
                f"watermark, its windows were already emitted",
            )
            for i in ingest.too_late
        ]
        return ProcessResult([to_message(w) for w in windows], rejected)
