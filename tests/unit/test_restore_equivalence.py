"""Restore by replay, without Kafka: a window state rebuilt the way the worker rebuilds it after a
crash (a fresh state fed the partition's records from the first one stamped at or after
``watermark − restore_span_ms`` up to the committed offset, outputs thrown away) goes on to emit
exactly what the state that never crashed emits — the same records, floats bit for bit, and the
same too-late rejects (dead letters)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ys_platform.processing.windows import (
    SlidingWindowState,
    TickBatch,
    WindowAnalytics,
    WindowConfig,
)
from ys_platform.processors.price_aggregation import PriceAggregation

T0 = 1_700_000_000_000  # epoch ms on a 5 s boundary


def stream(n: int, seed: int, *, disorder_ms: int = 8_000, gaps: bool = False) -> TickBatch:
    """Five symbols, four sources, ~20 ticks/s; 30 % of ticks up to ``disorder_ms`` out of order
    (beyond the 5 s grace: some are too late), equal timestamps, missing volumes, outliers,
    invalid prices, and optionally silences of minutes (a watermark jump after each)."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 100, n)
    if gaps:
        steps = np.where(rng.random(n) < 0.001, rng.integers(60_000, 400_000, n), steps)
    arrival = T0 + np.cumsum(steps)
    ts = arrival - rng.integers(0, disorder_ms + 1, n) * (rng.random(n) < 0.3)
    symbols = rng.choice(["BTC", "ETH", "SOL", "ARB", "OP"], n).tolist()
    sources = rng.choice(["binance", "coinbase", "uniswap", "chainlink"], n).tolist()
    px = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    px = np.where(rng.random(n) < 0.02, px * 1.1, px)
    px = np.where(rng.random(n) < 0.005, -1.0, px)
    vol = np.where(rng.random(n) < 0.5, rng.exponential(5.0, n), np.nan)
    return TickBatch.from_columns(symbols, ts, px, vol, sources)


def feed(
    state: SlidingWindowState, ticks: TickBatch, lo: int, hi: int, rng: np.random.Generator
) -> tuple[list[WindowAnalytics], list[int]]:
    """Feed records ``lo..hi-1`` in random batches (as consume() would cut them)."""
    records: list[WindowAnalytics] = []
    too_late: list[int] = []
    cuts = sorted(set(rng.integers(lo, hi, max(0, (hi - lo) // 300)).tolist()) | {lo, hi})
    for a, b in itertools.pairwise(cuts):
        out, result = state.process(ticks.take(np.arange(a, b)))
        records += out
        too_late += (result.too_late + a).tolist()
    return records, too_late


def restored(
    ticks: TickBatch, committed: int, watermark_ms: int | None, span_ms: int, rng
) -> SlidingWindowState:
    """What ``TransactionalWorker._restore`` rebuilds: replay from ``offsets_for_times`` (the
    first record stamped at or after ``watermark − span``) to the committed offset."""
    state = SlidingWindowState(PriceAggregation().config)
    if watermark_ms is None:  # no watermark committed: the worker does not replay
        return state
    later = np.flatnonzero(ticks.ts_ms[:committed] >= watermark_ms - span_ms)
    start = int(later[0]) if later.size else committed
    feed(state, ticks, start, committed, rng)  # outputs discarded, as in the worker
    return state


@pytest.mark.parametrize(
    ("seed", "disorder_ms", "gaps"),
    [(1, 0, False), (2, 8_000, False), (3, 20_000, False), (4, 8_000, True), (5, 3_000, True)],
)
def test_restored_state_continues_like_the_original(
    seed: int, disorder_ms: int, gaps: bool
) -> None:
    n = 30_000
    ticks = stream(n, seed, disorder_ms=disorder_ms, gaps=gaps)
    app = PriceAggregation()
    span = app.restore_span_ms
    rng = np.random.default_rng(seed + 100)
    # Crash points, some early (before the first window completes), most mid-stream.
    crashes = sorted({int(c) for c in rng.integers(1, n, 6)} | {5, 400})

    original = SlidingWindowState(app.config)
    clean_records, clean_late = feed(original, ticks, 0, n, rng)

    # A crash-restart at each point in turn: everything before it was committed, so the output
    # is the concatenation of each run's part.
    records: list[WindowAnalytics] = []
    too_late: list[int] = []
    state = SlidingWindowState(app.config)
    for lo, hi in itertools.pairwise([0, *crashes, n]):
        out, late = feed(state, ticks, lo, hi, rng)
        records += out
        too_late += late
        state = restored(ticks, hi, state.watermark_ms, span, rng)

    assert records == clean_records  # dataclass equality: floats compared exactly
    assert too_late == clean_late
    assert len(records) > 1000


def test_restore_span_covers_window_grace_carry_and_staleness() -> None:
    """The span is what the equivalence rests on: any shorter and a prior tick or a fresh
    source of the next window could be missing from the replay."""
    cfg = WindowConfig()
    app = PriceAggregation(cfg)
    assert app.restore_span_ms >= (
        max(cfg.window_ms, cfg.max_staleness_ms) + cfg.grace_ms + cfg.max_carry_ms
    )
