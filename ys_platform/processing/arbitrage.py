"""Cross-chain / cross-venue arbitrage: spread, sizing, expected profit, score, de-duplication.

An opportunity buys the base asset on one venue and sells it on another (possibly on another
chain, through a bridge). Prices are USD per base unit; pool reserves are (base, quote) with the
quote worth 1 USD (a stablecoin pair); fees are fractions of the input.

Costs: each venue's swap fee, a bridge fee (``fixed_usd`` + ``bps`` of the trade's notional, the
USD put in) when the chains differ, and the gas of the swap on each chain.

Sizing, by what is known about the venues:

* both are constant-product pools with reserves → the two-pool closed form
  (``amm.optimal_two_pool_quote_in``), the bridge bps folded in as a proportional cost;
* one is a pool → the one-sided closed form against the other venue's price, that price adjusted
  for its fee and the bridge bps;
* neither → no price impact model: the notional is capped at ``max_liquidity_fraction`` of the
  thinner venue's liquidity (and ``max_trade_usd``).

Fixed costs (bridge fixed fee, gas) do not move the optimal size, only whether it pays.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ys_platform.processing.amm import (
    UNISWAP_V2_FEE,
    get_amount_out,
    optimal_base_in_against_price,
    optimal_quote_in_against_price,
    optimal_two_pool_quote_in,
    two_pool_round_trip,
)

BPS = 10_000.0

DEFAULT_MAX_LIQUIDITY_FRACTION = 0.001
"""Without reserves, trade at most 0.1 % of the thinner venue's liquidity: on a constant-product
pool that is 0.2 % of its quote reserve, ≈ 20 bps of slippage — the size of spreads worth
trading, so a larger blind trade would likely eat the opportunity."""

DEFAULT_MAX_TRADE_USD = 1_000_000.0
"""A hard cap on any one trade's notional (capital at risk in flight across a bridge)."""

UNKNOWN_LIQUIDITY_FACTOR = 0.5
"""Score multiplier when venue depth is unknown: as if the trade were as large as the market."""


def spread_bps(buy_price: float, sell_price: float) -> float:
    """(sell − buy) / buy in basis points: return on the capital put in, before costs."""
    if buy_price <= 0:
        raise ValueError("buy_price must be positive")
    return (sell_price - buy_price) / buy_price * BPS


@dataclass(frozen=True, slots=True)
class BridgeCost:
    """Cost of moving the base between two chains."""

    fixed_usd: float = 0.0
    bps: float = 0.0

    def fee_usd(self, notional_usd: float) -> float:
        """Fixed fee plus ``bps`` of the notional."""
        return self.fixed_usd + self.bps / BPS * notional_usd


NO_BRIDGE = BridgeCost()


def expected_profit_usd(
    notional_usd: float,
    buy_price: float,
    sell_price: float,
    buy_fee: float = UNISWAP_V2_FEE,
    sell_fee: float = UNISWAP_V2_FEE,
    bridge: BridgeCost = NO_BRIDGE,
    buy_gas_usd: float = 0.0,
    sell_gas_usd: float = 0.0,
) -> float:
    """Profit of a round trip of ``notional_usd`` at fixed prices (no price impact).

    units = notional·(1 − buy_fee)/buy_price; proceeds = units·sell_price·(1 − sell_fee);
    profit = proceeds − notional − bridge fee(notional) − gas on both chains.
    """
    units = notional_usd * (1.0 - buy_fee) / buy_price
    proceeds = units * sell_price * (1.0 - sell_fee)
    return proceeds - notional_usd - bridge.fee_usd(notional_usd) - buy_gas_usd - sell_gas_usd


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """The price of a symbol on one venue of one chain, with what is known of its depth."""

    chain: str
    venue: str
    price_usd: float
    fee: float = UNISWAP_V2_FEE
    gas_usd: float = 0.0
    """Gas of one swap on this chain, in USD."""
    reserve_base: float | None = None
    reserve_quote: float | None = None
    liquidity_usd: float | None = None
    """Depth when reserves are unknown (e.g. a pool's TVL)."""

    @property
    def has_reserves(self) -> bool:
        return self.reserve_base is not None and self.reserve_quote is not None

    @property
    def depth_usd(self) -> float | None:
        """Pool TVL (2 × quote reserve) when reserves are known, else ``liquidity_usd``."""
        if self.has_reserves:
            return 2.0 * float(self.reserve_quote)  # type: ignore[arg-type]
        return self.liquidity_usd


