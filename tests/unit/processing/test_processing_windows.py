"""Sliding windows: the vectorised kernel against the reference, lateness, batching invariance,
backfill equals streaming, snapshot/restore."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from ys_platform.processing import prices, windows
from ys_platform.processing.windows import (
    DictionaryStrings,
    SlidingWindowState,
    TickBatch,
    WindowAnalytics,
    WindowConfig,
    compute_windows,
)

T0 = 1_700_000_000_000  # an epoch-ms origin on a 5 s boundary (1.7e12 / 5000 is whole)


def random_stream(n: int, seed: int, disorder_ms: int = 8_000) -> TickBatch:
    """Three symbols, four sources, ~20 ticks/s, event times up to ``disorder_ms`` out of order
    (more than the 5 s grace, so some ticks are too late), some equal timestamps, half the ticks
    without volume, occasional outliers and invalid prices."""
    rng = np.random.default_rng(seed)
    arrival = T0 + np.cumsum(rng.integers(0, 100, n))  # steps of 0..99 ms: some equal times
    ts = arrival - rng.integers(0, disorder_ms + 1, n) * (rng.random(n) < 0.3)
    symbols = rng.choice(["BTC", "ETH", "SOL"], n).tolist()
    sources = rng.choice(["binance", "coinbase", "uniswap", "chainlink"], n).tolist()
    px = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    px = np.where(rng.random(n) < 0.02, px * 1.1, px)  # 2 % of ticks 10 % off: outliers
    px = np.where(rng.random(n) < 0.005, -1.0, px)  # invalid
    vol = np.where(rng.random(n) < 0.5, rng.exponential(5.0, n), np.nan)
    return TickBatch.from_columns(symbols, ts, px, vol, sources)


def stream_in_batches(
    stream: TickBatch,
    cuts: list[int],
    state: SlidingWindowState | None = None,
    config: WindowConfig | None = None,
) -> tuple[list[WindowAnalytics], list[int], SlidingWindowState]:
    """Feed ``stream`` cut at ``cuts``; returns records, too-late positions in the stream, state."""
    state = state or SlidingWindowState(config)
    records: list[WindowAnalytics] = []
    too_late: list[int] = []
    bounds = [0, *cuts, len(stream)]
    for a, b in itertools.pairwise(bounds):
        out, result = state.process(stream.take(np.arange(a, b)))
        records += out
        too_late += (result.too_late + a).tolist()
    return records, too_late, state


def random_cuts(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(set(rng.integers(1, n, rng.integers(1, n // 10)).tolist()))


def reference_record(
    stream: TickBatch, symbol: str, end: int, cfg: WindowConfig
) -> WindowAnalytics | None:
    """The same record from the one-symbol reference functions of ``prices``."""
    mine = np.array([s == symbol for s in stream.symbols]) & (stream.prices > 0)
    ts, px, vol = stream.ts_ms[mine], stream.prices[mine], stream.volumes[mine]
    src = np.array(stream.sources)[mine]
    order = np.argsort(ts, kind="stable")
    ts, px, vol, src = ts[order], px[order], vol[order], src[order]
    inside = (ts > end - cfg.window_ms) & (ts <= end)
    if not inside.any():
        return None
    cons = prices.consolidated_price(src, ts, px, end, cfg.max_staleness_ms, cfg.max_deviation)
    return WindowAnalytics(
        symbol=symbol,
        window_start_ms=end - cfg.window_ms,
        window_end_ms=end,
        twap=prices.twap(ts, px, end, cfg.window_ms, cfg.max_carry_ms),  # type: ignore[arg-type]
        vwap=prices.vwap(px[inside], vol[inside]),
        volatility=prices.log_return_volatility(px[inside]),
        consolidated_price=None if cons is None else cons.price,
        sources=0 if cons is None else cons.sources,
        ticks=int(inside.sum()),
    )


def assert_records_close(got: WindowAnalytics, want: WindowAnalytics) -> None:
    assert (got.symbol, got.window_start_ms, got.window_end_ms, got.ticks, got.sources) == (
        want.symbol,
        want.window_start_ms,
        want.window_end_ms,
        want.ticks,
        want.sources,
    )
    for field in ("twap", "vwap", "volatility", "consolidated_price"):
        g, w = getattr(got, field), getattr(want, field)
        if w is None:
            assert g is None, field
        else:
            assert g == pytest.approx(w, rel=1e-12, abs=1e-15), field


@pytest.mark.parametrize("staleness_ms", [30_000, 60_000, 90_000])
def test_kernel_matches_reference_functions(staleness_ms: int) -> None:
    stream = random_stream(3_000, seed=1)
    cfg = WindowConfig(max_staleness_ms=staleness_ms)
    ends = np.arange(T0, T0 + 320_000, 5_000)
    got = compute_windows(stream, ends, cfg)
    want = [
        r
        for end in ends.tolist()
        for sym in ("BTC", "ETH", "SOL")
        if (r := reference_record(stream, sym, end, cfg)) is not None
    ]
    assert len(got) == len(want) > 100
    for g, w in zip(got, want, strict=True):
        assert_records_close(g, w)


def test_window_hand_example_with_late_and_too_late_ticks() -> None:
    ticks = [
        ("ETH", 96_000, 100.0, 1.0, "a"),  # W = 96_000
        ("ETH", 101_000, 110.0, None, "a"),  # W = 101_000: window 95_000 complete (empty)
        ("ETH", 97_000, 101.0, 3.0, "b"),  # 97_000 > 101_000 − 5_000: late but accepted
        ("ETH", 106_000, 120.0, None, "a"),  # W = 106_000: window 100_000 complete
        ("ETH", 100_000, 1.0, None, "c"),  # 100_000 <= 106_000 − 5_000: too late
        ("ETH", 101_001, 130.0, None, "c"),  # 101_001 > 101_000: accepted
    ]
    one_by_one = SlidingWindowState()
    records: list[WindowAnalytics] = []
    too_late: list[int] = []
    for i, tick in enumerate(ticks):
        out, result = one_by_one.process(TickBatch.from_ticks([tick]))
        records += out
        too_late += [i] if result.too_late.size else []
    assert too_late == [4]
    # Window (40_000, 100_000]: 96_000@100, 97_000@101; no prior.
    # TWAP (100·1_000 + 101·3_000) / 4_000 = 403_000 / 4_000; VWAP (100·1 + 101·3)/4 = 100.75
    # one return: volatility 0.0; sources a (age 4 s) and b (age 3 s): median 100.5, both
    # within 2 % (2.01) of it.
    assert records == [WindowAnalytics("ETH", 40_000, 100_000, 100.75, 100.75, 0.0, 100.5, 2, 2)]
    one_by_one.advance_watermark(1_000_000)
    rest = one_by_one.emit()
    # Window (45_000, 105_000]: 96_000@100 1 s, 97_000@101 4 s, 101_000@110 1 ms,
    # 101_001@130 3.999 s: (100_000 + 404_000 + 110 + 519_870) / 9_000 = 1_023_980 / 9_000
    assert rest[0].window_end_ms == 105_000
    assert rest[0].twap == pytest.approx(1_023_980 / 9_000, rel=1e-15)
    assert rest[0].ticks == 4
    # The window ending 160_000 still holds 101_001 and 106_000; 165_000 holds only 106_000;
    # the last window that holds a tick ends at 165_000 (106_000 + 60_000 > 165_000).
    assert rest[-1].window_end_ms == 165_000 and rest[-1].ticks == 1

    whole = SlidingWindowState()
    out, result = whole.process(TickBatch.from_ticks(ticks))
    whole.advance_watermark(1_000_000)
    assert result.too_late.tolist() == [4]
    assert out + whole.emit() == records + rest


def test_invalid_ticks_are_reported_and_ignored() -> None:
    state = SlidingWindowState()
    batch = TickBatch.from_columns(
        ["X"] * 4, [1_000, 2_000, 3_000, 4_000], [1.0, 0.0, np.nan, 2.0], [1.0, 1.0, 1.0, -5.0]
    )
    result = state.process(batch)[1]
    assert result.invalid.tolist() == [1, 2, 3]  # zero price, NaN price, negative volume
    assert result.accepted == 1 and result.watermark_ms == 1_000


CONFIGS = [
    WindowConfig(),
    # staleness beyond the window (retention follows it), an emit interval that does not divide
    # the window, no grace at all
    WindowConfig(max_staleness_ms=90_000, emit_interval_ms=7_000, grace_ms=0),
    WindowConfig(window_ms=10_000, emit_interval_ms=1_000, grace_ms=2_500, max_deviation=0.05),
]


@pytest.mark.parametrize(("seed", "config"), [(11, CONFIGS[0]), (12, CONFIGS[1]), (13, CONFIGS[2])])
def test_same_records_under_any_batching(seed: int, config: WindowConfig) -> None:
    stream = random_stream(4_000, seed=seed)
    baseline, late_baseline, _ = stream_in_batches(stream, [], config=config)
    assert late_baseline, "the stream should contain too-late ticks"
    assert len(baseline) > 50
    for cut_seed in range(3):
        cuts = random_cuts(len(stream), seed * 10 + cut_seed)
        records, late, _ = stream_in_batches(stream, cuts, config=config)
        assert records == baseline  # exact equality, floats included
        assert late == late_baseline


def _as_dictionary(values: list[str]) -> DictionaryStrings:
    """``values`` dictionary-encoded as a columnar decoder hands them over: distinct values in
    reverse sorted order, so the dictionary's order differs from first-seen order."""
    distinct = sorted(set(values), reverse=True)
    index = {v: i for i, v in enumerate(distinct)}
    return DictionaryStrings(np.array([index[v] for v in values]), distinct)


