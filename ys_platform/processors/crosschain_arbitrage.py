"""Cross-chain arbitrage: per symbol, buy on one chain's pool, bridge, sell on another chain's pool,
emitted to ``crosschain.arbitrage`` when it pays after pool fees, price impact, bridge and gas.

Inputs
------
* ``market.prices`` (partitioned, keyed by symbol): each partition keeps, per symbol, the latest
  quote of every *tradable on-chain venue* — a tick on a chain (not ``offchain``) whose depth is
  known: a constant-product pool's reserves, or else its ``liquidity_usd``. Left out, counted:

  - CEX ticks (``chain == "offchain"``): a CEX leg needs custody and deposit/withdrawal
    latencies, not a bridge quote; this processor prices only on-chain legs.
  - on-chain ticks without any depth (oracles: Chainlink, Pyth): a reference price, not a venue
    one can trade against, and with no depth there is no honest size.
  - stale ticks: event time more than ``stale_after_ms`` behind the partition watermark. A book
    quote that old is skipped as a counterpart too.
  - pool ticks whose ``price`` disagrees with ``reserve_quote / reserve_base`` by more than
    ``max_reserve_mismatch_bps`` are *rejected* (dead-lettered with the reason): sizing uses the
    reserves and the spread the price, so such a tick would emit nonsense.

* ``crosschain.events`` (broadcast: every worker reads it whole) — gas per chain and bridge
  quotes per (from chain, to chain, asset). They are joined **as of the tick's event time**
  (the latest quote not after it, and at most ``reference_max_age_ms`` older), not "latest
  known": the output then depends on the reference data and the partition's records, not on
  when the broadcast reader happened to see a quote relative to the price batch.

Evaluation: per tick, not per batch
-----------------------------------
The :class:`~ys_platform.streaming.app.StreamApp` contract asks that a partition's outputs be a
function of its record sequence whatever the batching (that is what makes restore by replay and
backfills exact). Evaluating "the symbols touched by the batch" at the end of each batch would
make the book an opportunity is priced on depend on where the batch was cut. So each tick is
evaluated as it is applied, and only the pairs it can change: the ticked venue against every
other fresh venue of its symbol (≈ 2 × venues checks). A cheap exact prefilter — spread, bridge,
gas, then "positive marginal profit after both pool fees and the bridge bps" — rejects the
common no-opportunity pair with a few float operations, so the full sizing
(:func:`~ys_platform.processing.arbitrage.evaluate_pair`) runs only on real dislocations.

Only pairs on *different* chains are evaluated by default: same-chain pool pairs are plain DEX
arbitrage, closed inside a block by MEV searchers before a stream processor could act
(``include_same_chain`` turns them on, priced without a bridge).

Output
------
``trade_size`` is in **base units** as the catalog contract says: the base bought on the buy
venue with the optimal USD input (the amount bridged and sold). ``score`` is the
liquidity-adjusted USD profit of :func:`~ys_platform.processing.arbitrage.evaluate_pair` mapped
into [0, 1) by s / (s + ``score_half_profit_usd``) (monotone, so the ranking is kept).
``detected_at`` is the triggering tick's event time, ``expires_at`` = detected_at + TTL, ``id`` a
uuid5 of the pair and detected_at: replaying the input reproduces the records byte for byte.
An opportunity is emitted when new, when its profit moved by more than ``min_profit_change``,
or when the last record is ``refresh_ms`` old (so a consumer's copy does not expire while the
opportunity is still live) — :class:`~ys_platform.processing.arbitrage.OpportunityTracker`.

Restore
-------
``restore_span_ms`` = staleness bound + TTL: replaying that much event time before the committed
watermark refills every quote still fresh there, and re-runs every tracker decision whose
record could still be live (replayed outputs are discarded). The books come back exactly, and
so does the fate of every opportunity that appeared within the span (never lost, never sent
twice). One that stayed live across the whole span restarts its de-dup from its first replayed
sighting, so its next "profit moved" or refresh record may come one step earlier or later.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from ys_platform.catalog.models import ArbitrageOpportunity as OpportunityRecord
from ys_platform.catalog.models import BridgeQuote, GasPrice, MarketPrice, Message
from ys_platform.catalog.topics import consumer_group
from ys_platform.processing.amm import UNISWAP_V2_FEE, get_amount_out
from ys_platform.processing.arbitrage import (
    BPS,
    DEFAULT_MAX_LIQUIDITY_FRACTION,
    DEFAULT_MAX_TRADE_USD,
    DEFAULT_OPPORTUNITY_TTL_MS,
    NO_BRIDGE,
    ArbitrageOpportunity,
    BridgeCost,
    OpportunityTracker,
    VenueQuote,
    evaluate_pair,
)
from ys_platform.streaming.app import ProcessResult, Rejected, TopicPartitionId
from ys_platform.streaming.keyed import PartitionKeyedApp

GROUP = consumer_group("crosschain-arbitrage-processor")

OFFCHAIN = "offchain"
"""The ``chain`` of a centralised exchange's tick (the simulator's and the feeds' convention)."""

