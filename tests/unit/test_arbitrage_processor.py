"""The cross-chain arbitrage processor driven with model instances, no Kafka: sizing and profit by
hand and by brute force, thresholds, de-duplication, re-emission, expiry, missing reference
data, staleness, rejects, and outputs independent of the batching."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ys_platform.catalog.codec import decode, encode
from ys_platform.catalog.models import ArbitrageOpportunity, BridgeQuote, GasPrice, MarketPrice
from ys_platform.processing.amm import get_amount_out
from ys_platform.processing.arbitrage import BridgeCost, VenueQuote, evaluate_pair
from ys_platform.processors.crosschain_arbitrage import (
    ID_NAMESPACE,
    OFFCHAIN,
    ArbitrageConfig,
    CrosschainArbitrageProcessor,
)
from ys_platform.sources import simulator
from ys_platform.sources.simulator import MarketSimulator

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
T0_MS = 1_767_614_400_000
PART = ("market.prices", 0)
# The scenario: ETH at 3000 on an Arbitrum pool and 3100 on a Base pool (a 333 bps dislocation).
ARB_POOL = (1_000.0, 3_000_000.0)
BASE_POOL = (1_000.0, 3_100_000.0)
BRIDGE_FIXED_USD, BRIDGE_BPS = 1.0, 5.0
GAS = {"arbitrum": 0.05, "base": 0.02, "optimism": 0.03}


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def pool(
    chain: str, venue: str, reserves: tuple[float, float], ms: int, base: str = "ETH"
) -> MarketPrice:
    x, y = reserves
    return MarketPrice(
        symbol=f"{base}/USD",
        base=base,
        quote="USD",
        price=y / x,
        source=venue,
        chain=chain,
        venue=venue,
        reserve_base=x,
        reserve_quote=y,
        liquidity_usd=2 * y,
        ts=at(ms),
    )


def bridge(from_chain: str, to_chain: str, ms: int = -1_000, asset: str = "ETH") -> BridgeQuote:
    return BridgeQuote(
        from_chain=from_chain,
        to_chain=to_chain,
        asset=asset,
        fee_usd=BRIDGE_FIXED_USD,
        fee_bps=BRIDGE_BPS,
        latency_s=60.0,
        ts=at(ms),
    )


def gas(ms: int = -1_000) -> list[GasPrice]:
    return [GasPrice(chain=c, gas_usd=usd, ts=at(ms)) for c, usd in GAS.items()]


def make(config: ArbitrageConfig | None = None, reference=None) -> CrosschainArbitrageProcessor:
    app = CrosschainArbitrageProcessor(config)
    app.assign(PART)
    app.on_broadcast([*gas(), bridge("arbitrum", "base")] if reference is None else reference)
    return app


def run(app: CrosschainArbitrageProcessor, *ticks: MarketPrice) -> list[ArbitrageOpportunity]:
    result = app.process(PART, list(ticks), [0] * len(ticks))
    assert result.rejected == []
    return result.outputs  # type: ignore[return-value]


def test_two_pool_dislocation_sized_by_hand_and_by_brute_force() -> None:
    app = make()
    assert run(app, pool("arbitrum", "uniswap-v2", ARB_POOL, 0)) == []  # one venue: no pair
    (opp,) = run(app, pool("base", "aerodrome", BASE_POOL, 100))

    # Buy in A = (xA, yA) = (1000, 3e6), sell in B = (1000, 3.1e6), γ = 0.997, bridge k = 5 bps:
    #   a = γ²·xA·yB = 0.994009·1000·3.1e6 = 3_081_427_900
    #   c = yA·xB = 3e9 ;  d = γ·(xB + γ·xA) = 0.997·1997 = 1991.009
    #   Δ* = (√(a·c/(1+k)) − c)/d ≈ 19_930.37 USD in
    #   π* = (√a − √(c·(1+k)))²/d ≈ 263.754 (gross after pool fees, impact and the bridge bps)
    #   net = π* − 1.00 fixed bridge fee − 0.05 − 0.02 gas ≈ 262.684 USD
    g, k = 0.997, BRIDGE_BPS / 10_000
    a, c, d = g * g * 1_000 * 3.1e6, 3e6 * 1_000, g * (1_000 + g * 1_000)
    size = (math.sqrt(a * c / (1 + k)) - c) / d
    profit = (math.sqrt(a) - math.sqrt(c * (1 + k))) ** 2 / d - BRIDGE_FIXED_USD - 0.07
    assert size == pytest.approx(19_930.367, abs=1e-3)
    assert profit == pytest.approx(262.684, abs=1e-3)
    assert opp.expected_profit_usd == pytest.approx(profit, rel=1e-12)
    # trade_size is the base bought with Δ* in A: Δ*·γ·yA... i.e. get_amount_out ≈ 6.5799 ETH.
    assert opp.trade_size == pytest.approx(float(get_amount_out(size, 3e6, 1_000)), rel=1e-12)
    assert opp.trade_size == pytest.approx(6.5799, abs=1e-4)

    # Brute force over the input: both swaps, the bridge fee on the notional, both gases.
    grid = np.linspace(1.0, 60_000.0, 600_001)  # 0.1 USD steps
    base_out = get_amount_out(grid, 3e6, 1_000)
    net = get_amount_out(base_out, 1_000, 3.1e6) - grid - (1.0 + k * grid) - 0.07
    assert grid[np.argmax(net)] == pytest.approx(size, abs=0.1)
    assert net.max() == pytest.approx(opp.expected_profit_usd, abs=1e-6)

    # The same as the library's evaluate_pair on the same quotes.
    lib = evaluate_pair(
        "ETH/USD",
        VenueQuote("arbitrum", "uniswap-v2", 3000.0, gas_usd=0.05, reserve_base=1e3,
                   reserve_quote=3e6),
        VenueQuote("base", "aerodrome", 3100.0, gas_usd=0.02, reserve_base=1e3,
                   reserve_quote=3.1e6),
        BridgeCost(BRIDGE_FIXED_USD, BRIDGE_BPS),
    )  # fmt: skip
    assert lib.expected_profit_usd == opp.expected_profit_usd
    assert (opp.buy_chain, opp.buy_venue, opp.sell_chain, opp.sell_venue) == (
        "arbitrum", "uniswap-v2", "base", "aerodrome",
    )  # fmt: skip
    assert (opp.buy_price, opp.sell_price) == (3000.0, 3100.0)
    assert opp.spread_bps == pytest.approx(100 / 3000 * 10_000)  # 333.33 bps
    # score: s = profit·L/(L + Δ*), L = the thinner pool's TVL = 2·3e6; then s/(s + 100).
    s = lib.expected_profit_usd * 6e6 / (6e6 + lib.trade_size_usd)
    assert opp.score == pytest.approx(s / (s + 100.0), rel=1e-12)
    assert opp.detected_at == at(100)
    assert opp.expires_at == at(100 + 60_000)
    expected_id = uuid.uuid5(
        ID_NAMESPACE, f"ETH/USD|arbitrum|uniswap-v2|base|aerodrome|{T0_MS + 100}"
    )
    assert opp.id == str(expected_id)
    assert decode("crosschain.arbitrage", encode(opp)[1]) == opp  # a valid wire record
    assert app.stats.emitted == 1


def test_below_thresholds_nothing() -> None:
    # 33 bps: above min_spread_bps (30) but under the two pool fees (60 bps): the prefilter.
    app = make()
    thin = (1_000.0, 3_010_000.0)
    assert run(app, pool("arbitrum", "uniswap-v2", ARB_POOL, 0), pool("base", "a", thin, 1)) == []
    assert app.stats.unprofitable == 1
    # 20 bps: under min_spread_bps, dropped before any lookup.
    app = make()
    tiny = (1_000.0, 3_006_000.0)
    assert run(app, pool("arbitrum", "uniswap-v2", ARB_POOL, 0), pool("base", "a", tiny, 1)) == []
    assert app.stats.below_spread == 1
    # The 262.68 USD opportunity under a 300 USD minimum.
    app = make(ArbitrageConfig(min_profit_usd=300.0))
    both = (pool("arbitrum", "uniswap-v2", ARB_POOL, 0), pool("base", "a", BASE_POOL, 1))
    assert run(app, *both) == []
    assert app.stats.unprofitable == 1
    assert len(run(make(ArbitrageConfig(min_profit_usd=262.0)), *both)) == 1


def test_persisting_opportunity_is_not_repeated_and_a_moved_profit_is() -> None:
    app = make()
    (first,) = run(
        app, pool("arbitrum", "uniswap-v2", ARB_POOL, 0), pool("base", "aerodrome", BASE_POOL, 100)
    )
    # The same quotes ticking again (either venue): the same opportunity, not re-emitted.
    again = run(
        app,
        pool("base", "aerodrome", BASE_POOL, 1_000),
        pool("arbitrum", "uniswap-v2", ARB_POOL, 2_000),
        pool("base", "aerodrome", (1_000.0, 3_100_500.0), 3_000),  # profit +1.3 %: not news
    )
    assert again == []
    assert app.stats.duplicate == 3
    # Base falls to 3050: the profit drops by far more than 25 % -> a new record.
    (moved,) = run(app, pool("base", "aerodrome", (1_000.0, 3_050_000.0), 4_000))
    assert moved.expected_profit_usd < 0.5 * first.expected_profit_usd
    assert moved.detected_at == at(4_000) and moved.id != first.id
    assert moved.sell_price == 3050.0


def test_live_opportunity_is_refreshed_before_its_record_expires() -> None:
    app = make()
    assert len(run(app, pool("arbitrum", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 100)))
    # Same quotes 29.9 s later: not a duplicate any more once the record is refresh_ms (30 s) old.
    assert run(app, pool("arbitrum", "u", ARB_POOL, 29_000)) == []
    (refresh,) = run(app, pool("base", "a", BASE_POOL, 30_100))
    assert refresh.detected_at == at(30_100) and refresh.expires_at == at(90_100)


def test_opportunity_expires_after_ttl_and_is_emitted_again() -> None:
    app = make(ArbitrageConfig(refresh_ms=None))
    (first,) = run(app, pool("arbitrum", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 100))
    # The gap closes; fresh quotes keep ticking with no opportunity for more than the TTL.
    run(app, pool("base", "a", ARB_POOL, 1_000))
    for ms in (20_000, 40_000, 60_000):
        assert run(app, pool("arbitrum", "u", ARB_POOL, ms), pool("base", "a", ARB_POOL, ms)) == []
    assert len(app.state(PART).tracker) == 1  # last seen at 0.1 s: live until 60.1 s
    run(app, pool("arbitrum", "u", ARB_POOL, 60_101))
    assert len(app.state(PART).tracker) == 0  # dropped once the watermark passes it
    # The same dislocation again: a new opportunity, emitted although its profit is the same.
    (again,) = run(app, pool("base", "a", BASE_POOL, 60_200))
    assert again.expected_profit_usd == first.expected_profit_usd
    assert again.detected_at == at(60_200) and again.id != first.id


def test_missing_bridge_or_gas_quote_skips_the_pair() -> None:
    ticks = (pool("arbitrum", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 100))
    # Only the reverse route, and the right route for another asset.
    app = make(
        reference=[*gas(), bridge("base", "arbitrum"), bridge("arbitrum", "base", -1, "BTC")]
    )
    assert run(app, *ticks) == []
    assert app.stats.missing_bridge == 1
    # The route is quoted only after the tick (as-of join), or too long before (10 min max age).
    for ms in (5_000, -600_001):
        app = make(reference=[*gas(), bridge("arbitrum", "base", ms)])
        assert run(app, *ticks) == []
        assert app.stats.missing_bridge == 1
    # No gas price for Base: the profit cannot be computed honestly.
    app = make(reference=[g for g in gas() if g.chain != "base"] + [bridge("arbitrum", "base")])
    assert run(app, *ticks) == []
    assert app.stats.missing_gas == 1


def test_bridge_and_gas_joined_as_of_the_tick() -> None:
    cheap = bridge("arbitrum", "base", -1_000)
    dear = BridgeQuote(**{**cheap.model_dump(), "fee_usd": 50.0, "ts": at(50)})
    app = make(reference=[*gas(), dear, cheap])  # arrival order does not matter, event time does
    ticks = [pool("arbitrum", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 40)]
    (before,) = run(app, *ticks)
    app = make(reference=[*gas(), cheap, dear])
    (after,) = run(app, pool("arbitrum", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 60))
    assert before.expected_profit_usd - after.expected_profit_usd == pytest.approx(49.0)


def test_stale_quotes_are_ignored() -> None:
    app = make(reference=[*gas(), bridge("arbitrum", "base", -1000)])
    run(app, pool("arbitrum", "u", ARB_POOL, 0))
    # Another symbol of the partition moves the watermark 40 s on: the Arbitrum quote is stale.
    run(app, pool("optimism", "v", ARB_POOL, 40_000, base="OP"))
    assert run(app, pool("base", "a", BASE_POOL, 40_100)) == []
    assert app.stats.pairs == 0
    # A late tick (more than 30 s behind the watermark) is not even booked.
    assert run(app, pool("arbitrum", "u", ARB_POOL, 10_000)) == []
    assert app.stats.stale == 1
    assert app.watermark_ms(PART) == T0_MS + 40_100
    # A fresh Arbitrum tick brings the pair back.
    assert len(run(app, pool("arbitrum", "u", ARB_POOL, 40_200))) == 1


def test_offchain_and_depthless_quotes_are_not_venues() -> None:
    app = make(reference=[*gas(), bridge("arbitrum", "base")])
    cex = MarketPrice(symbol="ETH/USD", base="ETH", quote="USD", price=2_900.0, volume=3.0,
                      source="binance", chain=OFFCHAIN, venue="binance", ts=at(0))  # fmt: skip
    oracle = MarketPrice(symbol="ETH/USD", base="ETH", quote="USD", price=3_200.0,
                         source="chainlink", chain="base", venue="chainlink", ts=at(1))  # fmt: skip
    assert run(app, cex, oracle, pool("arbitrum", "u", ARB_POOL, 2)) == []
    assert (app.stats.offchain, app.stats.no_depth, app.stats.pairs) == (1, 1, 0)
    assert OFFCHAIN == simulator.OFFCHAIN


def test_liquidity_only_venues_are_capped_and_sized_in_base_units() -> None:
    app = make()
    quotes = [
        MarketPrice(symbol="ETH/USD", base="ETH", quote="USD", price=price, source=v, chain=c,
                    venue=v, liquidity_usd=5e6, ts=at(ms))
        for c, v, price, ms in (("arbitrum", "u", 3000.0, 0), ("base", "a", 3100.0, 1))
    ]  # fmt: skip
    (opp,) = run(app, *quotes)
    # 0.1 % of 5M = 5000 USD in; base bought = 5000·0.997/3000 = 1.661667 ETH
    assert opp.trade_size == pytest.approx(5_000 * 0.997 / 3_000, rel=1e-12)
    # gross = 5000·(0.997·3100·0.997/3000 − 1) = 135.6848...; costs 1 + 0.0005·5000 + 0.07
    gross = 5_000 * (0.997 * 3_100 * 0.997 / 3_000 - 1)
    assert opp.expected_profit_usd == pytest.approx(gross - 1.0 - 2.5 - 0.07, rel=1e-12)


def test_same_chain_pairs_only_when_asked() -> None:
    ticks = (pool("base", "u", ARB_POOL, 0), pool("base", "a", BASE_POOL, 1))
    assert run(make(), *ticks) == []
    (opp,) = run(make(ArbitrageConfig(include_same_chain=True)), *ticks)
    assert opp.buy_chain == opp.sell_chain == "base"
    # No bridge: only the two pool fees, the impact and the gas (twice Base's).
    lib = evaluate_pair(
        "ETH/USD",
        VenueQuote("base", "u", 3000.0, gas_usd=0.02, reserve_base=1e3, reserve_quote=3e6),
        VenueQuote("base", "a", 3100.0, gas_usd=0.02, reserve_base=1e3, reserve_quote=3.1e6),
    )
    assert opp.expected_profit_usd == lib.expected_profit_usd


def test_inconsistent_pool_tick_is_rejected() -> None:
    app = make()
    bad = pool("arbitrum", "u", ARB_POOL, 0).model_copy(update={"price": 3_030.0})  # 100 bps off
    ok = pool("base", "a", BASE_POOL, 1)
    result = app.process(PART, [bad, ok], [0, 0])
    assert [r.index for r in result.rejected] == [0]
    assert "reserves imply price 3000" in result.rejected[0].reason
    assert "100.0 bps apart" in result.rejected[0].reason
    assert result.outputs == []  # the bad quote never entered the book
    assert app.watermark_ms(PART) == T0_MS + 1


def test_out_of_order_tick_does_not_replace_a_newer_quote() -> None:
    app = make()
    run(app, pool("arbitrum", "u", ARB_POOL, 1_000))
    run(app, pool("arbitrum", "u", (1_000.0, 2_000_000.0), 500))  # older: ignored
    assert app.stats.out_of_order == 1
    (opp,) = run(app, pool("base", "a", BASE_POOL, 1_100))
    assert opp.buy_price == 3000.0


def test_revoke_and_assign_start_empty() -> None:
    app = make()
    run(app, pool("arbitrum", "u", ARB_POOL, 0))
    app.revoke(PART)
    assert app.watermark_ms(PART) is None
    app.assign(PART)
    assert run(app, pool("base", "a", BASE_POOL, 100)) == []  # the Arbitrum quote is gone


def _simulated() -> tuple[list, list[MarketPrice]]:
    sim = MarketSimulator(3, symbols=6, users=0, dislocation_every_s=10.0)
    events = list(sim.events(duration_s=90, rate=500))
    reference = [m for m in events if isinstance(m, BridgeQuote | GasPrice)]
    return reference, [m for m in events if isinstance(m, MarketPrice)]


def test_outputs_do_not_depend_on_the_batching() -> None:
    reference, ticks = _simulated()

    def outputs(batch: int) -> list:
        app = make(reference=reference)
        found = []
        for i in range(0, len(ticks), batch):
            found += run(app, *ticks[i : i + batch])
        return found

    whole = outputs(len(ticks))
    assert len(whole) > 10  # the simulator's dislocations are found
    assert outputs(37) == whole
    for opp in whole:
        assert opp.expected_profit_usd >= ArbitrageConfig().min_profit_usd
        assert opp.spread_bps >= ArbitrageConfig().min_spread_bps
        assert opp.buy_chain != opp.sell_chain
        assert 0 < opp.score < 1
