"""The simulated world's fixed reference data: assets, price sources, protocols, chains.

Static tables (figures of 2025's order of magnitude, a simulation, not live data), the
:class:`Universe` a simulator draws from them (the symbols it quotes, on which chains, from
which sources), and the ``defi.protocols`` / ``defi.tokens`` reference messages.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ys_platform.catalog.models import DefiProtocol, DefiToken
from ys_platform.sources.simulator.clock import datetime_of

CHAINS: tuple[str, ...] = ("ethereum", "arbitrum", "optimism", "base", "polygon")
OFFCHAIN = "offchain"
"""The ``chain`` of a centralised exchange's tick: it settles on no chain."""
QUOTE = "USD"
"""The quote currency of every simulated symbol."""

# Zipf offset of the tick weights 1/(rank + 3): ETH ticks ~14x as often as the 40th symbol.
_RANK_OFFSET = 3


@dataclass(frozen=True)
class Asset:
    """A simulated asset: its starting USD price, volatility and token metadata."""

    ticker: str
    name: str
    price_usd: float
    annual_vol: float | None
    """Annualised volatility of log returns; None for a stablecoin held on its peg."""
    decimals: int
    blurb: str


# Roughly the market's order of magnitude in 2025; a simulation, not live figures. The order is
# the liquidity rank (tick frequency, pool depth, volume), so the first symbols are the majors.
ASSETS: tuple[Asset, ...] = (
    Asset("ETH", "Ether", 3_000.0, 0.70, 18, "Ethereum's native asset, DeFi's main collateral"),
    Asset("BTC", "Bitcoin", 60_000.0, 0.55, 8, "the first cryptocurrency, wrapped for DeFi"),
    Asset("USDC", "USD Coin", 1.0, None, 6, "a fiat-backed dollar stablecoin issued by Circle"),
    Asset("USDT", "Tether USD", 1.0, None, 6, "the largest dollar stablecoin by supply"),
    Asset("SOL", "Solana", 150.0, 0.90, 9, "the native asset of the Solana layer-1 network"),
    Asset("DAI", "Dai", 1.0, None, 18, "a crypto-backed dollar stablecoin of MakerDAO"),
    Asset("LINK", "Chainlink", 14.0, 0.90, 18, "the token paying Chainlink oracle node operators"),
    Asset("BNB", "BNB", 580.0, 0.60, 18, "the native asset of BNB Chain"),
    Asset("AAVE", "Aave", 150.0, 1.00, 18, "the governance and safety-module token of Aave"),
    Asset("UNI", "Uniswap", 9.0, 0.95, 18, "the governance token of Uniswap"),
    Asset("ARB", "Arbitrum", 0.8, 1.00, 18, "the governance token of the Arbitrum rollup DAO"),
    Asset("OP", "Optimism", 1.8, 1.00, 18, "the governance token of the Optimism Collective"),
    Asset("LDO", "Lido DAO", 1.9, 1.10, 18, "the governance token of the Lido liquid-staking DAO"),
    Asset("MKR", "Maker", 2_000.0, 0.90, 18, "the governance token backing Maker's solvency"),
    Asset("XRP", "XRP", 0.6, 0.80, 6, "the native asset of the XRP Ledger payments network"),
    Asset("ADA", "Cardano", 0.45, 0.85, 6, "the native asset of the Cardano proof-of-stake chain"),
    Asset("AVAX", "Avalanche", 30.0, 0.95, 18, "the native asset of the Avalanche network"),
    Asset("DOGE", "Dogecoin", 0.12, 1.00, 8, "a proof-of-work meme currency"),
    Asset("DOT", "Polkadot", 6.5, 0.85, 10, "the staking and governance asset of Polkadot"),
    Asset("POL", "Polygon", 0.55, 0.90, 18, "the gas and staking token of the Polygon network"),
    Asset("CRV", "Curve DAO", 0.35, 1.20, 18, "the vote-escrowed token directing Curve emissions"),
    Asset("SNX", "Synthetix", 2.2, 1.10, 18, "the staked collateral behind Synthetix synths"),
    Asset("COMP", "Compound", 55.0, 1.00, 18, "the governance token of Compound"),
    Asset("GMX", "GMX", 25.0, 1.00, 18, "the fee-sharing token of the GMX perpetuals exchange"),
    Asset("PEPE", "Pepe", 0.00001, 1.40, 18, "a meme token with no utility beyond speculation"),
    Asset("SHIB", "Shiba Inu", 0.00002, 1.20, 18, "a dog-themed meme token with its own layer-2"),
    Asset("ATOM", "Cosmos Hub", 7.0, 0.85, 6, "the staking asset securing the Cosmos Hub"),
    Asset("NEAR", "NEAR Protocol", 5.0, 1.00, 24, "the native asset of the sharded NEAR Protocol"),
    Asset("FIL", "Filecoin", 4.5, 1.00, 18, "the payment token of the Filecoin storage market"),
    Asset("APT", "Aptos", 8.0, 1.00, 8, "the native asset of the Move-based Aptos chain"),
    Asset("SUI", "Sui", 1.2, 1.10, 9, "the native asset of the object-centric Sui chain"),
    Asset("INJ", "Injective", 25.0, 1.10, 18, "the asset of the Injective derivatives chain"),
    Asset("RENDER", "Render", 7.0, 1.10, 18, "the payment token of the Render GPU network"),
    Asset("IMX", "Immutable", 1.5, 1.10, 18, "the token of the Immutable gaming rollup"),
    Asset("GRT", "The Graph", 0.2, 1.10, 18, "the indexer-staking token of The Graph network"),
    Asset("RPL", "Rocket Pool", 20.0, 1.00, 18, "the node-operator bond token of Rocket Pool"),
    Asset("1INCH", "1inch", 0.35, 1.10, 18, "the governance token of the 1inch swap aggregator"),
    Asset("PENDLE", "Pendle", 4.0, 1.20, 18, "the governance token of the Pendle yield market"),
    Asset("ENA", "Ethena", 0.5, 1.30, 18, "the governance token of Ethena's synthetic dollar"),
    Asset("EIGEN", "EigenLayer", 3.0, 1.20, 18, "the staking token of EigenLayer restaking"),
)


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
CEX, DEX, ORACLE = 0, 1, 2
"""Codes of a source's kind, as the vectorised engines store them per feed."""
KIND_CODES: Mapping[str, int] = MappingProxyType({"cex": CEX, "dex": DEX, "oracle": ORACLE})


