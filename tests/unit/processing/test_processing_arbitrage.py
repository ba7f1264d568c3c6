"""Arbitrage: spread, profit after fees, sizing, scoring, de-duplication and expiry."""

from __future__ import annotations

import numpy as np
import pytest

from ys_platform.processing.amm import get_amount_out, two_pool_round_trip
from ys_platform.processing.arbitrage import (
    BridgeCost,
    OpportunityTracker,
    VenueQuote,
    evaluate_pair,
    expected_profit_usd,
    find_opportunities,
    liquidity_adjusted_score,
    spread_bps,
)


def test_spread_bps() -> None:
    assert spread_bps(2_000, 2_050) == pytest.approx(250.0)  # 50 / 2000 = 2.5 %
    assert spread_bps(2_000, 1_990) == pytest.approx(-50.0)


def test_expected_profit_after_fees_bridge_and_gas() -> None:
    # units = 10_000 · 0.997 / 2000 = 4.985 ; proceeds = 4.985 · 2050 · 0.997 = 4.985 · 2043.85
    # = 10_188.59225 ; gross 188.59225 ; bridge 5 + 10 bps · 10_000 = 15 ; gas 2 + 3
    # → 188.59225 − 15 − 5 = 168.59225
    profit = expected_profit_usd(10_000, 2_000, 2_050, 0.003, 0.003, BridgeCost(5, 10), 2, 3)
    assert profit == pytest.approx(168.59225, rel=1e-12)


def test_liquidity_capped_size_when_reserves_unknown() -> None:
    buy = VenueQuote("ethereum", "uniswap", 2_000, gas_usd=2, liquidity_usd=5_000_000)
    sell = VenueQuote("arbitrum", "camelot", 2_050, gas_usd=3, liquidity_usd=8_000_000)
    opp = evaluate_pair("ETH", buy, sell, BridgeCost(5, 10))
    # size = 0.1 % of the thinner venue (5M) = 5_000 ; gross = 5_000·(0.997·2050·0.997/2000 − 1)
    # = 94.296125 ; costs = 5 + 0.001·5_000 + 2 + 3 = 15 ; net 79.296125
    assert opp.sizing == "liquidity_cap"
    assert opp.trade_size_usd == 5_000
    assert opp.gross_profit_usd == pytest.approx(94.296125, rel=1e-12)
    assert opp.costs_usd == pytest.approx(15.0)
    assert opp.expected_profit_usd == pytest.approx(79.296125, rel=1e-12)
    # score = 79.296125 · 5M / (5M + 5_000)
    assert opp.score == pytest.approx(79.296125 * 5_000_000 / 5_005_000, rel=1e-12)


def test_two_pool_sizing_is_optimal_after_bridge_bps() -> None:
    buy = VenueQuote(
        "ethereum", "uniswap", 2_000, reserve_base=1_000, reserve_quote=2_000_000, gas_usd=4
    )
    sell = VenueQuote(
        "base", "aerodrome", 2_100, reserve_base=500, reserve_quote=1_050_000, gas_usd=1
    )
    bridge = BridgeCost(fixed_usd=3, bps=8)
    opp = evaluate_pair("ETH", buy, sell, bridge)
    assert opp.sizing == "two_pool"
    pool_a, pool_b = (1_000.0, 2_000_000.0), (500.0, 1_050_000.0)

    def net(d: np.ndarray) -> np.ndarray:
        return two_pool_round_trip(d, pool_a, pool_b) - d - (3 + 8e-4 * d) - 5

    grid = np.linspace(0, 60_000, 600_001)
    assert opp.trade_size_usd == pytest.approx(grid[np.argmax(net(grid))], abs=0.1)
    assert opp.expected_profit_usd == pytest.approx(float(net(np.array([opp.trade_size_usd]))[0]))
    assert opp.expected_profit_usd >= net(grid).max() - 1e-6
    # Liquidity: pools' TVL 4M and 2.1M → L = 2.1M
    assert opp.score == pytest.approx(
        opp.expected_profit_usd * 2_100_000 / (2_100_000 + opp.trade_size_usd)
    )


