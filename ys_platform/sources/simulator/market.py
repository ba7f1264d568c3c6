"""The facade: one seeded :class:`MarketSimulator` composing the parts, and the event stream.

The mix of :meth:`MarketSimulator.events` (:data:`DEFAULT_MIX`): 85 % market.prices, 5 %
crosschain.events, 5 % defi.transactions, 5 % users.portfolios — exact over any long stretch,
because each message goes to the topic furthest behind its share (the initial snapshots count).
Messages are scheduled by their own random stream, so the parts' streams (prices, anomalies,
users) do not depend on the rate.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from ys_platform.catalog.models import (
    DefiProtocol,
    DefiToken,
    MarketPrice,
    Message,
)
from ys_platform.sources.simulator import reference
from ys_platform.sources.simulator.anomalies import Anomaly, AnomalyLog
from ys_platform.sources.simulator.clock import DEFAULT_START_MS
from ys_platform.sources.simulator.crosschain import CrosschainMarket
from ys_platform.sources.simulator.encoding import TickEncoder
from ys_platform.sources.simulator.lending import LendingBook, liquidation_thresholds
from ys_platform.sources.simulator.prices import PriceEngine, Ticks
from ys_platform.sources.simulator.reference import CHAINS, SOURCES, SourceSpec, Universe

PRICES = "market.prices"
CROSSCHAIN = "crosschain.events"
TRANSACTIONS = "defi.transactions"
PORTFOLIOS = "users.portfolios"

DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {PRICES: 0.85, CROSSCHAIN: 0.05, TRANSACTIONS: 0.05, PORTFOLIOS: 0.05}
)
"""Share of each topic in :meth:`MarketSimulator.events` (sums to 1)."""

# Ticks per chunk of the vectorised price engine: large enough that numpy's per-call overhead is
# amortised, small enough (a few MB of arrays) to stay in cache and keep generation lazy.
_TICK_CHUNK = 65_536
# Messages per chunk of events(): the schedule of a chunk is drawn at once, then walked.
_EVENT_CHUNK = 4_096
# Upper bound of one events() chunk in event time, so a slow stream does not pre-draw hours.
_MAX_EVENT_CHUNK_S = 60.0


class MarketSimulator:
    """A seeded generator of catalog messages; see :mod:`ys_platform.sources.simulator`.

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
        log = AnomalyLog()
        self.injected: Counter[str] = log.injected
        """How many anomalies were injected, by kind (see :class:`AnomalyLog`)."""
        self.anomalies: deque[Anomaly] = log.anomalies

        # Independent streams, so that e.g. the anomaly schedule does not depend on the rate.
        streams = np.random.SeedSequence(seed).spawn(8)
        self._schedule_rng = np.random.default_rng(streams[1])
        setup_rng = np.random.default_rng(streams[5])
        # Scalar draws of the slow path (users, transactions, crosschain): `random` is ~10x
        # cheaper per scalar than numpy. One stream shared by cross-chain and lending.
        rng = random.Random(int(streams[6].generate_state(1, np.uint64)[0]))
        gas_rng = random.Random(int(streams[7].generate_state(1, np.uint64)[0]))

        # The setup draws from setup_rng in this order (long-tail assets, liquidation
        # thresholds, pool depths, users): the order is part of what a seed gives.
        self._universe = Universe(
            reference.draw_assets(symbols, setup_rng), self.chains, self.sources
        )
        self.symbols: tuple[str, ...] = self._universe.symbols
        thresholds = liquidation_thresholds(self._universe, setup_rng)
        self._prices = PriceEngine(
            self._universe,
            start_ms=self.start_ms,
            volatility_scale=volatility_scale,
            setup_rng=setup_rng,
            tick_rng=np.random.default_rng(streams[0]),
            dislocation_rng=np.random.default_rng(streams[2]),
            stale_rng=np.random.default_rng(streams[3]),
            outlier_rng=np.random.default_rng(streams[4]),
            dislocation_every_s=dislocation_every_s,
            stale_every_s=stale_every_s,
            outlier_every_s=outlier_every_s,
            log=log,
        )
        self._crosschain = CrosschainMarket(
            self._universe,
            start_ms=self.start_ms,
            rng=rng,
            gas_rng=gas_rng,
            gas_spike_every_s=gas_spike_every_s,
            dislocated_routes=self._prices.dislocated_routes,
            log=log,
        )
        self._lending = LendingBook(
            self._universe,
            thresholds,
            users,
            start_ms=self.start_ms,
            setup_rng=setup_rng,
            rng=rng,
            mid_prices=self._prices.mid_prices,
            log=log,
        )
        self._encoder = TickEncoder(self.symbols, self._prices.tick_fields, self._prices.feed_kinds)

        self._clock_ms = float(self.start_ms)
        self._started = False
        self._counts = dict.fromkeys(DEFAULT_MIX, 0)
        self._emitted = 0

    # --- public API ---------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """Event time reached so far (epoch ms)."""
        return int(self._clock_ms)

    @property
    def users(self) -> tuple[str, ...]:
        return self._lending.user_ids

    def mid_prices(self) -> dict[str, float]:
        """The hidden USD mid price of every asset (by ticker) at the current point of the stream.

        During :meth:`events` it is the mid of the latest price tick yielded for each symbol.
        """
        return self._prices.mid_prices()

    def health_factor(self, user_id: str) -> float | None:
        """A user's Aave health factor at :meth:`mid_prices` (None without debt)."""
        return self._lending.user_health_factor(user_id)

    def reference_messages(self) -> list[Message]:
        """``defi.protocols`` then ``defi.tokens``: the fixed reference set, at ``start_ms``."""
        return [*self.protocols(), *self.tokens()]

    def protocols(self) -> list[DefiProtocol]:
        """At least 20 well-known protocols with category, chains, TVL, APY and a description."""
        return reference.protocols(self._universe, self.start_ms)

    def tokens(self) -> list[DefiToken]:
        """Every simulated asset on every configured chain, keyed by a deterministic address."""
        return reference.tokens(self._universe, self.start_ms)

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

    def price_ticks(self, n: int, *, rate: float = 10_000.0) -> Iterator[MarketPrice]:
        """``n`` validated ``market.prices`` ticks at ``rate`` ticks per second of event time."""
        for ticks in self._tick_chunks(n, rate):
            yield from self._prices.models(ticks)

    def encoded_price_ticks(
        self, n: int, *, rate: float = 10_000.0
    ) -> Iterator[tuple[bytes, bytes, int]]:
        """The fast path: ``(key, value, timestamp_ms)`` of ``n`` ticks, JSON written directly.

        The bytes are exactly what ``codec.encode`` makes of the tick :meth:`price_ticks` would
        yield (same seed, same calls), at several times the speed.
        """
        for ticks in self._tick_chunks(n, rate):
            yield from self._encoder.encode(ticks)

    # --- the stream ---------------------------------------------------------------------------

    def _events(self, duration_s: float, rate: float) -> Iterator[Message]:
        if not self._started:
            self._started = True
            for snapshot in self._lending.initial_snapshots(int(self._clock_ms)):
                self._count(PORTFOLIOS)
                yield snapshot
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
        engine = self._prices
        ticks = engine.draw(ts[is_price]) if is_price.any() else None
        prices = iter(engine.models(ticks)) if ticks is not None else iter(())
        symbols = ticks.symbol.tolist() if ticks is not None else []
        mids = ticks.mid.tolist() if ticks is not None else []
        tick = 0
        for topic, at in zip(topics, ts.tolist(), strict=True):
            if topic == PRICES:
                # The mid moves as the ticks are yielded, so other messages see the price "now".
                engine.mid[symbols[tick]] = mids[tick]
                tick += 1
                yield next(prices)
            elif topic == CROSSCHAIN:
                yield self._crosschain.event(at)
            elif topic == TRANSACTIONS:
                yield self._lending.transaction(at)
            else:
                yield self._lending.next_snapshot(at)

    def _tick_chunks(self, n: int, rate: float) -> Iterator[Ticks]:
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
            ticks = self._prices.draw(ts)
            self._prices.sync_mids()
            done += size
            yield ticks
