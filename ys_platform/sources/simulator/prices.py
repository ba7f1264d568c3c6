"""The price engine: ``market.prices`` ticks of every feed, with the price anomalies.

Each symbol has a hidden mid price following a geometric random walk (per-symbol annualised
volatility, scaled by ``volatility_scale`` so a demo lasting minutes sees the moves of hours);
stablecoins stay on their peg with small noise. A tick comes from one *feed*: a source on a chain.
CEX sources quote ``offchain`` with a ``volume``; oracles quote on every chain; DEX sources are
constant-product pools on chains and carry ``reserve_base``, ``reserve_quote``
(``reserve_quote / reserve_base == price``, ``k`` fixed per pool) and ``liquidity_usd`` (both
sides). Majors tick more often than the long tail (the universe's Zipf weights).

Anomalies are scheduled in event time by their own random streams: cross-chain *dislocations*
(one DEX pool of one symbol on one chain off by 0.5-3 % for 20-90 s, decaying linearly to zero),
*stale* sources (a source stops ticking a symbol for 45-300 s) and *outliers* (one tick 10-50 %
off). Generation is vectorised over chunks of ticks (:meth:`PriceEngine.draw`).
"""

from __future__ import annotations

import gc
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np

from ys_platform.catalog.models import MarketPrice
from ys_platform.sources.simulator.anomalies import Anomaly, AnomalyLog
from ys_platform.sources.simulator.clock import datetime_of
from ys_platform.sources.simulator.reference import (
    CEX,
    DEX,
    KIND_CODES,
    OFFCHAIN,
    ORACLE,
    QUOTE,
    Universe,
    cdf,
)

_YEAR_MS = 365.25 * 86_400_000

# Per-tick noise of a feed around the mid (std-dev of the log price): venues agree to a few bps.
_FEED_NOISE = {CEX: 0.0002, DEX: 0.0005, ORACLE: 0.0001}
# Std-dev of a stablecoin's log price around its peg.
_PEG_NOISE = 0.0003
# Depth of the deepest pool (ETH on Ethereum), USD; rank r gets 1/(r+1) of it, times the chain's
# share below (L2 pools are thinner than mainnet's).
_TOP_POOL_USD = 60e6
_CHAIN_DEPTH = {"ethereum": 1.0, "arbitrum": 0.4, "base": 0.3, "optimism": 0.2, "polygon": 0.15}
# USD traded between two CEX ticks of the top symbol (rank r: 1/(r+1) of it), lognormal.
_TOP_TICK_VOLUME_USD = 250_000.0
_VOLUME_SIGMA = 1.0


class Ticks(NamedTuple):
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