@dataclass(frozen=True, slots=True)
class ArbitrageOpportunity:
    """A sized buy-here-sell-there trade (one ``crosschain.arbitrage`` record, minus identity)."""

    symbol: str
    buy_chain: str
    buy_venue: str
    sell_chain: str
    sell_venue: str
    buy_price: float
    sell_price: float
    spread_bps: float
    trade_size_usd: float
    gross_profit_usd: float
    """Proceeds − notional, after swap fees and price impact."""
    costs_usd: float
    """Bridge fee and gas on both chains."""
    expected_profit_usd: float
    score: float
    sizing: str
    """How the size was found: two_pool, pool_buy, pool_sell or liquidity_cap."""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity for de-duplication: (symbol, buy chain, buy venue, sell chain, sell venue)."""
        return (self.symbol, self.buy_chain, self.buy_venue, self.sell_chain, self.sell_venue)


def liquidity_adjusted_score(
    expected_profit: float, trade_size_usd: float, depth_usd: float | None
) -> float:
    """Expected profit × L/(L + size), L = the thinner venue's depth.

    The factor is the chance-like discount for a trade that is large against the market: ≈1 for
    a trade small against the depth, ½ when it equals it (prices move, others race for it).
    Unknown depth counts as ½. Monotone: up with profit and depth, down with size.
    """
    if depth_usd is None or depth_usd <= 0:
        return expected_profit * UNKNOWN_LIQUIDITY_FACTOR
    return expected_profit * depth_usd / (depth_usd + trade_size_usd)


def evaluate_pair(
    symbol: str,
    buy: VenueQuote,
    sell: VenueQuote,
    bridge: BridgeCost = NO_BRIDGE,
    max_trade_usd: float = DEFAULT_MAX_TRADE_USD,
    max_liquidity_fraction: float = DEFAULT_MAX_LIQUIDITY_FRACTION,
) -> ArbitrageOpportunity:
    """Size and price buying on ``buy`` and selling on ``sell`` (see the module docstring)."""
    k = bridge.bps / BPS  # proportional bridge cost per USD of notional
    if buy.has_reserves and sell.has_reserves:
        pool_a = (float(buy.reserve_base), float(buy.reserve_quote))  # type: ignore[arg-type]
        pool_b = (float(sell.reserve_base), float(sell.reserve_quote))  # type: ignore[arg-type]
        size, _ = optimal_two_pool_quote_in(pool_a, pool_b, buy.fee, sell.fee, k)
        size = min(size, max_trade_usd)  # the profit is concave: the cap is the capped optimum
        gross = float(two_pool_round_trip(size, pool_a, pool_b, buy.fee, sell.fee)) - size
        sizing = "two_pool"
    elif buy.has_reserves:
        x, y = float(buy.reserve_base), float(buy.reserve_quote)  # type: ignore[arg-type]
        sell_net = sell.price_usd * (1.0 - sell.fee)  # USD received per base unit sold
        size = optimal_quote_in_against_price(x, y, sell_net / (1.0 + k), buy.fee)
        size = min(size, max_trade_usd, _liquidity_cap(sell, max_liquidity_fraction))
        gross = float(get_amount_out(size, y, x, buy.fee)) * sell_net - size
        sizing = "pool_buy"
    elif sell.has_reserves:
        x, y = float(sell.reserve_base), float(sell.reserve_quote)  # type: ignore[arg-type]
        cost_per_base = buy.price_usd / (1.0 - buy.fee)  # USD spent per base unit bought
        base_in = optimal_base_in_against_price(x, y, cost_per_base * (1.0 + k), sell.fee)
        size = min(
            base_in * cost_per_base, max_trade_usd, _liquidity_cap(buy, max_liquidity_fraction)
        )
        gross = float(get_amount_out(size / cost_per_base, x, y, sell.fee)) - size
        sizing = "pool_sell"
    else:
        size = min(
            max_trade_usd,
            _liquidity_cap(buy, max_liquidity_fraction),
            _liquidity_cap(sell, max_liquidity_fraction),
        )
        gross = expected_profit_usd(size, buy.price_usd, sell.price_usd, buy.fee, sell.fee)
        sizing = "liquidity_cap"
    costs = bridge.fee_usd(size) + buy.gas_usd + sell.gas_usd
    profit = gross - costs
    depths = [d for d in (buy.depth_usd, sell.depth_usd) if d is not None]
    return ArbitrageOpportunity(
        symbol=symbol,
        buy_chain=buy.chain,
        buy_venue=buy.venue,
        sell_chain=sell.chain,
        sell_venue=sell.venue,
        buy_price=buy.price_usd,
        sell_price=sell.price_usd,
        spread_bps=spread_bps(buy.price_usd, sell.price_usd),
        trade_size_usd=size,
        gross_profit_usd=gross,
        costs_usd=costs,
        expected_profit_usd=profit,
        score=liquidity_adjusted_score(profit, size, min(depths) if depths else None),
        sizing=sizing,
    )


def find_opportunities(
    symbol: str,
    quotes: Iterable[VenueQuote],
    bridges: Mapping[tuple[str, str], BridgeCost],
    min_profit_usd: float = 0.0,
    min_spread_bps: float = 0.0,
    max_trade_usd: float = DEFAULT_MAX_TRADE_USD,
    max_liquidity_fraction: float = DEFAULT_MAX_LIQUIDITY_FRACTION,
) -> list[ArbitrageOpportunity]:
    """Every (buy, sell) venue pair of a symbol above the thresholds, best score first.

    ``bridges`` maps (from chain, to chain) to its cost; a pair across chains without a bridge
    is skipped (there is no way to move the asset). Same chain: no bridge.
    """
    quotes = list(quotes)
    found = []
    for buy in quotes:
        for sell in quotes:
            if buy is sell or sell.price_usd <= buy.price_usd:
                continue
            if spread_bps(buy.price_usd, sell.price_usd) < min_spread_bps:
                continue
            if buy.chain == sell.chain:
                bridge = NO_BRIDGE
            elif (buy.chain, sell.chain) in bridges:
                bridge = bridges[(buy.chain, sell.chain)]
            else:
                continue
            opp = evaluate_pair(symbol, buy, sell, bridge, max_trade_usd, max_liquidity_fraction)
            if opp.trade_size_usd > 0 and opp.expected_profit_usd > min_profit_usd:
                found.append(opp)
    found.sort(key=lambda o: (-o.score, o.key))
    return found


def _liquidity_cap(venue: VenueQuote, fraction: float) -> float:
    depth = venue.depth_usd
    return math.inf if depth is None else fraction * depth


# De-duplication and expiry ----------------------------------------------------------------------

DEFAULT_OPPORTUNITY_TTL_MS = 60_000
"""An opportunity not seen for a minute is gone (one analytics window)."""

DEFAULT_MIN_PROFIT_CHANGE = 0.10
"""Re-emit a persisting opportunity when its expected profit moved by more than 10 %."""


class OpportunityTracker:
    """Decides which opportunities to emit: new ones, changed ones, not the same one again.

    ``observe`` returns True for an opportunity key not currently live, or one whose profit moved
    by more than ``min_profit_change`` (relative) since it was last emitted, or (with
    ``refresh_ms``) one last emitted that long ago — so a consumer's copy never silently
    outlives its ``expires_at``. A key expires ``ttl_ms`` after it was last observed. Times are
    event times supplied by the caller, so the decisions replay deterministically.
    """

    def __init__(
        self,
        ttl_ms: int = DEFAULT_OPPORTUNITY_TTL_MS,
        min_profit_change: float = DEFAULT_MIN_PROFIT_CHANGE,
        refresh_ms: int | None = None,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.min_profit_change = min_profit_change
        self.refresh_ms = refresh_ms
        # key -> [profit at last emission, last emission time, last observation time]
        self._live: dict[Hashable, list[float]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def observe(self, key: Hashable, profit_usd: float, now_ms: int) -> bool:
        """Record a sighting; True when it should be emitted."""
        entry = self._live.get(key)
        if entry is not None and now_ms - entry[2] > self.ttl_ms:
            entry = None  # it had expired
        if entry is None:
            self._live[key] = [profit_usd, now_ms, now_ms]
            return True
        entry[2] = max(entry[2], now_ms)
        emitted_profit, emitted_at = entry[0], entry[1]
        changed = abs(profit_usd - emitted_profit) > self.min_profit_change * abs(emitted_profit)
        stale = self.refresh_ms is not None and now_ms - emitted_at >= self.refresh_ms
        if changed or stale:
            entry[0], entry[1] = profit_usd, now_ms
            return True
        return False

    def expire(self, now_ms: int) -> list[Hashable]:
        """Drop and return the keys not observed for more than ``ttl_ms``."""
        gone = [k for k, e in self._live.items() if now_ms - e[2] > self.ttl_ms]
        for k in gone:
            del self._live[k]
        return gone

    def to_state(self) -> list[list[Any]]:
        """JSON-able snapshot: [key as list, emitted profit, emitted at, last seen]."""
        return [[list(k) if isinstance(k, tuple) else k, *e] for k, e in self._live.items()]

    @classmethod
    def from_state(
        cls,
        state: Iterable[list[Any]],
        ttl_ms: int = DEFAULT_OPPORTUNITY_TTL_MS,
        min_profit_change: float = DEFAULT_MIN_PROFIT_CHANGE,
        refresh_ms: int | None = None,
    ) -> OpportunityTracker:
        """Rebuild from :meth:`to_state` output (list keys become tuples again)."""
        self = cls(ttl_ms, min_profit_change, refresh_ms)
        for key, profit, emitted_at, seen_at in state:
            self._live[tuple(key) if isinstance(key, list) else key] = [profit, emitted_at, seen_at]
        return self