@pytest.mark.parametrize("seed", [3, 8])
def test_dictionary_columns_give_the_same_records_as_lists(seed: int) -> None:
    stream = random_stream(3_000, seed=seed)
    coded = TickBatch(
        _as_dictionary(list(stream.symbols)),
        stream.ts_ms,
        stream.prices,
        stream.volumes,
        _as_dictionary(list(stream.sources)),
    )
    cuts = random_cuts(len(stream), seed)
    baseline, late_baseline, state = stream_in_batches(stream, cuts)
    records, late, coded_state = stream_in_batches(coded, cuts)
    assert len(baseline) > 30
    assert records == baseline and late == late_baseline
    # Interned in first-seen order either way, so the state's codes agree too.
    assert coded_state._symbols.names == state._symbols.names
    assert coded_state._sources.names == state._sources.names


def test_same_records_one_tick_at_a_time() -> None:
    stream = random_stream(600, seed=5)
    baseline, late_baseline, _ = stream_in_batches(stream, [])
    records, late, _ = stream_in_batches(stream, list(range(1, len(stream))))
    assert records == baseline and late == late_baseline


@pytest.mark.parametrize("config", CONFIGS)
def test_backfill_equals_streaming(config: WindowConfig) -> None:
    stream = random_stream(4_000, seed=21)
    cuts = random_cuts(len(stream), 99)
    records, too_late, state = stream_in_batches(stream, cuts, config=config)
    state.advance_watermark(int(stream.ts_ms.max()) + 10 * 60_000)
    records += state.emit()
    accepted = np.setdiff1d(np.arange(len(stream)), too_late)  # invalid ones are ignored by both
    ends = sorted({r.window_end_ms for r in records})
    assert compute_windows(stream.take(accepted), ends, config) == records