ID_NAMESPACE = uuid.uuid5(
    uuid.NAMESPACE_URL, "https://yieldsensei/ys-platform/crosschain.arbitrage"
)
"""Namespace of the deterministic opportunity ids (any fixed UUID would do; it never changes)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class ArbitrageConfig:
    min_profit_usd: float = 10.0
    """Net of every modelled cost; below ~$10 the unmodelled risks (the price moving during the
    bridge's minutes of latency, a reverted transaction) eat the edge."""
    min_spread_bps: float = 30.0
    """Gross spread between the quoted prices. Two 0.3 % pool fees alone cost 60 bps, so nothing
    below 30 bps can pay even on cheaper pools; feeds agree to a few bps, so this drops the
    noise pairs before any lookup."""
    stale_after_ms: int = 30_000
    """A quote this far behind the partition watermark is no longer the venue's price (the
    staleness bound of price consolidation)."""
    ttl_ms: int = DEFAULT_OPPORTUNITY_TTL_MS
    """``expires_at`` = ``detected_at`` + TTL; a pair not seen profitable for a TTL is gone."""
    min_profit_change: float = 0.25
    """Re-emit a live opportunity when its profit moved by more than a quarter since its last
    record. Evaluated per tick, a profit near the fees moves ~10 % from one pool tick's noise
    (a few bps on a 100-200 bps edge): the library's 10 % default re-sent a simulated
    dislocation about once a second, 25 % a few times over its life as it decays."""
    refresh_ms: int | None = DEFAULT_OPPORTUNITY_TTL_MS // 2
    """Re-emit a live opportunity this long after its last record (half the TTL: the consumer's
    copy is renewed well before its ``expires_at``); None: never refresh."""
    reference_max_age_ms: int = 10 * 60_000
    """Gas or bridge quotes older than this (before the tick) are not used: ten minutes, the
    broadcast lookback, so a long-running worker sees what a freshly started one would."""
    max_reserve_mismatch_bps: float = 50.0
    """A pool tick whose price and reserves disagree by more is rejected: above rounding and a
    post-fee quote (30 bps on a 0.3 % pool), below the 60 bps two pool fees cost."""
    default_pool_fee: float = UNISWAP_V2_FEE
    venue_fees: Mapping[str, float] = field(default_factory=dict)
    """Swap fee by venue name (fraction of the input) when it differs from the default."""
    include_same_chain: bool = False
    max_trade_usd: float = DEFAULT_MAX_TRADE_USD
    max_liquidity_fraction: float = DEFAULT_MAX_LIQUIDITY_FRACTION
    score_half_profit_usd: float = 100.0
    """The liquidity-adjusted profit scored 0.5: a $100 risk-adjusted edge is a good one."""

    def __post_init__(self) -> None:
        for name in ("stale_after_ms", "ttl_ms", "reference_max_age_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.refresh_ms is not None and self.refresh_ms <= 0:
            raise ValueError("refresh_ms must be positive (or None)")
        if self.score_half_profit_usd <= 0:
            raise ValueError("score_half_profit_usd must be positive")
        if self.min_spread_bps < 0:
            raise ValueError("min_spread_bps must not be negative (a spread is sell over buy)")


@dataclass
class ArbitrageStats:
    """What happened to the ticks and pairs, for metrics and tests (not part of the state)."""

    ticks: int = 0
    offchain: int = 0
    no_depth: int = 0
    stale: int = 0
    out_of_order: int = 0
    rejected: int = 0
    pairs: int = 0
    """Ordered pairs with a higher sell than buy price, on chains the config allows."""
    below_spread: int = 0
    missing_bridge: int = 0
    missing_gas: int = 0
    unprofitable: int = 0
    """Above the spread threshold but not above ``min_profit_usd`` after all costs."""
    duplicate: int = 0
    emitted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class _Quote:
    """A venue's latest tick, as the evaluation needs it."""

    ts_ms: int
    chain: str
    venue: str
    price: float
    marginal: float
    """The price the first unit trades at: reserve_quote / reserve_base, or the quoted price."""
    fee: float
    reserve_base: float | None
    reserve_quote: float | None
    liquidity_usd: float | None

    def venue_quote(self, gas_usd: float) -> VenueQuote:
        return VenueQuote(
            self.chain,
            self.venue,
            self.price,
            fee=self.fee,
            gas_usd=gas_usd,
            reserve_base=self.reserve_base,
            reserve_quote=self.reserve_quote,
            liquidity_usd=self.liquidity_usd,
        )


class _AsOf:
    """A time series of reference values, looked up as of an event time."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.values: list[object] = []

    def add(self, ts_ms: int, value: object, retention_ms: int) -> None:
        times = self.times
        if not times or ts_ms >= times[-1]:  # the common case: quotes arrive in time order
            times.append(ts_ms)
            self.values.append(value)
        else:
            at = bisect_right(times, ts_ms)
            times.insert(at, ts_ms)
            self.values.insert(at, value)
        # Keep the last value at or before the cutoff: it is still the one in force there.
        cutoff = times[-1] - retention_ms
        drop = bisect_right(times, cutoff) - 1
        if drop > 0:
            del times[:drop]
            del self.values[:drop]

    def at(self, ts_ms: int, max_age_ms: int) -> object | None:
        i = bisect_right(self.times, ts_ms) - 1
        if i < 0 or ts_ms - self.times[i] > max_age_ms:
            return None
        return self.values[i]


class _PartitionState:
    __slots__ = ("books", "tracker", "watermark_ms")

    def __init__(self, config: ArbitrageConfig) -> None:
        self.books: dict[str, dict[tuple[str, str], _Quote]] = {}
        self.tracker = OpportunityTracker(
            config.ttl_ms, config.min_profit_change, config.refresh_ms
        )
        self.watermark_ms: int | None = None


def opportunity_id(opportunity: ArbitrageOpportunity, detected_ms: int) -> str:
    """uuid5 of the pair and the detection time: the same input always yields the same id."""
    return str(uuid.uuid5(ID_NAMESPACE, "|".join((*opportunity.key, str(detected_ms)))))


class CrosschainArbitrageProcessor(PartitionKeyedApp["_PartitionState"]):
    """The ``crosschain-arbitrage-processor`` logic: quote books and a de-dup tracker per
    ``market.prices`` partition, gas and bridge quotes shared by all (see the module doc)."""

    group = GROUP
    broadcast_inputs: tuple[str, ...] = GROUP.broadcast_inputs

    def __init__(self, config: ArbitrageConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ArbitrageConfig()
        self.broadcast_lookback_ms = cfg.reference_max_age_ms
        # Replay rebuilds the book (every quote still fresh at the watermark) and the tracker
        # (every decision within a TTL of it): see "Restore" in the module docstring.
        self.restore_span_ms = cfg.stale_after_ms + cfg.ttl_ms
        self.stats = ArbitrageStats()
        self._gas: dict[str, _AsOf] = {}
        self._bridges: dict[tuple[str, str, str], _AsOf] = {}
        self._ttl = timedelta(milliseconds=cfg.ttl_ms)
        self._max_mismatch = cfg.max_reserve_mismatch_bps / BPS

    # --- reference data ----------------------------------------------------------------------
    def on_broadcast(self, messages: Sequence[Message]) -> None:
        # Kept twice the max age behind the newest quote: a price stream lagging the reference
        # stream by up to one max age still finds the quote that was in force at its ticks.
        retention = 2 * self.config.reference_max_age_ms
        for m in messages:
            if isinstance(m, GasPrice):
                series = self._gas.get(m.chain)
                if series is None:
                    series = self._gas[m.chain] = _AsOf()
                series.add((m.ts - _EPOCH) // _MS, m.gas_usd, retention)
            elif isinstance(m, BridgeQuote):
                key = (m.from_chain, m.to_chain, m.asset)
                series = self._bridges.get(key)
                if series is None:
                    series = self._bridges[key] = _AsOf()
                cost = BridgeCost(fixed_usd=m.fee_usd, bps=m.fee_bps)
                series.add((m.ts - _EPOCH) // _MS, cost, retention)

    def gas_at(self, chain: str, ts_ms: int) -> float | None:
        series = self._gas.get(chain)
        value = None if series is None else series.at(ts_ms, self.config.reference_max_age_ms)
        return value  # type: ignore[return-value]

    def bridge_at(
        self, from_chain: str, to_chain: str, asset: str, ts_ms: int
    ) -> BridgeCost | None:
        series = self._bridges.get((from_chain, to_chain, asset))
        value = None if series is None else series.at(ts_ms, self.config.reference_max_age_ms)
        return value  # type: ignore[return-value]

    # --- partitions --------------------------------------------------------------------------
    def new_state(self) -> _PartitionState:
        return _PartitionState(self.config)

    # --- the stream --------------------------------------------------------------------------
    def process(
        self,
        partition: TopicPartitionId,
        messages: Sequence[Message],
        timestamps_ms: Sequence[int],
    ) -> ProcessResult:
        state = self.state(partition)
        outputs: list[Message] = []
        rejected: list[Rejected] = []
        if not messages:
            return ProcessResult(outputs, rejected)
        cfg, stats = self.config, self.stats
        stale_after, fees, default_fee = cfg.stale_after_ms, cfg.venue_fees, cfg.default_pool_fee
        books = state.books
        watermark = -math.inf if state.watermark_ms is None else state.watermark_ms
        offchain = no_depth = stale = out_of_order = 0
        for index, m in enumerate(messages):
            if not isinstance(m, MarketPrice):  # the group's only partitioned input
                continue
            rb, rq = m.reserve_base, m.reserve_quote
            if rb is not None and rq is not None:  # the model admits both or neither
                marginal = rq / rb
                if abs(m.price / marginal - 1.0) > self._max_mismatch:
                    rejected.append(Rejected(index, self._mismatch_reason(m, marginal)))
                    continue
            else:
                marginal = m.price
            ts = (m.ts - _EPOCH) // _MS
            if ts > watermark:
                watermark = ts
            if m.chain == OFFCHAIN:
                offchain += 1
                continue
            if rb is None and m.liquidity_usd is None:
                no_depth += 1
                continue
            if ts < watermark - stale_after:
                stale += 1
                continue
            book = books.get(m.symbol)
            if book is None:
                book = books[m.symbol] = {}
            key = (m.chain, m.venue)
            previous = book.get(key)
            if previous is not None and ts < previous.ts_ms:
                out_of_order += 1  # an older tick of a venue never overwrites a newer one
                continue
            quote = _Quote(
                ts, m.chain, m.venue, m.price, marginal, fees.get(m.venue, default_fee),
                rb, rq, m.liquidity_usd,
            )  # fmt: skip
            book[key] = quote
            if len(book) > 1:
                self._evaluate(state, m, quote, book, int(watermark), outputs)
        state.watermark_ms = None if watermark == -math.inf else int(watermark)
        if state.watermark_ms is not None:
            state.tracker.expire(state.watermark_ms)
        stats.ticks += len(messages)
        stats.offchain += offchain
        stats.no_depth += no_depth
        stats.stale += stale
        stats.out_of_order += out_of_order
        stats.rejected += len(rejected)
        stats.emitted += len(outputs)
        return ProcessResult(outputs, rejected)

    def _mismatch_reason(self, m: MarketPrice, marginal: float) -> str:
        apart = abs(m.price / marginal - 1.0) * BPS
        return (
            f"pool tick inconsistent: reserves imply price {marginal:.10g} but price is "
            f"{m.price:.10g} ({apart:.1f} bps apart, more than "
            f"{self.config.max_reserve_mismatch_bps:g})"
        )

    def _evaluate(
        self,
        state: _PartitionState,
        tick: MarketPrice,
        quote: _Quote,
        book: dict[tuple[str, str], _Quote],
        watermark: int,
        outputs: list[Message],
    ) -> None:
        """Every pair of ``quote`` with another fresh venue of its symbol; append what to emit."""
        cfg, stats = self.config, self.stats
        fresh_from = watermark - cfg.stale_after_ms
        ts = quote.ts_ms
        asset = tick.base
        for other in book.values():
            if other is quote or other.ts_ms < fresh_from:
                continue
            same_chain = other.chain == quote.chain
            if same_chain and not cfg.include_same_chain:
                continue
            if quote.price < other.price:
                buy, sell = quote, other
            elif quote.price > other.price:
                buy, sell = other, quote
            else:
                continue
            stats.pairs += 1
            if (sell.price - buy.price) / buy.price * BPS < cfg.min_spread_bps:
                stats.below_spread += 1
                continue
            if same_chain:
                bridge = NO_BRIDGE
            else:
                found = self.bridge_at(buy.chain, sell.chain, asset, ts)
                if found is None:
                    stats.missing_bridge += 1
                    continue
                bridge = found
            buy_gas = self.gas_at(buy.chain, ts)
            sell_gas = self.gas_at(sell.chain, ts)
            if buy_gas is None or sell_gas is None:
                stats.missing_gas += 1
                continue
            # Exact prefilter: the profit is concave in the size, so it is positive for some size
            # only if the first unit makes money after both pool fees and the bridge bps.
            k = bridge.bps / BPS
            if (1.0 - buy.fee) * (1.0 - sell.fee) * sell.marginal <= (1.0 + k) * buy.marginal:
                stats.unprofitable += 1
                continue
            opportunity = evaluate_pair(
                tick.symbol,
                buy.venue_quote(buy_gas),
                sell.venue_quote(sell_gas),
                bridge,
                cfg.max_trade_usd,
                cfg.max_liquidity_fraction,
            )
            if (
                opportunity.trade_size_usd <= 0
                or opportunity.expected_profit_usd < cfg.min_profit_usd
            ):
                stats.unprofitable += 1
                continue
            if not state.tracker.observe(opportunity.key, opportunity.expected_profit_usd, ts):
                stats.duplicate += 1
                continue
            outputs.append(self.to_record(opportunity, buy, tick.ts, ts))

    def to_record(
        self, opportunity: ArbitrageOpportunity, buy: _Quote, detected_at: datetime, ts_ms: int
    ) -> OpportunityRecord:
        """The ``crosschain.arbitrage`` record of a sized opportunity detected at ``ts_ms``."""
        size = opportunity.trade_size_usd
        if buy.reserve_base is not None and buy.reserve_quote is not None:
            base_units = float(get_amount_out(size, buy.reserve_quote, buy.reserve_base, buy.fee))
        else:
            base_units = size * (1.0 - buy.fee) / buy.price
        adjusted = max(opportunity.score, 0.0)
        return OpportunityRecord(
            id=opportunity_id(opportunity, ts_ms),
            symbol=opportunity.symbol,
            buy_chain=opportunity.buy_chain,
            buy_venue=opportunity.buy_venue,
            buy_price=opportunity.buy_price,
            sell_chain=opportunity.sell_chain,
            sell_venue=opportunity.sell_venue,
            sell_price=opportunity.sell_price,
            spread_bps=opportunity.spread_bps,
            trade_size=base_units,
            expected_profit_usd=opportunity.expected_profit_usd,
            score=adjusted / (adjusted + self.config.score_half_profit_usd),
            detected_at=detected_at,
            expires_at=detected_at + self._ttl,
        )
