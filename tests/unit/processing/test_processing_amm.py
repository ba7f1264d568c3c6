"""Constant-product maths: the Uniswap v2 vector, inverses, optimal sizes against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ys_platform.processing.amm import (
    get_amount_in,
    get_amount_out,
    optimal_base_in_against_price,
    optimal_quote_in_against_price,
    optimal_two_pool_quote_in,
    spot_price,
    two_pool_round_trip,
)


def brute_force_max(profit, upper: float, steps: int = 2_000_001) -> tuple[float, float]:
    """Grid search of a profit function on [0, upper], refined once around the best point.

    Near its maximum a profit curve is flat to second order, so float rounding of the profit
    (~1e-16 of the swap output) makes sizes within ~1e-7 relative indistinguishable: compare
    sizes with a relative tolerance and profits with an absolute one.
    """
    grid = np.linspace(0.0, upper, steps)
    best = int(np.argmax(profit(grid)))
    step = upper / (steps - 1)
    fine = np.linspace(max(0.0, grid[best] - step), grid[best] + step, 20_001)
    i = int(np.argmax(profit(fine)))
    return float(fine[i]), float(profit(fine[i : i + 1])[0])


def test_get_amount_out_uniswap_vector() -> None:
    # out = Δin·γ·R_out / (R_in + Δin·γ) = 100·0.997·1000 / (1000 + 99.7) = 99_700 / 1_099.7
    assert get_amount_out(100, 1_000, 1_000) == pytest.approx(90.6610893880, abs=1e-9)
    assert get_amount_out(100, 1_000, 1_000) == pytest.approx(99_700 / 1_099.7, rel=1e-15)
    assert get_amount_out(0, 1_000, 1_000) == 0.0
    assert get_amount_out(100, 1_000, 1_000, fee=0.0) == pytest.approx(100_000 / 1_100)


def test_get_amount_in_inverts_get_amount_out() -> None:
    out = get_amount_out(np.array([1.0, 100.0, 5_000.0]), 1_000.0, 2_000.0)
    assert get_amount_in(out, 1_000.0, 2_000.0) == pytest.approx([1.0, 100.0, 5_000.0], 1e-12)
    assert get_amount_in(2_000.0, 1_000.0, 2_000.0) == math.inf  # cannot drain the pool
    with pytest.raises(ValueError):
        get_amount_out(1, 0, 1)


def test_optimal_base_in_against_price_vs_brute_force() -> None:
    # Pool 1000 base / 2_100_000 quote (spot 2100); external 2000: γ·y/x = 2093.7 > 2000, so sell
    # base into the pool and buy it back outside. Δx* = (√(0.997·1000·2_100_000/2000) − 1000)/0.997
    x, y, p = 1_000.0, 2_100_000.0, 2_000.0
    size = optimal_base_in_against_price(x, y, p)
    assert size == pytest.approx((math.sqrt(0.997 * 1_000 * 2_100_000 / 2_000) - 1_000) / 0.997)

    def profit(d: np.ndarray) -> np.ndarray:
        return get_amount_out(d, x, y) - p * d

    best_size, best_profit = brute_force_max(profit, 100.0)
    assert size == pytest.approx(best_size, rel=1e-6)
    assert profit(np.array([size]))[0] >= best_profit - 1e-9
    assert optimal_base_in_against_price(x, 2_001_000.0, p) == 0.0  # γ·2001 < 2000: no trade


def test_optimal_quote_in_against_price_vs_brute_force() -> None:
    # Pool spot 1900, external 2000: p·γ·x/y = 2000·0.997·1000/1_900_000 = 1.0495 > 1: buy base
    # in the pool with quote, sell it outside. Δy* = (√(2000·0.997·1000·1_900_000) − 1_900_000)/γ
    x, y, p = 1_000.0, 1_900_000.0, 2_000.0
    size = optimal_quote_in_against_price(x, y, p)
    assert size == pytest.approx((math.sqrt(2_000 * 0.997 * 1_000 * 1_900_000) - 1_900_000) / 0.997)

    def profit(d: np.ndarray) -> np.ndarray:
        return p * get_amount_out(d, y, x) - d

    best_size, best_profit = brute_force_max(profit, 100_000.0)
    assert size == pytest.approx(best_size, rel=1e-6)
    assert profit(np.array([size]))[0] >= best_profit - 1e-7
    assert optimal_quote_in_against_price(x, 1_999_000.0, p) == 0.0


def test_two_pool_composition_equals_two_swaps() -> None:
    pool_a, pool_b = (1_000.0, 2_000_000.0), (500.0, 1_050_000.0)
    dq = np.array([1.0, 1_000.0, 30_000.0])
    base = get_amount_out(dq, pool_a[1], pool_a[0])  # buy base in A with quote
    quote = get_amount_out(base, pool_b[0], pool_b[1])  # sell it in B
    assert two_pool_round_trip(dq, pool_a, pool_b) == pytest.approx(quote, rel=1e-13)


@pytest.mark.parametrize("bridge_bps", [0.0, 5.0, 30.0])
def test_optimal_two_pool_vs_brute_force(bridge_bps: float) -> None:
    # A: spot 2000, B: spot 2100 (5 % apart). Buy base in A, sell in B; bridge bps of input.
    pool_a, pool_b = (1_000.0, 2_000_000.0), (500.0, 1_050_000.0)
    k = bridge_bps / 10_000
    size, profit_star = optimal_two_pool_quote_in(pool_a, pool_b, cost_per_quote=k)

    def profit(d: np.ndarray) -> np.ndarray:
        return two_pool_round_trip(d, pool_a, pool_b) - (1 + k) * d

    best_size, best_profit = brute_force_max(profit, 60_000.0)
    assert size == pytest.approx(best_size, rel=1e-6)
    assert profit_star == pytest.approx(float(profit(np.array([size]))[0]), rel=1e-9)
    assert profit_star >= best_profit - 1e-7


def test_two_pool_unprofitable_and_spot() -> None:
    # 2000 vs 2005: γ² · 2005 = 1992.97 < 2000 → no trade.
    assert optimal_two_pool_quote_in((1_000.0, 2_000_000.0), (1_000.0, 2_005_000.0)) == (0.0, 0.0)
    assert spot_price(1_000.0, 2_000_000.0) == 2_000.0
