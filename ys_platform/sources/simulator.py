"""A deterministic, seeded DeFi market simulator: catalog messages in event-time order.

Pure generation (no Kafka, no clock): the same seed and parameters give byte-identical encoded
output; event time starts at ``start_ms`` (default :data:`DEFAULT_START_MS`, a fixed instant) and
advances only with the generated stream. :mod:`ys_platform.sources.publish` produces it to Kafka.

What it models
--------------
* **market.prices** — each symbol ``XXX/USD`` has a hidden mid price following a geometric random
  walk (per-symbol annualised volatility, scaled by ``volatility_scale`` so a demo lasting minutes
  sees the moves of hours); stablecoins stay on their peg with small noise. A tick comes from one
  *feed*: a source on a chain. CEX sources (binance, coinbase, kraken, ...) quote ``offchain``
  with a ``volume``; oracle sources (chainlink, pyth) quote on every chain; DEX sources
  (uniswap-v2, sushiswap, ...) are constant-product pools on chains and carry ``reserve_base``,
  ``reserve_quote`` (``reserve_quote / reserve_base == price``, ``k`` fixed per pool) and
  ``liquidity_usd`` (both sides). Majors tick more often than the long tail (Zipf weights).
* **Anomalies**, scheduled in event time (so independently of the message rate) by their own
  random streams and recorded in :attr:`MarketSimulator.injected` / :attr:`.anomalies`:
  cross-chain *dislocations* (one DEX pool of one symbol on one chain off by 0.5–3 % for
  20–90 s, decaying linearly to zero: what arbitrage should find), *stale* sources (a source
  stops ticking a symbol for 45–300 s: longer than the 30 s staleness bound of consolidation),
  *outliers* (one tick 10–50 % off), *gas spikes* (a chain's gas ×3–10, decaying) and
  *liquidations* (a keeper liquidates users whose health factor fell below 1).
* **crosschain.events** — :class:`GasPrice` per chain (typical swap cost in USD) and
  :class:`BridgeQuote` between chain pairs: ``fee_usd`` is the fixed part (gas at both ends plus
  the relayer), ``fee_bps`` the part proportional to the notional (the arbitrage processor's
  ``BridgeCost(fixed_usd, bps)``). While a dislocation is on, half the quotes are for its route.
* **users.portfolios** — ``users`` lending users, each on one market (protocol, chain) since a
  health factor is per market: collateral (liquidation threshold 0.75–0.85), debt, sometimes a
  Lido stake. About a fifth have no debt, a fifth sit close to liquidation (health factor
  1.02–1.28 at start), the rest are comfortable (1.5–4). Every user gets a snapshot at the start
  of the stream, then users are snapshotted round-robin.
* **defi.transactions** — deposits, withdrawals, borrows, repays and swaps of those users,
  applied to their positions (never withdrawing or repaying more than held, never borrowing or
  withdrawing below the user's target health factor), plus liquidations (Aave rules: close
  factor 50 %, 5 % bonus) emitted as a ``liquidation`` (collateral seized) then a ``repay``.
* **defi.protocols / defi.tokens** — a fixed reference set (:meth:`reference_messages`).

The mix of :meth:`MarketSimulator.events` (:data:`DEFAULT_MIX`): 85 % market.prices, 5 %
crosschain.events, 5 % defi.transactions, 5 % users.portfolios — exact over any long stretch,
because each message goes to the topic furthest behind its share (the initial snapshots count).

Timestamps are whole milliseconds (the wire precision); amounts are token units, values USD.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from ys_platform.catalog.models import (
    BridgeQuote,
    CrosschainEvent,
    DefiProtocol,
    DefiToken,
    DefiTransaction,
    GasPrice,
    MarketPrice,
    Message,
    Position,
    UserPortfolio,
)

__all__ = [
    "CHAINS",
    "DEFAULT_MIX",
    "DEFAULT_START_MS",
    "OFFCHAIN",
    "SOURCES",
    "Anomaly",
    "MarketSimulator",
    "SourceSpec",
]

DEFAULT_START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: a fixed default start so output never depends on the wall clock."""

PRICES = "market.prices"
CROSSCHAIN = "crosschain.events"
TRANSACTIONS = "defi.transactions"
PORTFOLIOS = "users.portfolios"

DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {PRICES: 0.85, CROSSCHAIN: 0.05, TRANSACTIONS: 0.05, PORTFOLIOS: 0.05}
)
"""Share of each topic in :meth:`MarketSimulator.events` (sums to 1)."""

