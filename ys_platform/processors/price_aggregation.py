"""Price aggregation: per symbol, one-minute sliding windows of ``market.prices`` emitted every
few seconds of event time as ``market.analytics`` (TWAP, VWAP, volatility, consolidated price)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from ys_platform.catalog.models import MarketAnalytics, MarketPrice, Message
from ys_platform.catalog.topics import consumer_group
from ys_platform.processing.windows import (
    DictionaryStrings,
    SlidingWindowState,
    TickBatch,
    WindowAnalytics,
    WindowConfig,
)
from ys_platform.streaming.app import ProcessResult, Rejected, TopicPartitionId
from ys_platform.streaming.keyed import PartitionKeyedApp

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


def ticks_of_columns(columns: pa.Table) -> TickBatch:
    """The window kernel's columns from a decoded ``market.prices`` table, without a Python
    object per row: numbers as numpy views, symbols and sources dictionary-encoded."""
    symbols = columns.column("symbol").combine_chunks().dictionary_encode()
    sources = columns.column("source").combine_chunks().dictionary_encode()
    ts = columns.column("ts").combine_chunks().cast(pa.int64())
    volume = columns.column("volume").combine_chunks().fill_null(np.nan)
    return TickBatch.from_columns(
        DictionaryStrings(symbols.indices.to_numpy(), symbols.dictionary.to_pylist()),
        ts.to_numpy(),
        columns.column("price").combine_chunks().to_numpy(),
        volume.to_numpy(),
        DictionaryStrings(sources.indices.to_numpy(), sources.dictionary.to_pylist()),
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


class PriceAggregation(PartitionKeyedApp[SlidingWindowState]):
    """The ``price-aggregation-processor`` logic, one window state per input partition."""

    group = GROUP

    def __init__(self, config: WindowConfig | None = None) -> None:
        super().__init__()
        self.config = config or WindowConfig()
        # Replaying this much event time before the watermark rebuilds every tick a future
        # window can use: the window (or staleness bound), the grace period, the oldest prior
        # tick a window may carry, and one emit interval of slack.
        cfg = self.config
        self.restore_span_ms = (
            cfg.retention_ms + cfg.grace_ms + cfg.max_carry_ms + cfg.emit_interval_ms
        )

    # Its cadence (:class:`~ys_platform.operations.latency.WindowedOutputs`): window ends are
    # multiples of the emit interval, and the window ending at E is emitted once the partition's
    # watermark reaches E + grace.
    @property
    def emit_interval_ms(self) -> int:
        return self.config.emit_interval_ms

    @property
    def emit_delay_ms(self) -> int:
        return self.config.grace_ms

    def new_state(self) -> SlidingWindowState:
        return SlidingWindowState(self.config)

    def process(
        self,
        partition: TopicPartitionId,
        messages: Sequence[Message],
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        if not messages:
            return ProcessResult([], [])
        return self._windows(partition, ticks_of(messages))  # type: ignore[arg-type]

    def process_columns(
        self, partition: TopicPartitionId, columns: pa.Table, timestamps_ms: Sequence[int]
    ) -> ProcessResult:
        """:meth:`process` on a decoded table: the hot path (no model per tick)."""
        if not columns.num_rows:
            return ProcessResult([], [])
        return self._windows(partition, ticks_of_columns(columns))

    def _windows(self, partition: TopicPartitionId, ticks: TickBatch) -> ProcessResult:
        windows, ingest = self.state(partition).process(ticks)
        rejected = [
            Rejected(
                int(i),
                f"late tick: event time more than {self.config.grace_ms} ms behind the "
                f"watermark, its windows were already emitted",
            )
            for i in ingest.too_late
        ]
        return ProcessResult([to_message(w) for w in windows], rejected)