def test_snapshot_restore_equivalence() -> None:
    stream = random_stream(4_000, seed=31)
    cuts = random_cuts(len(stream), 7)
    uninterrupted, late, _ = stream_in_batches(stream, cuts)
    for split in (cuts[len(cuts) // 3], cuts[len(cuts) // 2], cuts[-1]):
        first_cuts = [c for c in cuts if c < split]
        head, late_head, state = stream_in_batches(stream.take(np.arange(split)), first_cuts)
        snapshot = json.loads(json.dumps(state.to_state()))  # must survive JSON
        restored = SlidingWindowState.from_state(snapshot)
        assert restored.to_state() == state.to_state()
        rest_cuts = [c - split for c in cuts if c > split]
        tail, late_tail, _ = stream_in_batches(
            stream.take(np.arange(split, len(stream))), rest_cuts, restored
        )
        assert head + tail == uninterrupted
        assert late_head + [i + split for i in late_tail] == late


def test_state_keeps_only_what_future_windows_need() -> None:
    cfg = WindowConfig()
    state = SlidingWindowState(cfg)
    # One symbol ticking every 100 ms for 10 minutes, in 1 s batches.
    for second in range(600):
        ts = T0 + second * 1_000 + np.arange(0, 1_000, 100)
        state.process(TickBatch.from_columns(["S"] * 10, ts, np.full(10, 1.0)))
    # Held: ticks within 60 s of the next window end plus grace and up to an emit interval not
    # yet complete (≈ 70 s at 10/s), plus one prior tick.
    assert state.buffered_ticks <= (cfg.window_ms + cfg.grace_ms + 2 * cfg.emit_interval_ms) // 100


def test_watermark_jump_emits_only_windows_with_ticks() -> None:
    state = SlidingWindowState()
    records, _ = state.process(
        TickBatch.from_columns(["S", "S"], [T0, T0 + 30 * 86_400_000], [1.0, 2.0])
    )
    # 30 days later: the windows of the first tick (12 of them) are emitted, not 518_400 ends.
    assert len(records) == 12
    assert {r.window_end_ms for r in records} == set(range(T0, T0 + 60_000, 5_000))


def busy_stream(n: int, seed: int) -> TickBatch:
    """Sixty symbols, six sources, ~400 ticks/s, a third of them up to 8 s out of order: an
    emit interval brings hundreds of late ticks landing all over the buffer."""
    rng = np.random.default_rng(seed)
    arrival = T0 + np.cumsum(rng.integers(0, 5, n))
    ts = arrival - rng.integers(0, 8_001, n) * (rng.random(n) < 0.3)
    symbols = [f"S{i:02d}" for i in rng.integers(0, 60, n).tolist()]
    sources = [f"src{i}" for i in rng.integers(0, 6, n).tolist()]
    px = 50.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    px = np.where(rng.random(n) < 0.02, px * 0.9, px)
    vol = np.where(rng.random(n) < 0.5, rng.exponential(2.0, n), np.nan)
    vol = np.where(rng.random(n) < 0.05, 0.0, vol)  # a zero volume counts as none
    return TickBatch.from_columns(symbols, ts, px, vol, sources)


def records_digest(records: list[WindowAnalytics]) -> str:
    """SHA-256 over every field of the records, floats by their exact bits."""

    def bits(x: float | None) -> str:
        return "None" if x is None else x.hex()

    h = hashlib.sha256()
    for r in records:
        fields = (r.symbol, r.window_start_ms, r.window_end_ms, r.sources, r.ticks)
        floats = (r.twap, r.vwap, r.volatility, r.consolidated_price)
        h.update(repr((*fields, *map(bits, floats))).encode())
    return h.hexdigest()


def test_busy_stream_same_records_under_any_batching_and_backfill() -> None:
    stream = busy_stream(40_000, seed=41)
    baseline, late_baseline, state = stream_in_batches(stream, [])
    state.advance_watermark(int(stream.ts_ms.max()) + 10 * 60_000)
    baseline += state.emit()
    assert late_baseline and len(baseline) > 1_000
    for cut_seed in range(2):
        cuts = random_cuts(len(stream), 400 + cut_seed)
        records, late, state = stream_in_batches(stream, cuts)
        state.advance_watermark(int(stream.ts_ms.max()) + 10 * 60_000)
        assert records + state.emit() == baseline  # exact equality, floats included
        assert late == late_baseline
    accepted = np.setdiff1d(np.arange(len(stream)), late_baseline)
    ends = sorted({r.window_end_ms for r in baseline})
    assert compute_windows(stream.take(accepted), ends) == baseline


@pytest.mark.parametrize("max_spliced_runs", [0, 1_000_000])
def test_merge_by_splicing_and_by_scatter_agree(
    monkeypatch: pytest.MonkeyPatch, max_spliced_runs: int
) -> None:
    """The merge splices few blocks of new ticks and scatters many: force either, same output."""
    stream = busy_stream(20_000, seed=43)
    cuts = random_cuts(len(stream), 44)
    want, late_want, _ = stream_in_batches(stream, cuts)
    monkeypatch.setattr(windows, "_MAX_SPLICED_RUNS", max_spliced_runs)
    got, late, state = stream_in_batches(stream, cuts)
    assert got == want and late == late_want
    restored = SlidingWindowState.from_state(json.loads(json.dumps(state.to_state())))
    assert restored.to_state() == state.to_state()


# Digests of the kernel's output before the emit was made incremental (commit 007981b, a full
# re-sort and whole-buffer analysis per emit): the output is pinned to the bit, so a change to
# the arithmetic (summation order, a different log) shows here, not as a drifted float in a
# downstream comparison.
GOLDEN_DIGESTS = {
    "busy-streamed": "b58754087e07578c5423a5ac50535acdd03baffba8b8e3d8ee53494953052715",
    "busy-backfill": "9443dac422db75b98d4b5a953392bbc974a586d76661ec8236d2458c4f37931a",
    "random-streamed-configs": "4650c68f7a3ce9a186bf111263943ff4af2e4168cf0ba7d44df48b0b1bc7fdd3",
}


def test_records_are_bit_for_bit_those_of_the_reference_kernel() -> None:
    busy = busy_stream(40_000, seed=47)
    streamed, _, state = stream_in_batches(busy, random_cuts(len(busy), 48))
    state.advance_watermark(int(busy.ts_ms.max()) + 10 * 60_000)
    streamed += state.emit()
    ends = np.arange(T0 - 60_000, T0 + 300_000, 2_500)
    backfill = compute_windows(busy, ends)
    per_config: list[WindowAnalytics] = []
    for i, config in enumerate(CONFIGS):
        stream = random_stream(4_000, seed=50 + i)
        per_config += stream_in_batches(stream, random_cuts(len(stream), 60 + i), config=config)[0]
    assert len(streamed) > 1_000 and len(backfill) > 1_000 and len(per_config) > 300
    assert {
        "busy-streamed": records_digest(streamed),
        "busy-backfill": records_digest(backfill),
        "random-streamed-configs": records_digest(per_config),
    } == GOLDEN_DIGESTS


def _counting_kernel(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Record the window ends of every kernel call."""
    calls: list[list[int]] = []
    kernel = windows._analyse_windows

    def counted(t, window_ends, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(window_ends.tolist())
        return kernel(t, window_ends, *args, **kwargs)

    monkeypatch.setattr(windows, "_analyse_windows", counted)
    return calls


def test_next_window_is_computed_ahead_and_emitted_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One symbol, a tick every 100 ms in time order, 500 ms batches.
    ts = T0 + np.arange(0, 120_000, 100)
    stream = TickBatch.from_columns(["S"] * ts.size, ts, 100.0 + np.arange(ts.size) % 7)
    want, _, _ = stream_in_batches(stream, [])
    calls = _counting_kernel(monkeypatch)
    state = SlidingWindowState()
    got: list[WindowAnalytics] = []
    computed_at: list[tuple[int, int]] = []  # (window end, watermark) of each kernel call
    for a in range(0, ts.size, 5):
        kernel_calls = len(calls)
        out, _ = state.process(stream.take(np.arange(a, a + 5)))
        got += out
        wm = int(ts[a + 4])
        computed_at += [(ends[0], wm) for ends in calls[kernel_calls:]]
        if out and len(got) > 1:
            assert len(calls) == kernel_calls  # the emit that completes a window: no kernel
    # After the first emit, each window end E was computed once, in the batch that took the
    # watermark to E + grace / 2 or beyond (batches span 500 ms of event time); the last one
    # computed is never completed.
    assert len(computed_at) == len(got) + 1
    assert computed_at[0] == (T0, T0 + 5_400)
    assert all(end + 2_500 <= wm < end + 3_000 for end, wm in computed_at[1:])
    assert got == want


def test_late_tick_after_the_window_was_computed_ahead_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting_kernel(monkeypatch)
    state = SlidingWindowState()
    state.process(
        TickBatch.from_columns(["S"] * 3, [T0 + 1_000, T0 + 6_000, T0 + 11_000], [1.0] * 3)
    )
    # Watermark T0 + 13_000: window end T0 + 10_000 is computed ahead (due at T0 + 15_000).
    state.process(TickBatch.from_columns(["S"], [T0 + 13_000], [1.0]))
    assert calls[-1] == [T0 + 10_000]
    # A tick inside that window, late but within grace, then the tick that completes it.
    state.process(TickBatch.from_columns(["S"], [T0 + 9_000], [4.0]))
    out, _ = state.process(TickBatch.from_columns(["S"], [T0 + 15_000], [1.0]))
    assert calls[-1] == [T0 + 10_000]  # computed again at the emit
    assert len(calls) == 3
    assert [(r.window_end_ms, r.ticks) for r in out] == [(T0 + 10_000, 3)]
    reference = compute_windows(
        TickBatch.from_columns(["S"] * 3, [T0 + 1_000, T0 + 6_000, T0 + 9_000], [1.0, 1.0, 4.0]),
        [T0 + 10_000],
    )
    assert out == reference
    # That tick came 4 s behind the watermark: the next window end (T0 + 15_000) is computed
    # ahead only once the watermark is that far past it, not at half the grace period.
    del calls[:]  # the reference's
    state.process(TickBatch.from_columns(["S"], [T0 + 17_600], [1.0]))
    assert calls == []
    state.process(TickBatch.from_columns(["S"], [T0 + 19_200], [1.0]))
    assert calls == [[T0 + 15_000]]
    out, _ = state.process(TickBatch.from_columns(["S"], [T0 + 20_000], [1.0]))
    assert len(calls) == 1 and [r.window_end_ms for r in out] == [T0 + 15_000]