def test_one_sided_pool_sizing_vs_brute_force() -> None:
    pool = VenueQuote("ethereum", "uniswap", 1_900, reserve_base=1_000, reserve_quote=1_900_000)
    cex = VenueQuote("offchain", "cex", 2_000, fee=0.001)
    bridge = BridgeCost(bps=5)
    opp = evaluate_pair("ETH", pool, cex, bridge)
    assert opp.sizing == "pool_buy"

    def net_buy(d: np.ndarray) -> np.ndarray:
        return get_amount_out(d, 1_900_000, 1_000) * 2_000 * 0.999 - d * (1 + 5e-4)

    grid = np.linspace(0, 60_000, 600_001)
    assert opp.trade_size_usd == pytest.approx(grid[np.argmax(net_buy(grid))], abs=0.1)
    assert opp.expected_profit_usd == pytest.approx(
        float(net_buy(np.array([opp.trade_size_usd]))[0])
    )

    # The other way: buy at the CEX (1800), sell into the pool (spot 1900).
    cheap = VenueQuote("offchain", "cex", 1_800, fee=0.001)
    opp = evaluate_pair("ETH", cheap, pool, bridge)
    assert opp.sizing == "pool_sell"
    cost_per_base = 1_800 / 0.999

    def net_sell(usd: np.ndarray) -> np.ndarray:
        return get_amount_out(usd / cost_per_base, 1_000, 1_900_000) - usd * (1 + 5e-4)

    assert opp.trade_size_usd == pytest.approx(grid[np.argmax(net_sell(grid))], abs=0.1)
    assert opp.expected_profit_usd == pytest.approx(
        float(net_sell(np.array([opp.trade_size_usd]))[0])
    )


def test_score_is_monotone() -> None:
    assert liquidity_adjusted_score(100, 1_000, None) == 50.0  # unknown depth: ½
    assert liquidity_adjusted_score(100, 1_000, 1_000) == 50.0  # size = depth: ½
    assert liquidity_adjusted_score(100, 1_000, 1e9) == pytest.approx(100, rel=1e-5)
    assert liquidity_adjusted_score(100, 1_000, 2e6) > liquidity_adjusted_score(100, 1_000, 1e6)


def test_find_opportunities_thresholds_bridges_and_order() -> None:
    quotes = [
        VenueQuote("ethereum", "uniswap", 2_000, liquidity_usd=10_000_000),
        VenueQuote("arbitrum", "camelot", 2_040, liquidity_usd=10_000_000),
        VenueQuote("solana", "orca", 2_060, liquidity_usd=10_000_000),  # no bridge to it
        VenueQuote("ethereum", "sushiswap", 2_030, liquidity_usd=10_000_000),
    ]
    bridges = {("ethereum", "arbitrum"): BridgeCost(2, 5)}
    found = find_opportunities("ETH", quotes, bridges, min_profit_usd=1.0)
    keys = [o.key for o in found]
    assert ("ETH", "ethereum", "uniswap", "solana", "orca") not in keys
    assert keys == [
        ("ETH", "ethereum", "uniswap", "arbitrum", "camelot"),  # 2000 → 2040 across a bridge
        ("ETH", "ethereum", "uniswap", "ethereum", "sushiswap"),  # 2000 → 2030 same chain
    ]
    assert all(o.expected_profit_usd > 1.0 for o in found)
    assert find_opportunities("ETH", quotes, bridges, min_spread_bps=175) == found[:1]


def test_tracker_deduplicates_and_expires() -> None:
    key = ("ETH", "ethereum", "uniswap", "arbitrum", "camelot")
    t = OpportunityTracker(ttl_ms=60_000, min_profit_change=0.10)
    assert t.observe(key, 100.0, 0) is True  # new
    assert t.observe(key, 100.0, 5_000) is False  # persists, unchanged
    assert t.observe(key, 109.0, 10_000) is False  # +9 %: not enough
    assert t.observe(key, 111.0, 15_000) is True  # +11 % since the last emission
    assert t.observe(key, 101.0, 20_000) is False  # −9 % from 111
    assert t.expire(80_000) == []  # last seen 20_000: 60 s is not more than the TTL
    assert t.expire(80_001) == [key]
    assert t.observe(key, 101.0, 90_000) is True  # back after expiry: new again
    # Lazily expired on observation as well.
    assert t.observe(key, 101.0, 200_000) is True


def test_tracker_refresh_and_state() -> None:
    key = ("BTC", "a", "x", "b", "y")
    t = OpportunityTracker(ttl_ms=60_000, refresh_ms=30_000)
    assert t.observe(key, 10.0, 0)
    assert not t.observe(key, 10.0, 29_999)
    assert t.observe(key, 10.0, 30_000)  # refreshed: consumers' expires_at moves on
    restored = OpportunityTracker.from_state(t.to_state(), ttl_ms=60_000, refresh_ms=30_000)
    assert restored.to_state() == t.to_state()
    assert not restored.observe(key, 10.0, 40_000)
    assert len(restored) == 1
