"""Throughput of the sliding-window state: ingest + emit, one core, synthetic seeded stream.

    python -m ys_platform.processing.bench_windows [--ticks N] [--symbols S] [--rate R]

Prints one line per configuration: ticks/s through ``SlidingWindowState.process`` (ingest and
emit of every completed window), records emitted, ticks held at the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ys_platform.processing.windows import SlidingWindowState, TickBatch, WindowConfig


def synthetic_stream(
    n_ticks: int,
    n_symbols: int,
    n_sources: int,
    ticks_per_second_per_feed: float,
    max_disorder_ms: int,
    seed: int = 7,
) -> TickBatch:
    """Random-walk prices, Poisson arrivals per (symbol, source), event times jittered by up to
    ``max_disorder_ms`` against arrival order (so some ticks come late)."""
    rng = np.random.default_rng(seed)
    feeds = n_symbols * n_sources
    rate_per_ms = feeds * ticks_per_second_per_feed / 1000.0
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_ms, n_ticks))
    ts = (1_700_000_000_000 + arrival).astype(np.int64)
    ts -= rng.integers(0, max_disorder_ms + 1, n_ticks)
    feed = rng.integers(0, feeds, n_ticks)
    symbol_idx, source_idx = feed // n_sources, feed % n_sources
    # A random walk of 1 bp per tick through each symbol's ticks (symbols run one after another
    # through one cumulative sum, so each starts where the previous ended: levels differ, which
    # is all a benchmark needs), plus a 1 bp basis per source.
    order = np.argsort(symbol_idx, kind="stable")
    walk = np.empty(n_ticks)
    walk[order] = np.cumsum(rng.normal(0.0, 1e-4, n_ticks))
    prices = 100.0 * np.exp(walk + 1e-4 * source_idx)
    volumes = np.where(rng.random(n_ticks) < 0.5, rng.exponential(10.0, n_ticks), np.nan)
    symbol_names = [f"SYM{i:04d}" for i in range(n_symbols)]
    source_names = [f"src{i}" for i in range(n_sources)]
    return TickBatch.from_columns(
        [symbol_names[i] for i in symbol_idx.tolist()],
        ts,
        prices,
        volumes,
        [source_names[i] for i in source_idx.tolist()],
    )


def run(stream: TickBatch, batch_size: int, config: WindowConfig) -> tuple[float, int, int, int]:
    """Feed the stream in batches; returns (seconds, records, too late, ticks held)."""
    batches = [
        stream.take(np.arange(i, min(i + batch_size, len(stream))))
        for i in range(0, len(stream), batch_size)
    ]
    state = SlidingWindowState(config)
    records = too_late = 0
    start = time.perf_counter()
    for batch in batches:
        emitted, result = state.process(batch)
        records += len(emitted)
        too_late += result.too_late.size
    elapsed = time.perf_counter() - start
    return elapsed, records, too_late, state.buffered_ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[0.5, 2.0, 10.0],
        help="ticks per second per (symbol, source), event time",
    )
    parser.add_argument("--batch", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args()
    config = WindowConfig()
    for rate in args.rate:
        stream = synthetic_stream(args.ticks, args.symbols, args.sources, rate, 2_000)
        span_s = (int(stream.ts_ms.max()) - int(stream.ts_ms.min())) / 1000
        for batch_size in args.batch:
            elapsed, records, late, held = run(stream, batch_size, config)
            print(
                f"symbols={args.symbols} sources={args.sources} rate={rate}/s/feed "
                f"event_span={span_s:,.0f}s batch={batch_size}: "
                f"{len(stream) / elapsed:,.0f} ticks/s, {records / elapsed:,.0f} records/s "
                f"({records:,} records, {late} too late, {held:,} ticks held)"
            )


if __name__ == "__main__":
    main()