CHAINS: tuple[str, ...] = ("ethereum", "arbitrum", "optimism", "base", "polygon")
OFFCHAIN = "offchain"
"""The ``chain`` of a centralised exchange's tick: it settles on no chain."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_YEAR_MS = 365.25 * 86_400_000
_QUOTE = "USD"

# Ticks per chunk of the vectorised price engine: large enough that numpy's per-call overhead is
# amortised, small enough (a few MB of arrays) to stay in cache and keep generation lazy.
_TICK_CHUNK = 65_536
# Messages per chunk of events(): the schedule of a chunk is drawn at once, then walked.
_EVENT_CHUNK = 4_096
# Upper bound of one events() chunk in event time, so a slow stream does not pre-draw hours.
_MAX_EVENT_CHUNK_S = 60.0


# --- static reference data -----------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    ticker: str
    name: str
    price_usd: float
    annual_vol: float | None
    """Annualised volatility of log returns; None for a stablecoin held on its peg."""
    decimals: int
    blurb: str


# Roughly the market's order of magnitude in 2025; a simulation, not live figures. The order is
# the liquidity rank (tick frequency, pool depth, volume), so the first symbols are the majors.
_ASSETS: tuple[_Asset, ...] = (
    _Asset("ETH", "Ether", 3_000.0, 0.70, 18, "Ethereum's native asset, DeFi's main collateral"),
    _Asset("BTC", "Bitcoin", 60_000.0, 0.55, 8, "the first cryptocurrency, wrapped for DeFi"),
    _Asset("USDC", "USD Coin", 1.0, None, 6, "a fiat-backed dollar stablecoin issued by Circle"),
    _Asset("USDT", "Tether USD", 1.0, None, 6, "the largest dollar stablecoin by supply"),
    _Asset("SOL", "Solana", 150.0, 0.90, 9, "the native asset of the Solana layer-1 network"),
    _Asset("DAI", "Dai", 1.0, None, 18, "a crypto-backed dollar stablecoin of MakerDAO"),
    _Asset("LINK", "Chainlink", 14.0, 0.90, 18, "the token paying Chainlink oracle node operators"),
    _Asset("BNB", "BNB", 580.0, 0.60, 18, "the native asset of BNB Chain"),
    _Asset("AAVE", "Aave", 150.0, 1.00, 18, "the governance and safety-module token of Aave"),
    _Asset("UNI", "Uniswap", 9.0, 0.95, 18, "the governance token of Uniswap"),
    _Asset("ARB", "Arbitrum", 0.8, 1.00, 18, "the governance token of the Arbitrum rollup DAO"),
    _Asset("OP", "Optimism", 1.8, 1.00, 18, "the governance token of the Optimism Collective"),
    _Asset("LDO", "Lido DAO", 1.9, 1.10, 18, "the governance token of the Lido liquid-staking DAO"),
    _Asset("MKR", "Maker", 2_000.0, 0.90, 18, "the governance token backing Maker's solvency"),
    _Asset("XRP", "XRP", 0.6, 0.80, 6, "the native asset of the XRP Ledger payments network"),
    _Asset("ADA", "Cardano", 0.45, 0.85, 6, "the native asset of the Cardano proof-of-stake chain"),
    _Asset("AVAX", "Avalanche", 30.0, 0.95, 18, "the native asset of the Avalanche network"),
    _Asset("DOGE", "Dogecoin", 0.12, 1.00, 8, "a proof-of-work meme currency"),
    _Asset("DOT", "Polkadot", 6.5, 0.85, 10, "the staking and governance asset of Polkadot"),
    _Asset("POL", "Polygon", 0.55, 0.90, 18, "the gas and staking token of the Polygon network"),
    _Asset("CRV", "Curve DAO", 0.35, 1.20, 18, "the vote-escrowed token directing Curve emissions"),
    _Asset("SNX", "Synthetix", 2.2, 1.10, 18, "the staked collateral behind Synthetix synths"),
    _Asset("COMP", "Compound", 55.0, 1.00, 18, "the governance token of Compound"),
    _Asset("GMX", "GMX", 25.0, 1.00, 18, "the fee-sharing token of the GMX perpetuals exchange"),
    _Asset("PEPE", "Pepe", 0.00001, 1.40, 18, "a meme token with no utility beyond speculation"),
    _Asset("SHIB", "Shiba Inu", 0.00002, 1.20, 18, "a dog-themed meme token with its own layer-2"),
    _Asset("ATOM", "Cosmos Hub", 7.0, 0.85, 6, "the staking asset securing the Cosmos Hub"),
    _Asset("NEAR", "NEAR Protocol", 5.0, 1.00, 24, "the native asset of the sharded NEAR Protocol"),
    _Asset("FIL", "Filecoin", 4.5, 1.00, 18, "the payment token of the Filecoin storage market"),
    _Asset("APT", "Aptos", 8.0, 1.00, 8, "the native asset of the Move-based Aptos chain"),
    _Asset("SUI", "Sui", 1.2, 1.10, 9, "the native asset of the object-centric Sui chain"),
    _Asset("INJ", "Injective", 25.0, 1.10, 18, "the asset of the Injective derivatives chain"),
    _Asset("RENDER", "Render", 7.0, 1.10, 18, "the payment token of the Render GPU network"),
    _Asset("IMX", "Immutable", 1.5, 1.10, 18, "the token of the Immutable gaming rollup"),
    _Asset("GRT", "The Graph", 0.2, 1.10, 18, "the indexer-staking token of The Graph network"),
    _Asset("RPL", "Rocket Pool", 20.0, 1.00, 18, "the node-operator bond token of Rocket Pool"),
    _Asset("1INCH", "1inch", 0.35, 1.10, 18, "the governance token of the 1inch swap aggregator"),
    _Asset("PENDLE", "Pendle", 4.0, 1.20, 18, "the governance token of the Pendle yield market"),
    _Asset("ENA", "Ethena", 0.5, 1.30, 18, "the governance token of Ethena's synthetic dollar"),
    _Asset("EIGEN", "EigenLayer", 3.0, 1.20, 18, "the staking token of EigenLayer restaking"),
)

# Aave v3's liquidation thresholds for the assets it lists (rounded); others draw one in range.
_LIQUIDATION_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {"ETH": 0.83, "BTC": 0.78, "USDC": 0.78, "USDT": 0.78, "DAI": 0.77, "LINK": 0.75, "AAVE": 0.76}
)
_LT_RANGE = (0.75, 0.85)
_COLLATERAL_ASSETS = frozenset(
    {"ETH", "BTC", "SOL", "LINK", "AAVE", "UNI", "ARB", "OP", "LDO", "MKR", "USDC", "DAI", "CRV"}
)
_STABLES = frozenset({"USDC", "USDT", "DAI"})


@dataclass(frozen=True)
class SourceSpec:
    """A price source: its kind decides which fields a tick carries and on which chains it is."""

    name: str
    kind: str  # "cex", "dex" or "oracle"
    chains: tuple[str, ...] | None = None
    """Chains it quotes on (None: every configured chain); a CEX quotes ``offchain``."""
    weight: float = 1.0
    """Relative tick frequency of each of its feeds."""


# In the order `sources=N` takes them: the default 5 are three CEXs, an oracle and a DEX on every
# chain. DEXs are constant-product (x·y = k) pools, so their reserves follow from the price.
SOURCES: tuple[SourceSpec, ...] = (
    # CEX feeds tick twice as often as one pool: one order book aggregates the whole market.
    SourceSpec("binance", "cex", (OFFCHAIN,), 2.0),
    SourceSpec("coinbase", "cex", (OFFCHAIN,), 2.0),
    SourceSpec("kraken", "cex", (OFFCHAIN,), 2.0),
    # Oracles update on deviation or heartbeat: half as often as a pool trades.
    SourceSpec("chainlink", "oracle", None, 0.5),
    SourceSpec("uniswap-v2", "dex", None, 1.0),
    SourceSpec("sushiswap", "dex", ("ethereum", "arbitrum", "polygon"), 1.0),
    SourceSpec("okx", "cex", (OFFCHAIN,), 2.0),
    SourceSpec("pyth", "oracle", None, 0.5),
    SourceSpec("aerodrome", "dex", ("base",), 1.0),
    SourceSpec("velodrome", "dex", ("optimism",), 1.0),
    SourceSpec("quickswap", "dex", ("polygon",), 1.0),
)
_CEX, _DEX, _ORACLE = 0, 1, 2
_KIND_CODES = {"cex": _CEX, "dex": _DEX, "oracle": _ORACLE}

# Per-tick noise of a feed around the mid (std-dev of the log price): venues agree to a few bps.
_FEED_NOISE = {_CEX: 0.0002, _DEX: 0.0005, _ORACLE: 0.0001}
# Std-dev of a stablecoin's log price around its peg.
_PEG_NOISE = 0.0003
# Depth of the deepest pool (ETH on Ethereum), USD; rank r gets 1/(r+1) of it, times the chain's
# share below (L2 pools are thinner than mainnet's).
_TOP_POOL_USD = 60e6
_CHAIN_DEPTH = {"ethereum": 1.0, "arbitrum": 0.4, "base": 0.3, "optimism": 0.2, "polygon": 0.15}
# USD traded between two CEX ticks of the top symbol (rank r: 1/(r+1) of it), lognormal.
_TOP_TICK_VOLUME_USD = 250_000.0
_VOLUME_SIGMA = 1.0
# Zipf offset of the tick weights 1/(rank + 3): ETH ticks ~14x as often as the 40th symbol.
_RANK_OFFSET = 3

# Gas of a typical swap in USD at rest, and its per-quote noise.
_GAS_USD = {"ethereum": 3.0, "arbitrum": 0.05, "optimism": 0.03, "base": 0.02, "polygon": 0.01}
_GAS_NOISE = 0.15
# Share of crosschain.events that are gas prices (the rest are bridge quotes).
_GAS_SHARE = 0.4
# Share of bridge quotes asked for an asset/route with an active dislocation: arbitrageurs ask
# for the routes that pay.
_QUOTE_DISLOCATION_SHARE = 0.5

# Lending markets (protocol, chains) users borrow on; ids match the defi.protocols reference.
_LENDING_MARKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aave-v3", CHAINS),
    ("compound-v3", ("ethereum", "arbitrum", "optimism", "base", "polygon")),
    ("spark", ("ethereum",)),
    ("morpho-blue", ("ethereum", "base")),
)
# Aave v3's liquidation rules: repay at most half the debt, seize collateral worth 105 %.
_CLOSE_FACTOR = 0.5
_LIQUIDATION_BONUS = 0.05
# How often (event time) the keeper scans for health factors below 1.
_KEEPER_SCAN_MS = 5_000
# Action mix of a user's transaction (a liquidation comes from the keeper, not this mix).
_ACTIONS = ("deposit", "withdraw", "borrow", "repay", "swap")
_ACTION_WEIGHTS = (0.25, 0.15, 0.2, 0.2, 0.2)
# ... of a borrower well above (lever up) or below (defend) their target health factor.
_LEVER_UP_WEIGHTS = (0.1, 0.15, 0.5, 0.05, 0.2)
_DEFEND_WEIGHTS = (0.35, 0.05, 0.05, 0.35, 0.2)
# A planned transaction: (action, asset, amount, protocol, chain).
_Plan = tuple[str, str, float, str, str]
# A position left below this fraction of a unit after a partial repay/withdraw is dust: dropped.
_DUST = 1e-9


@dataclass(frozen=True)
class _Protocol:
    id: str
    name: str
    category: str
    chains: tuple[str, ...]
    tvl: float
    apy: float | None
    risk_score: float
    description: str


# TVL and APY are orders of magnitude from 2025, for realistic-looking analytics only.
_PROTOCOLS: tuple[_Protocol, ...] = (
    _Protocol(
        "aave-v3",
        "Aave V3",
        "lending",
        CHAINS,
        22e9,
        3.1,
        0.15,
        "Overcollateralised money market where suppliers earn interest and borrowers post "
        "collateral, liquidated below a health factor of 1.",
    ),
    _Protocol(
        "compound-v3",
        "Compound III",
        "lending",
        CHAINS,
        2.5e9,
        4.2,
        0.2,
        "Single-borrowable-asset lending markets (Comet) with isolated collateral.",
    ),
    _Protocol(
        "spark",
        "Spark",
        "lending",
        ("ethereum",),
        5e9,
        5.0,
        0.2,
        "Sky (MakerDAO) lending front end that supplies DAI at a governance-set rate.",
    ),
    _Protocol(
        "morpho-blue",
        "Morpho Blue",
        "lending",
        ("ethereum", "base"),
        4e9,
        5.5,
        0.25,
        "Permissionless isolated lending primitive with one collateral and one loan asset "
        "per market.",
    ),
    _Protocol(
        "uniswap-v2",
        "Uniswap V2",
        "dex",
        CHAINS,
        1.5e9,
        12.0,
        0.2,
        "Constant-product automated market maker charging a 0.30% fee to liquidity providers.",
    ),
    _Protocol(
        "sushiswap",
        "SushiSwap",
        "dex",
        ("ethereum", "arbitrum", "polygon"),
        3e8,
        15.0,
        0.3,
        "Community fork of the Uniswap V2 exchange with SUSHI rewards.",
    ),
    _Protocol(
        "curve",
        "Curve Finance",
        "dex",
        ("ethereum", "arbitrum", "optimism", "polygon"),
        2.2e9,
        4.0,
        0.2,
        "StableSwap AMM for low-slippage trades between pegged assets such as stablecoins.",
    ),
    _Protocol(
        "balancer-v2",
        "Balancer V2",
        "dex",
        ("ethereum", "arbitrum", "polygon", "base"),
        8e8,
        7.0,
        0.25,
        "Weighted multi-token pools acting as self-rebalancing index funds.",
    ),
    _Protocol(
        "aerodrome",
        "Aerodrome",
        "dex",
        ("base",),
        1.5e9,
        25.0,
        0.35,
        "ve(3,3) exchange on Base where AERO voters direct emissions to liquidity pools.",
    ),
    _Protocol(
        "velodrome",
        "Velodrome",
        "dex",
        ("optimism",),
        2e8,
        20.0,
        0.35,
        "Optimism's central liquidity hub, the Solidly-style predecessor of Aerodrome.",
    ),
    _Protocol(
        "quickswap",
        "QuickSwap",
        "dex",
        ("polygon",),
        1e8,
        18.0,
        0.35,
        "Polygon-native exchange combining constant-product and concentrated pools.",
    ),
    _Protocol(
        "1inch",
        "1inch",
        "dex-aggregator",
        CHAINS,
        0.0,
        None,
        0.2,
        "Swap router that splits an order across many DEXs for the best executed price.",
    ),
    _Protocol(
        "lido",
        "Lido",
        "liquid-staking",
        ("ethereum",),
        30e9,
        3.1,
        0.15,
        "Liquid staking that pools ETH across node operators and issues rebasing stETH.",
    ),
    _Protocol(
        "rocket-pool",
        "Rocket Pool",
        "liquid-staking",
        ("ethereum",),
        3e9,
        2.9,
        0.2,
        "Decentralised staking where bonded node operators run minipools backing rETH.",
    ),
    _Protocol(
        "eigenlayer",
        "EigenLayer",
        "restaking",
        ("ethereum",),
        15e9,
        4.0,
        0.4,
        "Restaking layer that lets staked ETH secure additional services for extra yield.",
    ),
    _Protocol(
        "makerdao",
        "MakerDAO",
        "cdp",
        ("ethereum",),
        6e9,
        6.0,
        0.2,
        "Collateralised debt positions minting the DAI stablecoin against vault deposits.",
    ),
    _Protocol(
        "ethena",
        "Ethena",
        "synthetic-dollar",
        ("ethereum",),
        5e9,
        9.0,
        0.45,
        "Delta-neutral synthetic dollar USDe backed by staked ETH and short perpetuals.",
    ),
    _Protocol(
        "gmx-v2",
        "GMX V2",
        "derivatives",
        ("arbitrum",),
        6e8,
        14.0,
        0.45,
        "Perpetual futures exchange where liquidity providers take the other side of traders.",
    ),
    _Protocol(
        "synthetix",
        "Synthetix",
        "derivatives",
        ("ethereum", "optimism", "base"),
        5e8,
        8.0,
        0.5,
        "Derivatives liquidity layer where SNX stakers back synthetic assets.",
    ),
    _Protocol(
        "yearn-v3",
        "Yearn V3",
        "yield-aggregator",
        ("ethereum", "arbitrum", "polygon"),
        4e8,
        6.5,
        0.3,
        "Automated vaults that rotate deposits across lending and LP strategies.",
    ),
    _Protocol(
        "convex",
        "Convex Finance",
        "yield-aggregator",
        ("ethereum", "arbitrum"),
        1.2e9,
        7.5,
        0.3,
        "Boosts Curve LP rewards by pooling vote-locked CRV on users' behalf.",
    ),
    _Protocol(
        "pendle",
        "Pendle",
        "yield-trading",
        ("ethereum", "arbitrum", "base"),
        4e9,
        8.0,
        0.4,
        "Splits yield-bearing tokens into principal and yield tokens that trade apart.",
    ),
    _Protocol(
        "across",
        "Across",
        "bridge",
        CHAINS,
        1e8,
        None,
        0.3,
        "Intent-based bridge where relayers front funds on the destination chain in seconds.",
    ),
    _Protocol(
        "stargate",
        "Stargate",
        "bridge",
        CHAINS,
        3e8,
        3.0,
        0.35,
        "LayerZero liquidity-pool bridge with unified native-asset liquidity across chains.",
    ),
    _Protocol(
        "chainlink",
        "Chainlink",
        "oracle",
        CHAINS,
        0.0,
        None,
        0.1,
        "Decentralised oracle network publishing aggregated price feeds on chain.",
    ),
)

# DEXs a user swaps on, per chain (ids of the reference set).
_SWAP_VENUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ethereum": ("uniswap-v2", "sushiswap", "curve", "1inch"),
        "arbitrum": ("uniswap-v2", "sushiswap", "1inch"),
        "optimism": ("uniswap-v2", "velodrome", "1inch"),
        "base": ("uniswap-v2", "aerodrome", "1inch"),
        "polygon": ("uniswap-v2", "quickswap", "1inch"),
    }
)


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly, for tests and demos to check the processors' reaction against."""

    kind: str  # "dislocation", "stale", "outlier", "gas_spike" or "liquidation"
    start_ms: int
    end_ms: int
    symbol: str | None = None
    source: str | None = None
    chain: str | None = None
    magnitude: float = 0.0
    """Relative price offset (dislocation, outlier), gas multiple, or USD repaid."""


