"""Reference price analytics of one symbol, against hand-computed vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ys_platform.processing.prices import (
    ConsolidatedPrice,
    consolidated_price,
    log_return_volatility,
    median_without_outliers,
    twap,
    vwap,
)

END = 120_000  # window (60_000, 120_000]


def test_twap_prior_tick_and_gaps() -> None:
    # Given out of order. 50_000@100 and 55_000@99 are before the window: the later one (99)
    # is the prior tick and holds from the window start 60_000 to the first tick inside.
    # 130_000@200 is after the window end: ignored.
    ts = [100_000, 55_000, 130_000, 70_000, 50_000]
    px = [101.0, 99.0, 200.0, 102.0, 100.0]
    # 99  holds 60_000 -> 70_000  = 10 s
    # 102 holds 70_000 -> 100_000 = 30 s (a 30 s gap without ticks: the price holds)
    # 101 holds 100_000 -> 120_000 = 20 s
    # (99·10 + 102·30 + 101·20) / 60 = (990 + 3060 + 2020) / 60 = 6070 / 60
    assert twap(ts, px, END) == pytest.approx(6070 / 60, rel=1e-15)


def test_twap_without_prior_starts_at_first_tick() -> None:
    # 10 holds 90_000 -> 105_000 (15 s), 20 holds 105_000 -> 120_000 (15 s): (150 + 300) / 30
    assert twap([90_000, 105_000], [10.0, 20.0], END) == 15.0


def test_twap_tick_at_window_end_holds_zero_time() -> None:
    # 10 holds 90_000 -> 120_000; 1000 at the window end holds 0 s.
    assert twap([90_000, 120_000], [10.0, 1000.0], END) == 10.0


def test_twap_tick_at_window_start_is_the_prior_tick() -> None:
    # The window is (60_000, 120_000]: 60_000@50 is not inside but holds 60_000 -> 90_000.
    # (50·30 + 10·30) / 60 = 30
    assert twap([60_000, 90_000], [50.0, 10.0], END) == 30.0


def test_twap_equal_timestamps_last_given_wins() -> None:
    # At 80_000 two ticks: the first given holds 0 s, the last given holds 80_000 -> 100_000.
    # (20·20 + 30·20) / 40 = 25 ; with the pair given the other way: (10·20 + 30·20) / 40 = 20
    assert twap([80_000, 80_000, 100_000], [10.0, 20.0, 30.0], END) == 25.0
    assert twap([80_000, 80_000, 100_000], [20.0, 10.0, 30.0], END) == 20.0


def test_twap_zero_covered_time_is_last_price_and_empty_is_none() -> None:
    # Only ticks at the window end and no prior: the last given one.
    assert twap([END, END], [7.0, 8.0], END) == 8.0
    assert twap([10_000, 130_000], [1.0, 2.0], END) is None  # nothing inside (60_000, 120_000]


def test_vwap() -> None:
    # (100·1 + 102·3) / (1 + 3) = 406 / 4; the NaN-volume tick carries no volume.
    assert vwap([100.0, 102.0, 101.0], [1.0, 3.0, np.nan]) == 101.5
    assert vwap([100.0, 101.0], [np.nan, 0.0]) is None


def test_volatility() -> None:
    # Log returns a, b, a with a = ln 1.1, b = ln 0.9: mean (2a + b)/3, deviations (a−b)/3,
    # −2(a−b)/3, (a−b)/3, squares sum 6(a−b)²/9, / (3−1) → var (a−b)²/3, std ln(11/9)/√3.
    expected = math.log(11 / 9) / math.sqrt(3)  # 0.11585...
    assert log_return_volatility([100.0, 110.0, 99.0, 108.9]) == pytest.approx(expected, 1e-12)
    assert log_return_volatility([100.0, 110.0]) == 0.0  # one return: no dispersion estimate
    assert log_return_volatility([100.0]) == 0.0


def test_consolidation_rejects_stale_and_outlier_sources() -> None:
    ticks = [
        ("A", 100_000, 99.0),
        ("A", 110_000, 100.0),  # A's latest: 100.0
        ("B", 115_000, 101.0),
        ("C", 95_000, 100.5),  # 25 s old: fresh
        ("D", 85_000, 100.2),  # 35 s old: stale
        ("E", 118_000, 110.0),  # outlier
        ("F", 125_000, 90.0),  # after the window end: F has no price yet
    ]
    src, ts, px = zip(*ticks, strict=True)
    # fresh: 100, 100.5, 101, 110 → median (100.5 + 101)/2 = 100.75; bound 2 % = 2.015;
    # |110 − 100.75| = 9.25 > 2.015 → drop; median of 100, 100.5, 101 = 100.5 from 3 sources.
    assert consolidated_price(src, ts, px, END) == ConsolidatedPrice(100.5, 3)


def test_consolidation_staleness_bound_is_inclusive() -> None:
    # A at exactly 30 s old is fresh: median of 100, 101 = 100.5 from 2 sources.
    assert consolidated_price(["A", "B"], [90_000, 119_000], [100.0, 101.0], END) == (
        ConsolidatedPrice(100.5, 2)
    )
    assert (
        consolidated_price(
            ["A"],
            [
                89_999,
            ],
            [100.0],
            END,
        )
        is None
    )


def test_consolidation_without_consensus_is_none() -> None:
    # median 105, bound 2.1: both 100 and 110 are 5 away.
    assert median_without_outliers([100.0, 110.0]) is None
    assert median_without_outliers([]) is None
    assert median_without_outliers([42.0]) == ConsolidatedPrice(42.0, 1)


def test_twap_does_not_carry_a_prior_tick_older_than_max_carry():
    # Window (60_000, 120_000]. Prior tick at 59_000 is 1 s before the start: carried with a
    # 5 s bound → (5·30_000 + 9·30_000)/60_000 = 7. With a 500 ms bound it is too old, so the
    # window starts at its first tick (90_000) and only 9 holds: TWAP 9.
    assert twap([59_000, 90_000], [5.0, 9.0], END, max_carry_ms=5_000) == 7.0
    assert twap([59_000, 90_000], [5.0, 9.0], END, max_carry_ms=500) == 9.0