@dataclass(frozen=True)
class ProtocolInfo:
    """A protocol of the reference set, as :func:`protocols` publishes it."""

    id: str
    name: str
    category: str
    chains: tuple[str, ...]
    tvl: float
    apy: float | None
    risk_score: float
    description: str


# TVL and APY are orders of magnitude from 2025, for realistic-looking analytics only.
PROTOCOLS: tuple[ProtocolInfo, ...] = (
    ProtocolInfo(
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
    ProtocolInfo(
        "compound-v3",
        "Compound III",
        "lending",
        CHAINS,
        2.5e9,
        4.2,
        0.2,
        "Single-borrowable-asset lending markets (Comet) with isolated collateral.",
    ),
    ProtocolInfo(
        "spark",
        "Spark",
        "lending",
        ("ethereum",),
        5e9,
        5.0,
        0.2,
        "Sky (MakerDAO) lending front end that supplies DAI at a governance-set rate.",
    ),
    ProtocolInfo(
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
    ProtocolInfo(
        "uniswap-v2",
        "Uniswap V2",
        "dex",
        CHAINS,
        1.5e9,
        12.0,
        0.2,
        "Constant-product automated market maker charging a 0.30% fee to liquidity providers.",
    ),
    ProtocolInfo(
        "sushiswap",
        "SushiSwap",
        "dex",
        ("ethereum", "arbitrum", "polygon"),
        3e8,
        15.0,
        0.3,
        "Community fork of the Uniswap V2 exchange with SUSHI rewards.",
    ),
    ProtocolInfo(
        "curve",
        "Curve Finance",
        "dex",
        ("ethereum", "arbitrum", "optimism", "polygon"),
        2.2e9,
        4.0,
        0.2,
        "StableSwap AMM for low-slippage trades between pegged assets such as stablecoins.",
    ),
    ProtocolInfo(
        "balancer-v2",
        "Balancer V2",
        "dex",
        ("ethereum", "arbitrum", "polygon", "base"),
        8e8,
        7.0,
        0.25,
        "Weighted multi-token pools acting as self-rebalancing index funds.",
    ),
    ProtocolInfo(
        "aerodrome",
        "Aerodrome",
        "dex",
        ("base",),
        1.5e9,
        25.0,
        0.35,
        "ve(3,3) exchange on Base where AERO voters direct emissions to liquidity pools.",
    ),
    ProtocolInfo(
        "velodrome",
        "Velodrome",
        "dex",
        ("optimism",),
        2e8,
        20.0,
        0.35,
        "Optimism's central liquidity hub, the Solidly-style predecessor of Aerodrome.",
    ),
    ProtocolInfo(
        "quickswap",
        "QuickSwap",
        "dex",
        ("polygon",),
        1e8,
        18.0,
        0.35,
        "Polygon-native exchange combining constant-product and concentrated pools.",
    ),
    ProtocolInfo(
        "1inch",
        "1inch",
        "dex-aggregator",
        CHAINS,
        0.0,
        None,
        0.2,
        "Swap router that splits an order across many DEXs for the best executed price.",
    ),
    ProtocolInfo(
        "lido",
        "Lido",
        "liquid-staking",
        ("ethereum",),
        30e9,
        3.1,
        0.15,
        "Liquid staking that pools ETH across node operators and issues rebasing stETH.",
    ),
    ProtocolInfo(
        "rocket-pool",
        "Rocket Pool",
        "liquid-staking",
        ("ethereum",),
        3e9,
        2.9,
        0.2,
        "Decentralised staking where bonded node operators run minipools backing rETH.",
    ),
    ProtocolInfo(
        "eigenlayer",
        "EigenLayer",
        "restaking",
        ("ethereum",),
        15e9,
        4.0,
        0.4,
        "Restaking layer that lets staked ETH secure additional services for extra yield.",
    ),
    ProtocolInfo(
        "makerdao",
        "MakerDAO",
        "cdp",
        ("ethereum",),
        6e9,
        6.0,
        0.2,
        "Collateralised debt positions minting the DAI stablecoin against vault deposits.",
    ),
    ProtocolInfo(
        "ethena",
        "Ethena",
        "synthetic-dollar",
        ("ethereum",),
        5e9,
        9.0,
        0.45,
        "Delta-neutral synthetic dollar USDe backed by staked ETH and short perpetuals.",
    ),
    ProtocolInfo(
        "gmx-v2",
        "GMX V2",
        "derivatives",
        ("arbitrum",),
        6e8,
        14.0,
        0.45,
        "Perpetual futures exchange where liquidity providers take the other side of traders.",
    ),
    ProtocolInfo(
        "synthetix",
        "Synthetix",
        "derivatives",
        ("ethereum", "optimism", "base"),
        5e8,
        8.0,
        0.5,
        "Derivatives liquidity layer where SNX stakers back synthetic assets.",
    ),
    ProtocolInfo(
        "yearn-v3",
        "Yearn V3",
        "yield-aggregator",
        ("ethereum", "arbitrum", "polygon"),
        4e8,
        6.5,
        0.3,
        "Automated vaults that rotate deposits across lending and LP strategies.",
    ),
    ProtocolInfo(
        "convex",
        "Convex Finance",
        "yield-aggregator",
        ("ethereum", "arbitrum"),
        1.2e9,
        7.5,
        0.3,
        "Boosts Curve LP rewards by pooling vote-locked CRV on users' behalf.",
    ),
    ProtocolInfo(
        "pendle",
        "Pendle",
        "yield-trading",
        ("ethereum", "arbitrum", "base"),
        4e9,
        8.0,
        0.4,
        "Splits yield-bearing tokens into principal and yield tokens that trade apart.",
    ),
    ProtocolInfo(
        "across",
        "Across",
        "bridge",
        CHAINS,
        1e8,
        None,
        0.3,
        "Intent-based bridge where relayers front funds on the destination chain in seconds.",
    ),
    ProtocolInfo(
        "stargate",
        "Stargate",
        "bridge",
        CHAINS,
        3e8,
        3.0,
        0.35,
        "LayerZero liquidity-pool bridge with unified native-asset liquidity across chains.",
    ),
    ProtocolInfo(
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
SWAP_VENUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ethereum": ("uniswap-v2", "sushiswap", "curve", "1inch"),
        "arbitrum": ("uniswap-v2", "sushiswap", "1inch"),
        "optimism": ("uniswap-v2", "velodrome", "1inch"),
        "base": ("uniswap-v2", "aerodrome", "1inch"),
        "polygon": ("uniswap-v2", "quickswap", "1inch"),
    }
)


class Universe:
    """What one simulator quotes: its assets in liquidity rank, its chains and price sources.

    A symbol's rank sets its share of ticks (Zipf weights ``1/(rank + 3)``), of pool depth and
    of volume, so the first symbols are the majors.
    """

    def __init__(
        self, assets: Sequence[Asset], chains: Sequence[str], sources: Sequence[SourceSpec]
    ) -> None:
        self.assets: tuple[Asset, ...] = tuple(assets)
        self.chains: tuple[str, ...] = tuple(chains)
        self.sources: tuple[SourceSpec, ...] = tuple(sources)
        self.tickers: tuple[str, ...] = tuple(a.ticker for a in self.assets)
        self.symbols: tuple[str, ...] = tuple(f"{t}/{QUOTE}" for t in self.tickers)
        self.symbol_index: Mapping[str, int] = MappingProxyType(
            {t: i for i, t in enumerate(self.tickers)}
        )
        rank = np.arange(len(self.assets))
        weights = 1.0 / (rank + _RANK_OFFSET)
        self.symbol_weights: np.ndarray = weights / weights.sum()
        self.symbol_cdf: np.ndarray = cdf(weights)

    def pick_symbol(self, rng: random.Random) -> int:
        """A symbol's index, drawn by tick weight with a scalar generator."""
        return pick(rng, self.symbol_cdf)


def draw_assets(count: int, rng: np.random.Generator) -> tuple[Asset, ...]:
    """The first ``count`` assets of :data:`ASSETS`, then long-tail tokens ``TKN41``, ... drawn
    from ``rng`` (only when ``count`` exceeds the fixed list)."""
    assets = list(ASSETS[:count])
    for rank in range(len(assets), count):
        number = rank + 1
        # Long-tail tokens: $0.01-$50, volatile (annualised 90-160 %).
        price = float(np.exp(rng.uniform(np.log(0.01), np.log(50.0))))
        assets.append(
            Asset(
                f"TKN{number}",
                f"Token {number}",
                price,
                float(rng.uniform(0.9, 1.6)),
                18,
                f"simulated long-tail token number {number} with thin liquidity",
            )
        )
    return tuple(assets)


def protocols(universe: Universe, updated_ms: int) -> list[DefiProtocol]:
    """Every protocol of :data:`PROTOCOLS` on the universe's chains, updated at ``updated_ms``."""
    updated = datetime_of(updated_ms)
    return [
        DefiProtocol(
            id=p.id,
            name=p.name,
            description=p.description,
            category=p.category,
            chains=tuple(c for c in p.chains if c in universe.chains),
            tvl=p.tvl,
            apy=p.apy,
            risk_score=p.risk_score,
            updated_at=updated,
        )
        for p in PROTOCOLS
    ]


def tokens(universe: Universe, updated_ms: int) -> list[DefiToken]:
    """Every asset on every chain of the universe, keyed by a deterministic address."""
    updated = datetime_of(updated_ms)
    # The peg as the price engine holds it (exp of the log price): bit for bit its starting mid.
    pegs = np.exp(np.log(np.array([a.price_usd for a in universe.assets]))).tolist()
    messages = []
    for asset, price in zip(universe.assets, pegs, strict=True):
        # A rough circulating supply (1e8 for the high-priced, 1e10 for the rest): caps of a
        # plausible order of magnitude, for display only.
        supply = 1e8 if asset.price_usd > 100 else 1e10
        for chain in universe.chains:
            messages.append(
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
    return messages


def cdf(weights: np.ndarray) -> np.ndarray:
    """The cumulative distribution of ``weights`` for :func:`pick` and ``np.searchsorted``."""
    result = np.cumsum(weights / weights.sum())
    result[-1] = 1.0  # uniform draws in [0, 1) then always land on a valid index
    return result


def pick(rng: random.Random, distribution: np.ndarray) -> int:
    """An index drawn from a :func:`cdf` with one scalar draw of ``rng``."""
    return int(np.searchsorted(distribution, rng.random(), side="right"))


def _address(chain: str, ticker: str) -> str:
    # A stable pseudo-address: 20 bytes of a hash, distinct per (chain, token).
    return "0x" + hashlib.sha256(f"{chain}:{ticker}".encode()).hexdigest()[:40]