class _Ticks(NamedTuple):
    """A chunk of price ticks as parallel arrays (NaN where a field does not apply)."""

    ts: np.ndarray
    symbol: np.ndarray
    feed: np.ndarray
    mid: np.ndarray
    price: np.ndarray
    volume: np.ndarray
    reserve_base: np.ndarray
    reserve_quote: np.ndarray
    liquidity: np.ndarray


@dataclass(slots=True)
class _Dislocation:
    symbol: int
    feed: int
    start_ms: int
    end_ms: int
    magnitude: float


@dataclass(slots=True)
class _GasSpike:
    chain: str
    start_ms: int
    multiple: float
    decay_ms: float


@dataclass
class _User:
    user_id: str
    protocol: str
    chain: str
    target_hf: float
    positions: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    """(protocol, chain, asset, kind) -> amount in asset units."""


# --- the simulator ---------------------------------------------------------------------------


class MarketSimulator:
    """A seeded generator of catalog messages; see the module docstring for the model.

    Calls continue one another: event time and state carry over from one call of
    :meth:`events`, :meth:`price_ticks` or :meth:`encoded_price_ticks` to the next, so the same
    sequence of calls on the same parameters yields the same messages.
    """

    def __init__(
        self,
        seed: int,
        symbols: int = 40,
        start_ms: int | None = None,
        *,
        sources: int = 5,
        chains: Sequence[str] = CHAINS,
        users: int = 200,
        volatility_scale: float = 5.0,
        mix: Mapping[str, float] = DEFAULT_MIX,
        dislocation_every_s: float = 45.0,
        stale_every_s: float = 60.0,
        outlier_every_s: float = 30.0,
        gas_spike_every_s: float = 120.0,
    ) -> None:
        """``*_every_s`` are mean intervals (event time) between anomalies; ``math.inf`` disables
        one. ``volatility_scale`` multiplies every symbol's annualised volatility: at the default
        5, ETH moves ~1.5 % in 10 minutes, as much as it usually does in four hours (variance
        grows with time: 5² × 10 min), so risk alerts fire within a demo."""
        if seed < 0:
            raise ValueError("seed must not be negative")
        if symbols < 1:
            raise ValueError("symbols must be at least 1")
        if not 1 <= sources <= len(SOURCES):
            raise ValueError(f"sources must be between 1 and {len(SOURCES)}")
        unknown = sorted(set(chains) - set(CHAINS))
        if not chains or unknown:
            raise ValueError(f"chains must be a non-empty subset of {CHAINS}, not {unknown}")
        if users < 0:
            raise ValueError("users must not be negative")
        if (
            set(mix) != set(DEFAULT_MIX)
            or any(v < 0 for v in mix.values())
            or not sum(mix.values())
        ):
            raise ValueError(f"mix must give a non-negative share to each of {sorted(DEFAULT_MIX)}")
        every = (dislocation_every_s, stale_every_s, outlier_every_s, gas_spike_every_s)
        if any(not e > 0 for e in every):
            raise ValueError("anomaly intervals must be positive (math.inf disables one)")

        self.seed = seed
        self.start_ms = DEFAULT_START_MS if start_ms is None else int(start_ms)
        self.chains: tuple[str, ...] = tuple(c for c in CHAINS if c in chains)
        self.sources: tuple[SourceSpec, ...] = SOURCES[:sources]
        if users == 0:  # nobody to snapshot or transact: those shares go to the others
            mix = {**mix, TRANSACTIONS: 0.0, PORTFOLIOS: 0.0}
            if not sum(mix.values()):
                raise ValueError("with no users, mix needs a share of prices or crosschain")
        total = sum(mix.values())
        self.mix: Mapping[str, float] = MappingProxyType(
            {topic: mix[topic] / total for topic in DEFAULT_MIX}
        )
        self.injected: Counter[str] = Counter()
        """How many anomalies were injected, by kind: ``dislocation``, ``dislocated_ticks``
        (ticks a dislocation moved), ``stale`` (windows), ``outlier``, ``gas_spike``,
        ``liquidation``."""
        # Bounded so a days-long `make dev` does not grow without limit; tests read a few.
        self.anomalies: deque[Anomaly] = deque(maxlen=10_000)

        # Independent streams, so that e.g. the anomaly schedule does not depend on the rate.
        streams = np.random.SeedSequence(seed).spawn(8)
        self._tick_rng = np.random.default_rng(streams[0])
        self._schedule_rng = np.random.default_rng(streams[1])
        self._dislocation_rng = np.random.default_rng(streams[2])
        self._stale_rng = np.random.default_rng(streams[3])
        self._outlier_rng = np.random.default_rng(streams[4])
        setup_rng = np.random.default_rng(streams[5])
        # Scalar draws of the slow path (users, transactions, crosschain): `random` is ~10x
        # cheaper per scalar than numpy.
        self._rng = random.Random(int(streams[6].generate_state(1, np.uint64)[0]))
        self._gas_rng = random.Random(int(streams[7].generate_state(1, np.uint64)[0]))

        self._setup_symbols(symbols, volatility_scale, setup_rng)
        self._setup_feeds(setup_rng)
        self._setup_anomalies(
            dislocation_every_s, stale_every_s, outlier_every_s, gas_spike_every_s
        )
        self._mid: list[float] = np.exp(self._log_mid).tolist()
        self._setup_users(users, setup_rng)

        self._clock_ms = float(self.start_ms)
        self._started = False
        self._counts = dict.fromkeys(DEFAULT_MIX, 0)
        self._emitted = 0
        self._snapshot_turn = 0
        self._gas_turn = 0
        self._next_keeper_scan_ms = self.start_ms
        self._liquidation_queue: deque[_User] = deque()
        self._pending_transactions: deque[tuple[_User, str, str, float]] = deque()

    # --- setup --------------------------------------------------------------------------------

    def _setup_symbols(self, count: int, volatility_scale: float, rng: np.random.Generator) -> None:
        assets = list(_ASSETS[:count])
        for rank in range(len(assets), count):
            number = rank + 1
            # Long-tail tokens: $0.01-$50, volatile (annualised 90-160 %).
            price = float(np.exp(rng.uniform(np.log(0.01), np.log(50.0))))
            assets.append(
                _Asset(
                    f"TKN{number}",
                    f"Token {number}",
                    price,
                    float(rng.uniform(0.9, 1.6)),
                    18,
                    f"simulated long-tail token number {number} with thin liquidity",
                )
            )
        self._assets: tuple[_Asset, ...] = tuple(assets)
        self.symbols: tuple[str, ...] = tuple(f"{a.ticker}/{_QUOTE}" for a in assets)
        self._symbol_index = {a.ticker: i for i, a in enumerate(assets)}
        self._log_mid = np.log(np.array([a.price_usd for a in assets]))
        self._log_peg = self._log_mid.copy()
        self._pegged = np.array([a.annual_vol is None for a in assets])
        annual = np.array([a.annual_vol or 0.0 for a in assets])
        self._sigma = annual * volatility_scale / math.sqrt(_YEAR_MS)  # per sqrt(ms)
        self._last_ms = np.full(len(assets), self.start_ms, dtype=np.int64)
        rank = np.arange(len(assets))
        weights = 1.0 / (rank + _RANK_OFFSET)
        self._symbol_weights = weights / weights.sum()
        self._symbol_cdf = _cdf(weights)
        self._volume_usd = _TOP_TICK_VOLUME_USD / (rank + 1)
        drawn = np.round(rng.uniform(*_LT_RANGE, len(assets)), 4).tolist()
        self._lt = {
            a.ticker: _LIQUIDATION_THRESHOLDS.get(a.ticker, lt)
            for a, lt in zip(assets, drawn, strict=True)
        }

    def _setup_feeds(self, rng: np.random.Generator) -> None:
        feeds: list[tuple[int, str]] = []
        for index, source in enumerate(self.sources):
            chains = self.chains if source.chains is None else source.chains
            feeds += [
                (index, chain) for chain in chains if chain == OFFCHAIN or chain in self.chains
            ]
        if not feeds:  # e.g. sources=1 with a DEX missing from the configured chains
            raise ValueError("no source quotes on the configured chains")
        self._feeds = tuple(feeds)
        self._feed_source = np.array([s for s, _ in feeds])
        self._feed_kind = np.array([_KIND_CODES[self.sources[s].kind] for s, _ in feeds])
        self._feed_noise = np.array([_FEED_NOISE[k] for k in self._feed_kind.tolist()])
        self._feed_cdf = _cdf(np.array([self.sources[s].weight for s, _ in feeds]))
        self._dex_feeds = [i for i, k in enumerate(self._feed_kind.tolist()) if k == _DEX]
        # Pool constant k = reserve_base * reserve_quote, fixed per pool (NaN off a DEX).
        n_symbols = len(self._assets)
        depth = np.zeros((n_symbols, len(feeds)))
        for f, (_, chain) in enumerate(feeds):
            if self._feed_kind[f] == _DEX:
                rank = np.arange(n_symbols)
                # Lognormal spread of pool depth around the rank's level (sigma 0.5: ~x1.6).
                depth[:, f] = (
                    _TOP_POOL_USD
                    * _CHAIN_DEPTH[chain]
                    / (rank + 1)
                    * np.exp(rng.normal(0.0, 0.5, n_symbols))
                )
        price0 = np.exp(self._log_mid)[:, None]
        with np.errstate(invalid="ignore"):
            self._pool_k = np.where(depth > 0, (depth / 2) ** 2 / price0, np.nan)
        # What each (symbol, feed) tick says about itself, for models and JSON templates.
        self._tick_fields = [
            [
                {
                    "symbol": symbol,
                    "base": a.ticker,
                    "quote": _QUOTE,
                    "source": self.sources[s].name,
                    "chain": chain,
                    "venue": self.sources[s].name,
                }
                for s, chain in feeds
            ]
            for symbol, a in zip(self.symbols, self._assets, strict=True)
        ]
        self._templates = [
            [_json_template(fields, int(self._feed_kind[f])) for f, fields in enumerate(row)]
            for row in self._tick_fields
        ]
        self._keys = [symbol.encode() for symbol in self.symbols]

    def _setup_anomalies(
        self, dislocation_s: float, stale_s: float, outlier_s: float, gas_s: float
    ) -> None:
        self._dislocation_mean_ms = dislocation_s * 1000
        self._stale_mean_ms = stale_s * 1000
        self._outlier_mean_ms = outlier_s * 1000
        self._gas_spike_mean_ms = gas_s * 1000
        self._next_dislocation_ms = self.start_ms + self._dislocation_rng.exponential(
            self._dislocation_mean_ms
        )
        # A stale source only means something with a second source to fall back on.
        multi_source = len(self.sources) > 1
        self._next_stale_ms = self.start_ms + (
            self._stale_rng.exponential(self._stale_mean_ms) if multi_source else math.inf
        )
        self._next_outlier_ms = self.start_ms + self._outlier_rng.exponential(self._outlier_mean_ms)
        self._next_gas_spike_ms = self.start_ms + self._gas_rng.expovariate(1.0 / gas_s) * 1000
        self._dislocations: list[_Dislocation] = []
        self._outliers: deque[tuple[float, float]] = deque()  # (at_ms, factor)
        self._stale_until = np.zeros((len(self._assets), len(self.sources)), dtype=np.int64)
        self._gas_spikes: list[_GasSpike] = []

    def _setup_users(self, count: int, rng: np.random.Generator) -> None:
        tickers = [a.ticker for a in self._assets]
        collateral = [t for t in tickers if t in _COLLATERAL_ASSETS] or tickers[:1]
        debt = [t for t in tickers if t in _STABLES] or tickers[:1]
        markets = [
            (protocol, chain)
            for protocol, chains in _LENDING_MARKETS
            for chain in chains
            if chain in self.chains
        ]
        self._collateral_assets = collateral
        self._debt_assets = debt
        self._markets = markets
        prices = dict(zip(tickers, self._mid, strict=True))
        weights = np.array([self._symbol_weights[self._symbol_index[t]] for t in collateral])
        users: list[_User] = []
        for number in range(count):
            protocol, chain = markets[int(rng.integers(len(markets)))]
            profile = rng.random()
            if profile < 0.2:  # savers: no debt
                target = math.inf
            elif profile < 0.4:  # close to liquidation
                target = float(rng.uniform(1.02, 1.28))
            else:
                target = float(rng.uniform(1.5, 4.0))
            user = _User(f"user-{number:05d}", protocol, chain, target)
            # Portfolio size: lognormal around $25k (a retail-to-whale spread), capped at $20M.
            size_usd = min(float(np.exp(rng.normal(math.log(25_000), 1.3))), 20e6)
            n_coll = int(rng.integers(1, min(3, len(collateral)) + 1))
            chosen = rng.choice(len(collateral), n_coll, replace=False, p=weights / weights.sum())
            split = rng.dirichlet(np.ones(n_coll))
            for index, share in zip(chosen.tolist(), split.tolist(), strict=True):
                asset = collateral[index]
                key = (protocol, chain, asset, "collateral")
                user.positions[key] = size_usd * share / prices[asset]
            if math.isfinite(target):
                borrow_usd = self._weighted_collateral_usd(user, prices) / target
                n_debt = 1 if len(debt) == 1 or rng.random() < 0.7 else 2
                chosen = rng.choice(len(debt), n_debt, replace=False)
                split = rng.dirichlet(np.ones(n_debt))
                for index, share in zip(chosen.tolist(), split.tolist(), strict=True):
                    asset = debt[index]
                    user.positions[(protocol, chain, asset, "debt")] = (
                        borrow_usd * share / prices[asset]
                    )
            if "ETH" in prices and "ethereum" in self.chains and rng.random() < 0.2:
                # Some users also hold staked ETH: value at risk but no borrowing power here.
                stake_usd = size_usd * float(rng.uniform(0.1, 0.5))
                user.positions[("lido", "ethereum", "ETH", "stake")] = stake_usd / prices["ETH"]
            users.append(user)
        self._users = users

    # --- public API ---------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """Event time reached so far (epoch ms)."""
        return int(self._clock_ms)

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(u.user_id for u in self._users)

    def mid_prices(self) -> dict[str, float]:
        """The hidden USD mid price of every asset (by ticker) at the current point of the stream.

        During :meth:`events` it is the mid of the latest price tick yielded for each symbol.
        """
        return {a.ticker: p for a, p in zip(self._assets, self._mid, strict=True)}

    def health_factor(self, user_id: str) -> float | None:
        """A user's Aave health factor at :meth:`mid_prices` (None without debt)."""
        user = next(u for u in self._users if u.user_id == user_id)
        return _health_factor(user, self.mid_prices(), self._lt)

    def reference_messages(self) -> list[Message]:
        """``defi.protocols`` then ``defi.tokens``: the fixed reference set, at ``start_ms``."""
        return [*self.protocols(), *self.tokens()]

    def protocols(self) -> list[DefiProtocol]:
        """At least 20 well-known protocols with category, chains, TVL, APY and a description."""
        updated = _datetime(self.start_ms)
        return [
            DefiProtocol(
                id=p.id,
                name=p.name,
                description=p.description,
                category=p.category,
                chains=tuple(c for c in p.chains if c in self.chains),
                tvl=p.tvl,
                apy=p.apy,
                risk_score=p.risk_score,
                updated_at=updated,
            )
            for p in _PROTOCOLS
        ]

    def tokens(self) -> list[DefiToken]:
        """Every simulated asset on every configured chain, keyed by a deterministic address."""
        updated = _datetime(self.start_ms)
        tokens = []
        for asset, price in zip(self._assets, np.exp(self._log_peg).tolist(), strict=True):
            # A rough circulating supply (1e8 for the high-priced, 1e10 for the rest): caps of a
            # plausible order of magnitude, for display only.
            supply = 1e8 if asset.price_usd > 100 else 1e10
            for chain in self.chains:
                tokens.append(
                    DefiToken(
                        address=_address(chain, asset.ticker),
                        symbol=asset.ticker,
                        name=asset.name,
                        chain=chain,
                        decimals=asset.decimals,
                        price_usd=price,
                        market_cap_usd=price * supply,
                        description=f"{asset.name} ({asset.ticker}) is {asset.blurb}.",
                        updated_at=updated,
                    )
                )
        return tokens

    def events(self, duration_s: float, rate: float) -> Iterator[Message]:
        """About ``rate`` messages per second of event time over ``duration_s`` (``math.inf``:
        forever), in non-decreasing event time, mixed as :attr:`mix` (see :data:`DEFAULT_MIX`).

        The first call starts with one ``users.portfolios`` snapshot per user at ``start_ms``.
        """
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of messages per second")
        if not duration_s >= 0:
            raise ValueError("duration_s must not be negative")
        return self._events(duration_s, rate)  # checked now, not at the first next()

    def _events(self, duration_s: float, rate: float) -> Iterator[Message]:
        if not self._started:
            self._started = True
            start = int(self._clock_ms)
            for user in self._users:
                self._count(PORTFOLIOS)
                yield self._snapshot(user, start)
        begin_ms = self._clock_ms
        chunk_s = min(_MAX_EVENT_CHUNK_S, _EVENT_CHUNK / rate)
        chunk = 0
        while chunk * chunk_s < duration_s:
            t0 = chunk * chunk_s
            t1 = min(t0 + chunk_s, duration_s)
            chunk += 1
            n = round(rate * t1) - round(rate * t0)
            if n <= 0:
                continue
            offsets = np.sort(self._schedule_rng.uniform(t0, t1, n))
            ts = np.floor(begin_ms + offsets * 1000).astype(np.int64)
            self._clock_ms = begin_ms + t1 * 1000
            yield from self._walk(ts)
        self._clock_ms = begin_ms + duration_s * 1000

    def price_ticks(self, n: int, *, rate: float = 10_000.0) -> Iterator[MarketPrice]:
        """``n`` validated ``market.prices`` ticks at ``rate`` ticks per second of event time."""
        for ticks in self._tick_chunks(n, rate):
            yield from self._price_models(ticks)

    def encoded_price_ticks(
        self, n: int, *, rate: float = 10_000.0
    ) -> Iterator[tuple[bytes, bytes, int]]:
        """The fast path: ``(key, value, timestamp_ms)`` of ``n`` ticks, JSON written directly.

        The bytes are exactly what ``codec.encode`` makes of the tick :meth:`price_ticks` would
        yield (same seed, same calls), at several times the speed.
        """
        for ticks in self._tick_chunks(n, rate):
            yield from self._encode_ticks(ticks)

    # --- the stream ---------------------------------------------------------------------------

    def _count(self, topic: str) -> None:
        self._counts[topic] += 1
        self._emitted += 1

    def _next_topic(self) -> str:
        # The topic furthest behind its share goes next: exact proportions over any long run
        # (a smooth weighted round-robin), and the initial snapshots count against their share.
        n = self._emitted + 1
        best, best_deficit = PRICES, -math.inf
        for topic, share in self.mix.items():
            deficit = share * n - self._counts[topic]
            if deficit > best_deficit:
                best, best_deficit = topic, deficit
        self._count(best)
        return best

    def _walk(self, ts: np.ndarray) -> Iterator[Message]:
        topics = [self._next_topic() for _ in range(ts.size)]
        is_price = np.array([t == PRICES for t in topics])
        ticks = self._draw(ts[is_price]) if is_price.any() else None
        prices = iter(self._price_models(ticks)) if ticks is not None else iter(())
        symbols = ticks.symbol.tolist() if ticks is not None else []
        mids = ticks.mid.tolist() if ticks is not None else []
        tick = 0
        for topic, at in zip(topics, ts.tolist(), strict=True):
            if topic == PRICES:
                # The mid moves as the ticks are yielded, so other messages see the price "now".
                self._mid[symbols[tick]] = mids[tick]
                tick += 1
                yield next(prices)
            elif topic == CROSSCHAIN:
                yield self._crosschain(at)
            elif topic == TRANSACTIONS:
                yield self._transaction(at)
            else:
                yield self._next_snapshot(at)

    # --- prices -------------------------------------------------------------------------------

    def _tick_chunks(self, n: int, rate: float) -> Iterator[_Ticks]:
        if n < 0:
            raise ValueError("n must not be negative")
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of ticks per second")
        done = 0
        while done < n:
            size = min(_TICK_CHUNK, n - done)
            begin_ms = self._clock_ms
            span_ms = size / rate * 1000
            offsets = np.sort(self._schedule_rng.uniform(0.0, span_ms, size))
            ts = np.floor(begin_ms + offsets).astype(np.int64)
            self._clock_ms = begin_ms + span_ms
            ticks = self._draw(ts)
            self._mid = np.exp(self._log_mid).tolist()
            done += size
            yield ticks

    def _draw(self, ts: np.ndarray) -> _Ticks:
        """Price ticks at event times ``ts`` (sorted): the vectorised core of every price path."""
        n = ts.size
        rng = self._tick_rng
        self._schedule_price_anomalies(int(ts[-1]))
        symbol = np.searchsorted(self._symbol_cdf, rng.random(n), side="right")
        feed = np.searchsorted(self._feed_cdf, rng.random(n), side="right")
        self._avoid_stale(ts, symbol, feed)

        # Geometric random walk of each symbol's mid, sequential per symbol: sort by symbol
        # (stable, so time order holds within a symbol), cumulative sum of log increments per
        # group, continuing from where the previous chunk left the symbol.
        z = rng.standard_normal(n)
        order = np.argsort(symbol, kind="stable")
        s, t, zs = symbol[order], ts[order], z[order]
        first = np.ones(n, dtype=bool)
        first[1:] = s[1:] != s[:-1]
        starts = np.flatnonzero(first)
        previous = np.empty(n, dtype=np.int64)
        previous[1:] = t[:-1]
        previous[starts] = self._last_ms[s[starts]]
        dt = (t - previous).astype(np.float64)
        sigma = self._sigma[s]
        steps = sigma * np.sqrt(dt) * zs - 0.5 * sigma * sigma * dt  # zero-drift price
        walked = np.cumsum(steps)
        before = np.zeros(starts.size)
        before[1:] = walked[starts[1:] - 1]
        log_mid = self._log_mid[s] + walked - np.repeat(before, np.diff(np.r_[starts, n]))
        log_mid = np.where(self._pegged[s], self._log_peg[s] + _PEG_NOISE * zs, log_mid)
        lasts = np.r_[starts[1:] - 1, n - 1]
        self._log_mid[s[lasts]] = log_mid[lasts]
        self._last_ms[s[lasts]] = t[lasts]
        mid_log = np.empty(n)
        mid_log[order] = log_mid

        price = np.exp(mid_log + self._feed_noise[feed] * rng.standard_normal(n))
        self._apply_dislocations(ts, symbol, feed, price)
        self._apply_outliers(ts, symbol, feed, price)

        kind = self._feed_kind[feed]
        traded_usd = self._volume_usd[symbol] * np.exp(
            _VOLUME_SIGMA * rng.standard_normal(n) - 0.5 * _VOLUME_SIGMA**2
        )
        volume = np.where(kind == _CEX, traded_usd / price, np.nan)
        k = self._pool_k[symbol, feed]
        reserve_quote = np.sqrt(k * price)  # x*y = k and y/x = price
        reserve_base = np.sqrt(k / price)
        return _Ticks(
            ts,
            symbol,
            feed,
            np.exp(mid_log),
            price,
            volume,
            reserve_base,
            reserve_quote,
            2.0 * reserve_quote,
        )

    def _avoid_stale(self, ts: np.ndarray, symbol: np.ndarray, feed: np.ndarray) -> None:
        """Re-draw ticks that fall on a stale (symbol, source): first another feed, then another
        symbol. Mutates ``symbol``/``feed`` in place."""
        if not (self._stale_until > ts[0]).any():
            return
        rng = self._tick_rng
        stale = self._stale_until[symbol, self._feed_source[feed]] > ts
        for attempt in range(64):  # 64 re-draws: a still-stale tick after them is ~never seen
            idx = np.flatnonzero(stale)
            if idx.size == 0:
                return
            if attempt >= 8:  # every source of this symbol may be stale: pick another symbol
                symbol[idx] = np.searchsorted(self._symbol_cdf, rng.random(idx.size), "right")
            feed[idx] = np.searchsorted(self._feed_cdf, rng.random(idx.size), side="right")
            stale[idx] = self._stale_until[symbol[idx], self._feed_source[feed[idx]]] > ts[idx]

    def _schedule_price_anomalies(self, until_ms: int) -> None:
        while self._next_dislocation_ms <= until_ms:
            self._new_dislocation(int(self._next_dislocation_ms))
            self._next_dislocation_ms += self._dislocation_rng.exponential(
                self._dislocation_mean_ms
            )
        while self._next_stale_ms <= until_ms:
            self._new_stale(int(self._next_stale_ms))
            self._next_stale_ms += self._stale_rng.exponential(self._stale_mean_ms)
        while self._next_outlier_ms <= until_ms:
            rng = self._outlier_rng
            sign = 1.0 if rng.random() < 0.5 else -1.0
            self._outliers.append((self._next_outlier_ms, 1.0 + sign * rng.uniform(0.10, 0.50)))
            self._next_outlier_ms += rng.exponential(self._outlier_mean_ms)

    def _new_dislocation(self, at_ms: int) -> None:
        rng = self._dislocation_rng
        symbol = int(np.searchsorted(self._symbol_cdf, rng.random(), side="right"))
        # A DEX pool is what drifts from the rest of the market; without DEXs, any feed.
        pool = self._dex_feeds or list(range(len(self._feeds)))
        feed = pool[int(rng.integers(len(pool)))]
        magnitude = float(rng.uniform(0.005, 0.03)) * (1.0 if rng.random() < 0.5 else -1.0)
        end_ms = at_ms + int(rng.uniform(20_000, 90_000))
        self._dislocations.append(_Dislocation(symbol, feed, at_ms, end_ms, magnitude))
        source, chain = self._feeds[feed]
        self.injected["dislocation"] += 1
        self.anomalies.append(
            Anomaly(
                "dislocation",
                at_ms,
                end_ms,
                self.symbols[symbol],
                self.sources[source].name,
                chain,
                magnitude,
            )
        )

    def _new_stale(self, at_ms: int) -> None:
        rng = self._stale_rng
        symbol = int(np.searchsorted(self._symbol_cdf, rng.random(), side="right"))
        source = int(rng.integers(len(self.sources)))
        end_ms = at_ms + int(rng.uniform(45_000, 300_000))
        self._stale_until[symbol, source] = max(int(self._stale_until[symbol, source]), end_ms)
        self.injected["stale"] += 1
        self.anomalies.append(
            Anomaly("stale", at_ms, end_ms, self.symbols[symbol], self.sources[source].name)
        )

    def _apply_dislocations(
        self, ts: np.ndarray, symbol: np.ndarray, feed: np.ndarray, price: np.ndarray
    ) -> None:
        for d in self._dislocations:
            hit = (symbol == d.symbol) & (feed == d.feed) & (ts >= d.start_ms) & (ts < d.end_ms)
            if hit.any():
                # Linear decay to zero: arbitrageurs close the gap over the dislocation's life.
                left = 1.0 - (ts[hit] - d.start_ms) / (d.end_ms - d.start_ms)
                price[hit] *= 1.0 + d.magnitude * left
                self.injected["dislocated_ticks"] += int(hit.sum())
        last = int(ts[-1])
        self._dislocations = [d for d in self._dislocations if d.end_ms > last]

    def _apply_outliers(
        self, ts: np.ndarray, symbol: np.ndarray, feed: np.ndarray, price: np.ndarray
    ) -> None:
        last = int(ts[-1])
        while self._outliers and self._outliers[0][0] <= last:
            at_ms, factor = self._outliers.popleft()
            i = int(np.searchsorted(ts, at_ms, side="left"))  # the first tick at or after it
            price[i] *= factor
            source, chain = self._feeds[int(feed[i])]
            self.injected["outlier"] += 1
            self.anomalies.append(
                Anomaly(
                    "outlier",
                    int(ts[i]),
                    int(ts[i]),
                    self.symbols[int(symbol[i])],
                    self.sources[source].name,
                    chain,
                    factor - 1.0,
                )
            )

    def _price_models(self, ticks: _Ticks) -> list[MarketPrice]:
        # Validated through the model's compiled validator from plain dicts: measured faster
        # than both the keyword constructor and model_construct (which runs Python per field).
        validate = MarketPrice.__pydantic_validator__.validate_python
        fields = self._tick_fields
        kinds = self._feed_kind.tolist()
        times: dict[int, datetime] = {}
        models: list[MarketPrice] = []
        append = models.append
        # The cyclic GC would rescan the growing list of (acyclic) models again and again, as
        # codec.decode_batch measured; nothing here makes cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for at, s, f, price, volume, base, quote, liquidity in zip(
                ticks.ts.tolist(),
                ticks.symbol.tolist(),
                ticks.feed.tolist(),
                ticks.price.tolist(),
                ticks.volume.tolist(),
                ticks.reserve_base.tolist(),
                ticks.reserve_quote.tolist(),
                ticks.liquidity.tolist(),
                strict=True,
            ):
                when = times.get(at)
                if when is None:
                    when = times[at] = _datetime(at)
                kind = kinds[f]
                if kind == _DEX:
                    extra = {
                        "reserve_base": base,
                        "reserve_quote": quote,
                        "liquidity_usd": liquidity,
                    }
                elif kind == _CEX:
                    extra = {"volume": volume}
                else:
                    extra = {}
                append(validate({**fields[s][f], "price": price, **extra, "ts": when}))
        finally:
            if gc_was_enabled:
                gc.enable()
        return models

    def _encode_ticks(self, ticks: _Ticks) -> list[tuple[bytes, bytes, int]]:
        templates = self._templates
        keys = self._keys
        kinds = self._feed_kind.tolist()
        stamps = np.datetime_as_string(ticks.ts.astype("datetime64[ms]"), unit="ms").tolist()
        prices = _json_floats(ticks.price)
        volumes = _json_floats(ticks.volume)
        bases = _json_floats(ticks.reserve_base)
        quotes = _json_floats(ticks.reserve_quote)
        liquidity = _json_floats(ticks.liquidity)
        out: list[tuple[bytes, bytes, int]] = []
        append = out.append
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as in _price_models: the tuples are acyclic, rescanning them is waste
        try:
            for i, (at, s, f) in enumerate(
                zip(ticks.ts.tolist(), ticks.symbol.tolist(), ticks.feed.tolist(), strict=True)
            ):
                kind = kinds[f]
                if kind == _DEX:
                    args = (prices[i], bases[i], quotes[i], liquidity[i], stamps[i])
                elif kind == _CEX:
                    args = (prices[i], volumes[i], stamps[i])
                else:
                    args = (prices[i], stamps[i])
                append((keys[s], (templates[s][f] % args).encode(), at))
        finally:
            if gc_was_enabled:
                gc.enable()
        return out

    # --- crosschain ---------------------------------------------------------------------------

    def _crosschain(self, at_ms: int) -> CrosschainEvent:
        self._schedule_gas_spikes(at_ms)
        rng = self._rng
        when = _datetime(at_ms)
        if len(self.chains) < 2 or rng.random() < _GAS_SHARE:
            # Round-robin over chains: each chain's gas is refreshed at a steady cadence.
            chain = self.chains[self._gas_turn % len(self.chains)]
            self._gas_turn += 1
            return GasPrice(chain=chain, gas_usd=round(self._gas_usd(chain, at_ms), 6), ts=when)
        asset, from_chain, to_chain = self._quote_route()
        fixed = self._gas_usd(from_chain, at_ms) + self._gas_usd(to_chain, at_ms)
        fixed += rng.uniform(0.2, 2.0)  # the relayer's flat fee
        if "ethereum" in (from_chain, to_chain):
            bps = rng.uniform(5.0, 12.0)  # mainnet legs: scarcer relayer capital
        else:
            bps = rng.uniform(3.0, 8.0)
        if from_chain == "ethereum":
            latency = rng.uniform(60, 180)  # fast deposits to an L2: a few blocks
        elif to_chain == "ethereum":
            latency = rng.uniform(120, 900)  # relayers wait for L2 finality on the way out
        else:
            latency = rng.uniform(20, 120)  # L2 to L2: intents filled in seconds to minutes
        return BridgeQuote(
            from_chain=from_chain,
            to_chain=to_chain,
            asset=asset,
            fee_usd=round(fixed, 4),
            fee_bps=round(bps, 2),
            latency_s=round(latency, 1),
            ts=when,
        )

    def _quote_route(self) -> tuple[str, str, str]:
        rng = self._rng
        on_chain = [d for d in self._dislocations if self._feeds[d.feed][1] in self.chains]
        if on_chain and rng.random() < _QUOTE_DISLOCATION_SHARE:
            d = rng.choice(on_chain)
            chain = self._feeds[d.feed][1]
            other = rng.choice([c for c in self.chains if c != chain])
            asset = self._assets[d.symbol].ticker
            return (asset, other, chain) if rng.random() < 0.5 else (asset, chain, other)
        index = _pick(rng, self._symbol_cdf)
        from_chain, to_chain = rng.sample(self.chains, 2)
        return self._assets[index].ticker, from_chain, to_chain

    def _schedule_gas_spikes(self, until_ms: int) -> None:
        rng = self._gas_rng
        while self._next_gas_spike_ms <= until_ms:
            at = int(self._next_gas_spike_ms)
            chain = rng.choice(self.chains)
            spike = _GasSpike(chain, at, rng.uniform(3.0, 10.0), rng.uniform(30_000, 120_000))
            self._gas_spikes.append(spike)
            self.injected["gas_spike"] += 1
            # Reported as over after three decay times (the excess is down to 5 %).
            self.anomalies.append(
                Anomaly(
                    "gas_spike",
                    at,
                    at + int(3 * spike.decay_ms),
                    chain=chain,
                    magnitude=spike.multiple,
                )
            )
            self._next_gas_spike_ms += rng.expovariate(1.0 / self._gas_spike_mean_ms)
        # A spike decayed for ten decay times adds < 0.01 % of its excess: forget it.
        self._gas_spikes = [s for s in self._gas_spikes if until_ms - s.start_ms < 10 * s.decay_ms]

    def _gas_usd(self, chain: str, at_ms: int) -> float:
        multiple = 1.0
        for spike in self._gas_spikes:
            if spike.chain == chain and at_ms >= spike.start_ms:
                excess = spike.multiple - 1.0
                multiple += excess * math.exp(-(at_ms - spike.start_ms) / spike.decay_ms)
        noise = math.exp(self._rng.gauss(0.0, _GAS_NOISE) - 0.5 * _GAS_NOISE**2)
        return _GAS_USD[chain] * multiple * noise

    # --- users --------------------------------------------------------------------------------

    def _prices(self) -> dict[str, float]:
        return {a.ticker: p for a, p in zip(self._assets, self._mid, strict=True)}

    def _weighted_collateral_usd(self, user: _User, prices: Mapping[str, float]) -> float:
        return sum(
            amount * prices[asset] * self._lt[asset]
            for (_, _, asset, kind), amount in user.positions.items()
            if kind == "collateral"
        )

    def _snapshot(self, user: _User, at_ms: int) -> UserPortfolio:
        positions = tuple(
            Position(
                protocol=protocol,
                chain=chain,
                asset=asset,
                kind=kind,  # type: ignore[arg-type]
                amount=amount,
                liquidation_threshold=self._lt[asset] if kind == "collateral" else None,
            )
            for (protocol, chain, asset, kind), amount in sorted(user.positions.items())
        )
        return UserPortfolio(user_id=user.user_id, positions=positions, ts=_datetime(at_ms))

    def _next_snapshot(self, at_ms: int) -> UserPortfolio:
        user = self._users[self._snapshot_turn % len(self._users)]
        self._snapshot_turn += 1
        return self._snapshot(user, at_ms)

    def _transaction(self, at_ms: int) -> DefiTransaction:
        if at_ms >= self._next_keeper_scan_ms:
            self._keeper_scan()
            self._next_keeper_scan_ms = at_ms + _KEEPER_SCAN_MS
        if self._pending_transactions:
            user, action, asset, amount = self._pending_transactions.popleft()
            return self._tx(user, action, asset, amount, user.protocol, user.chain, at_ms)
        while self._liquidation_queue:
            user = self._liquidation_queue.popleft()
            tx = self._liquidate(user, at_ms)
            if tx is not None:
                return tx
        rng = self._rng
        user = self._users[rng.randrange(len(self._users))]
        prices = self._prices()
        action = rng.choices(_ACTIONS, self._action_weights(user, prices))[0]
        plan = {
            "deposit": self._plan_deposit,
            "withdraw": self._plan_withdraw,
            "borrow": self._plan_borrow,
            "repay": self._plan_repay,
            "swap": self._plan_swap,
        }[action]
        planned = plan(user, prices)
        if planned is None:  # nothing to withdraw/borrow/repay: deposit instead
            planned = self._plan_deposit(user, prices)
        return self._tx(user, *planned, at_ms)

    def _tx(
        self,
        user: _User,
        action: str,
        asset: str,
        amount: float,
        protocol: str,
        chain: str,
        at_ms: int,
    ) -> DefiTransaction:
        """The transaction, its effect applied to the user's positions as it is emitted (so a
        snapshot always equals the initial one plus the transactions before it)."""
        if action != "swap":  # wallet balances are not modelled: a swap moves no position
            kind = "debt" if action in ("borrow", "repay") else "collateral"
            key = (protocol, chain, asset, kind)
            held = user.positions.get(key, 0.0)
            if action in ("deposit", "borrow"):
                user.positions[key] = held + amount
            else:  # withdraw, repay, liquidation: never more than held
                amount = min(amount, held)
                if held - amount <= held * _DUST:
                    amount = held
                    user.positions.pop(key, None)
                else:
                    user.positions[key] = held - amount
        return DefiTransaction(
            tx_hash=self._tx_hash(),
            user_id=user.user_id,
            protocol=protocol,
            chain=chain,
            action=action,  # type: ignore[arg-type]
            asset=asset,
            amount=amount,
            ts=_datetime(at_ms),
        )

    def _action_weights(self, user: _User, prices: Mapping[str, float]) -> tuple[float, ...]:
        # Borrowers steer back to their target health factor: they lever up when prices have
        # carried them above it and defend (repay, add collateral) below it. This keeps the
        # risky fifth of users near liquidation for the whole run while prices push them around.
        if not math.isfinite(user.target_hf):
            return _ACTION_WEIGHTS
        hf = _health_factor(user, prices, self._lt)
        if hf is None or hf > user.target_hf * 1.15:
            return _LEVER_UP_WEIGHTS
        if hf < user.target_hf * 0.95:
            return _DEFEND_WEIGHTS
        return _ACTION_WEIGHTS

    def _tx_hash(self) -> str:
        return f"0x{self._rng.getrandbits(256):064x}"

    def _usd_amount(self) -> float:
        # A transaction's size: lognormal around $2,000.
        return math.exp(self._rng.gauss(math.log(2_000), 1.0))

    def _held(self, user: _User, kind: str) -> list[tuple[str, float]]:
        return [
            (asset, amount)
            for (protocol, chain, asset, k), amount in user.positions.items()
            if k == kind and protocol == user.protocol and chain == user.chain
        ]

    def _plan_deposit(self, user: _User, prices: Mapping[str, float]) -> _Plan:
        rng = self._rng
        held = self._held(user, "collateral")
        if held and rng.random() < 0.7:
            asset = rng.choice(held)[0]
        else:
            asset = rng.choice(self._collateral_assets)
        return "deposit", asset, self._usd_amount() / prices[asset], user.protocol, user.chain

    def _plan_withdraw(self, user: _User, prices: Mapping[str, float]) -> _Plan | None:
        held = self._held(user, "collateral")
        if not held:
            return None
        rng = self._rng
        asset, amount = rng.choice(held)
        debt_usd = self._debt_usd(user, prices)
        if debt_usd > 0:
            # Keep the health factor at or above the user's comfort level after withdrawing.
            spare = self._weighted_collateral_usd(user, prices) - debt_usd * user.target_hf
            amount = min(amount, max(spare, 0.0) / (prices[asset] * self._lt[asset]))
            if amount <= 0:
                return None
            return "withdraw", asset, amount * rng.uniform(0.1, 1.0), user.protocol, user.chain
        if rng.random() < 0.3:  # close the position
            return "withdraw", asset, amount, user.protocol, user.chain
        return "withdraw", asset, amount * rng.uniform(0.1, 0.9), user.protocol, user.chain

    def _plan_borrow(self, user: _User, prices: Mapping[str, float]) -> _Plan | None:
        if not math.isfinite(user.target_hf):  # savers do not borrow
            return None
        room_usd = self._weighted_collateral_usd(user, prices) / user.target_hf
        room_usd -= self._debt_usd(user, prices)
        if room_usd <= 0:
            return None
        rng = self._rng
        held = self._held(user, "debt")
        asset = rng.choice(held)[0] if held else rng.choice(self._debt_assets)
        usd = room_usd * rng.uniform(0.3, 1.0)
        return "borrow", asset, usd / prices[asset], user.protocol, user.chain

    def _plan_repay(self, user: _User, prices: Mapping[str, float]) -> _Plan | None:
        held = self._held(user, "debt")
        if not held:
            return None
        rng = self._rng
        asset, amount = rng.choice(held)
        if rng.random() > 0.2:  # most repayments are partial
            amount *= rng.uniform(0.05, 0.5)
        return "repay", asset, amount, user.protocol, user.chain

    def _plan_swap(self, user: _User, prices: Mapping[str, float]) -> _Plan:
        rng = self._rng
        asset = self._assets[_pick(rng, self._symbol_cdf)].ticker
        venue = rng.choice(_SWAP_VENUES[user.chain])
        return "swap", asset, self._usd_amount() / prices[asset], venue, user.chain

    def _debt_usd(self, user: _User, prices: Mapping[str, float]) -> float:
        return sum(
            amount * prices[asset]
            for (_, _, asset, kind), amount in user.positions.items()
            if kind == "debt"
        )

    def _keeper_scan(self) -> None:
        prices = self._prices()
        queued = {u.user_id for u in self._liquidation_queue}
        for user in self._users:
            hf = _health_factor(user, prices, self._lt)
            if hf is not None and hf < 1.0 and user.user_id not in queued:
                self._liquidation_queue.append(user)

    def _liquidate(self, user: _User, at_ms: int) -> DefiTransaction | None:
        prices = self._prices()
        hf = _health_factor(user, prices, self._lt)
        if hf is None or hf >= 1.0:
            return None
        debts = self._held(user, "debt")
        collaterals = self._held(user, "collateral")
        if not debts or not collaterals:
            return None
        debt_asset, debt_amount = max(debts, key=lambda d: d[1] * prices[d[0]])
        coll_asset, coll_amount = max(collaterals, key=lambda c: c[1] * prices[c[0]])
        repay_usd = debt_amount * prices[debt_asset] * _CLOSE_FACTOR
        seize = repay_usd * (1.0 + _LIQUIDATION_BONUS) / prices[coll_asset]
        if seize > coll_amount:  # not enough collateral: seize it all, repay what it covers
            seize = coll_amount
            repay_usd = seize * prices[coll_asset] / (1.0 + _LIQUIDATION_BONUS)
        repay = repay_usd / prices[debt_asset]
        self.injected["liquidation"] += 1
        self.anomalies.append(
            Anomaly(
                "liquidation",
                at_ms,
                at_ms,
                symbol=f"{coll_asset}/{_QUOTE}",
                source=user.protocol,
                chain=user.chain,
                magnitude=repay_usd,
            )
        )
        # The liquidator's repayment of the debt is the next transaction of the stream.
        self._pending_transactions.append((user, "repay", debt_asset, repay))
        return self._tx(user, "liquidation", coll_asset, seize, user.protocol, user.chain, at_ms)