class PriceEngine:
    """The mids, feeds and price anomalies of a :class:`Universe`; draws ticks at given times.

    ``setup_rng`` is drawn from here only (pool depths), so the caller decides where in its
    setup sequence that happens; the other generators are the engine's own streams.
    """

    def __init__(
        self,
        universe: Universe,
        *,
        start_ms: int,
        volatility_scale: float,
        setup_rng: np.random.Generator,
        tick_rng: np.random.Generator,
        dislocation_rng: np.random.Generator,
        stale_rng: np.random.Generator,
        outlier_rng: np.random.Generator,
        dislocation_every_s: float,
        stale_every_s: float,
        outlier_every_s: float,
        log: AnomalyLog,
    ) -> None:
        self._universe = universe
        self._log = log
        self._tick_rng = tick_rng
        self._dislocation_rng = dislocation_rng
        self._stale_rng = stale_rng
        self._outlier_rng = outlier_rng
        assets = universe.assets
        self._log_mid = np.log(np.array([a.price_usd for a in assets]))
        self._log_peg = self._log_mid.copy()
        self._pegged = np.array([a.annual_vol is None for a in assets])
        annual = np.array([a.annual_vol or 0.0 for a in assets])
        self._sigma = annual * volatility_scale / math.sqrt(_YEAR_MS)  # per sqrt(ms)
        self._last_ms = np.full(len(assets), start_ms, dtype=np.int64)
        self._volume_usd = _TOP_TICK_VOLUME_USD / (np.arange(len(assets)) + 1)
        self._setup_feeds(setup_rng)
        self._setup_anomalies(start_ms, dislocation_every_s, stale_every_s, outlier_every_s)
        self.mid: list[float] = np.exp(self._log_mid).tolist()
        """The latest mid of every symbol (by index): the walk's state as plain floats, moved
        by the caller tick by tick while it yields them (see :meth:`sync_mids`)."""

    @property
    def feeds(self) -> tuple[tuple[int, str], ...]:
        """(source index, chain) of every feed."""
        return self._feeds

    @property
    def feed_kinds(self) -> list[int]:
        """The kind code (:data:`CEX`, :data:`DEX`, :data:`ORACLE`) of every feed."""
        return self._feed_kind.tolist()

    @property
    def tick_fields(self) -> list[list[dict[str, str]]]:
        """What each (symbol, feed) tick says about itself: ``tick_fields[symbol][feed]``."""
        return self._tick_fields

    def sync_mids(self) -> None:
        """Set :attr:`mid` to the walk's state after the last chunk drawn."""
        self.mid = np.exp(self._log_mid).tolist()

    def mid_prices(self) -> dict[str, float]:
        """:attr:`mid` by ticker."""
        return dict(zip(self._universe.tickers, self.mid, strict=True))

    def dislocated_routes(self) -> list[tuple[str, str]]:
        """(ticker, chain) of every active dislocation on a chain, oldest first."""
        chains = self._universe.chains
        routes = [(d.symbol, self._feeds[d.feed][1]) for d in self._dislocations]
        return [(self._universe.tickers[s], chain) for s, chain in routes if chain in chains]

    # --- setup --------------------------------------------------------------------------------

    def _setup_feeds(self, rng: np.random.Generator) -> None:
        universe = self._universe
        feeds: list[tuple[int, str]] = []
        for index, source in enumerate(universe.sources):
            chains = universe.chains if source.chains is None else source.chains
            feeds += [
                (index, chain) for chain in chains if chain == OFFCHAIN or chain in universe.chains
            ]
        if not feeds:  # e.g. sources=1 with a DEX missing from the configured chains
            raise ValueError("no source quotes on the configured chains")
        self._feeds = tuple(feeds)
        self._feed_source = np.array([s for s, _ in feeds])
        self._feed_kind = np.array([KIND_CODES[universe.sources[s].kind] for s, _ in feeds])
        self._feed_noise = np.array([_FEED_NOISE[k] for k in self._feed_kind.tolist()])
        self._feed_cdf = cdf(np.array([universe.sources[s].weight for s, _ in feeds]))
        self._dex_feeds = [i for i, k in enumerate(self._feed_kind.tolist()) if k == DEX]
        # Pool constant k = reserve_base * reserve_quote, fixed per pool (NaN off a DEX).
        n_symbols = len(universe.assets)
        depth = np.zeros((n_symbols, len(feeds)))
        for f, (_, chain) in enumerate(feeds):
            if self._feed_kind[f] == DEX:
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
        self._tick_fields = [
            [
                {
                    "symbol": symbol,
                    "base": a.ticker,
                    "quote": QUOTE,
                    "source": universe.sources[s].name,
                    "chain": chain,
                    "venue": universe.sources[s].name,
                }
                for s, chain in feeds
            ]
            for symbol, a in zip(universe.symbols, universe.assets, strict=True)
        ]

    def _setup_anomalies(
        self, start_ms: int, dislocation_s: float, stale_s: float, outlier_s: float
    ) -> None:
        self._dislocation_mean_ms = dislocation_s * 1000
        self._stale_mean_ms = stale_s * 1000
        self._outlier_mean_ms = outlier_s * 1000
        self._next_dislocation_ms = start_ms + self._dislocation_rng.exponential(
            self._dislocation_mean_ms
        )
        # A stale source only means something with a second source to fall back on.
        multi_source = len(self._universe.sources) > 1
        self._next_stale_ms = start_ms + (
            self._stale_rng.exponential(self._stale_mean_ms) if multi_source else math.inf
        )
        self._next_outlier_ms = start_ms + self._outlier_rng.exponential(self._outlier_mean_ms)
        self._dislocations: list[_Dislocation] = []
        self._outliers: deque[tuple[float, float]] = deque()  # (at_ms, factor)
        n_sources = len(self._universe.sources)
        self._stale_until = np.zeros((len(self._universe.assets), n_sources), dtype=np.int64)

    # --- ticks --------------------------------------------------------------------------------

    def draw(self, ts: np.ndarray) -> Ticks:
        """Price ticks at event times ``ts`` (sorted): the vectorised core of every price path."""
        n = ts.size
        rng = self._tick_rng
        self._schedule_price_anomalies(int(ts[-1]))
        symbol = np.searchsorted(self._universe.symbol_cdf, rng.random(n), side="right")
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
        volume = np.where(kind == CEX, traded_usd / price, np.nan)
        k = self._pool_k[symbol, feed]
        reserve_quote = np.sqrt(k * price)  # x*y = k and y/x = price
        reserve_base = np.sqrt(k / price)
        return Ticks(
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
        symbol_cdf = self._universe.symbol_cdf
        stale = self._stale_until[symbol, self._feed_source[feed]] > ts
        for attempt in range(64):  # 64 re-draws: a still-stale tick after them is ~never seen
            idx = np.flatnonzero(stale)
            if idx.size == 0:
                return
            if attempt >= 8:  # every source of this symbol may be stale: pick another symbol
                symbol[idx] = np.searchsorted(symbol_cdf, rng.random(idx.size), "right")
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
        symbol = int(np.searchsorted(self._universe.symbol_cdf, rng.random(), side="right"))
        # A DEX pool is what drifts from the rest of the market; without DEXs, any feed.
        pool = self._dex_feeds or list(range(len(self._feeds)))
        feed = pool[int(rng.integers(len(pool)))]
        magnitude = float(rng.uniform(0.005, 0.03)) * (1.0 if rng.random() < 0.5 else -1.0)
        end_ms = at_ms + int(rng.uniform(20_000, 90_000))
        self._dislocations.append(_Dislocation(symbol, feed, at_ms, end_ms, magnitude))
        source, chain = self._feeds[feed]
        self._log.record(
            Anomaly(
                "dislocation",
                at_ms,
                end_ms,
                self._universe.symbols[symbol],
                self._universe.sources[source].name,
                chain,
                magnitude,
            )
        )

    def _new_stale(self, at_ms: int) -> None:
        rng = self._stale_rng
        universe = self._universe
        symbol = int(np.searchsorted(universe.symbol_cdf, rng.random(), side="right"))
        source = int(rng.integers(len(universe.sources)))
        end_ms = at_ms + int(rng.uniform(45_000, 300_000))
        self._stale_until[symbol, source] = max(int(self._stale_until[symbol, source]), end_ms)
        self._log.record(
            Anomaly("stale", at_ms, end_ms, universe.symbols[symbol], universe.sources[source].name)
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
                self._log.injected["dislocated_ticks"] += int(hit.sum())
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
            self._log.record(
                Anomaly(
                    "outlier",
                    int(ts[i]),
                    int(ts[i]),
                    self._universe.symbols[int(symbol[i])],
                    self._universe.sources[source].name,
                    chain,
                    factor - 1.0,
                )
            )

    def models(self, ticks: Ticks) -> list[MarketPrice]:
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
                    when = times[at] = datetime_of(at)
                kind = kinds[f]
                if kind == DEX:
                    extra = {
                        "reserve_base": base,
                        "reserve_quote": quote,
                        "liquidity_usd": liquidity,
                    }
                elif kind == CEX:
                    extra = {"volume": volume}
                else:
                    extra = {}
                append(validate({**fields[s][f], "price": price, **extra, "ts": when}))
        finally:
            if gc_was_enabled:
                gc.enable()
        return models