# --- helpers ---------------------------------------------------------------------------------


def _health_factor(
    user: _User, prices: Mapping[str, float], thresholds: Mapping[str, float]
) -> float | None:
    """Aave's health factor: Σ collateral × price × threshold / Σ debt × price."""
    collateral = 0.0
    debt = 0.0
    for (_, _, asset, kind), amount in user.positions.items():
        if kind == "collateral":
            collateral += amount * prices[asset] * thresholds[asset]
        elif kind == "debt":
            debt += amount * prices[asset]
    return collateral / debt if debt > 0 else None


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0  # uniform draws in [0, 1) then always land on a valid index
    return cdf


def _pick(rng: random.Random, cdf: np.ndarray) -> int:
    return int(np.searchsorted(cdf, rng.random(), side="right"))


def _datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _address(chain: str, ticker: str) -> str:
    # A stable pseudo-address: 20 bytes of a hash, distinct per (chain, token).
    return "0x" + hashlib.sha256(f"{chain}:{ticker}".encode()).hexdigest()[:40]


def _json_template(fields: Mapping[str, str], kind: int) -> str:
    """A ``%``-template of the JSON ``codec.encode`` writes for a tick of this (symbol, feed)."""
    symbol, base, quote = fields["symbol"], fields["base"], fields["quote"]
    source, chain, venue = fields["source"], fields["chain"], fields["venue"]
    volume, reserves = "null", '"reserve_base":null,"reserve_quote":null,"liquidity_usd":null'
    if kind == _CEX:
        volume = "%s"
    elif kind == _DEX:
        reserves = '"reserve_base":%s,"reserve_quote":%s,"liquidity_usd":%s'
    return (
        f'{{"symbol":"{symbol}","base":"{base}","quote":"{quote}","price":%s,"volume":{volume},'
        f'"source":"{source}","chain":"{chain}","venue":"{venue}",{reserves},"ts":"%sZ"}}'
    )


def _json_float(value: float) -> str:
    """A float as pydantic-core writes it: Python's repr, except that values in [1e-5, 1e-4) are
    written in decimal (``0.00001``) and smaller exponents carry no leading zero (``1e-7``)."""
    text = repr(value)
    if "e-" not in text:
        return text
    mantissa, exponent = text.split("e-")
    power = int(exponent)
    if power <= 5:
        return "0." + "0" * (power - 1) + mantissa.replace(".", "")
    return f"{mantissa}e-{power}"


def _json_floats(values: np.ndarray) -> list[str]:
    floats = values.tolist()
    # repr is already exact for every finite value in [1e-4, 1e16): the common case.
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 1e-4 or finite.max() >= 1e16):
        return [_json_float(v) for v in floats]
    return list(map(repr, floats))
