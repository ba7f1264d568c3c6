"""``crosschain.events``: gas prices per chain and bridge quotes between chains, with gas spikes.

:class:`GasPrice` is a typical swap's cost in USD on a chain; :class:`BridgeQuote`'s ``fee_usd``
is the fixed part of a bridge's price (gas at both ends plus the relayer), ``fee_bps`` the part
proportional to the notional (the arbitrage processor's ``BridgeCost(fixed_usd, bps)``). While a
price dislocation is on, half the quotes are for its route. *Gas spikes* (a chain's gas x3-10,
decaying) are scheduled in event time by their own random stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ys_platform.catalog.models import BridgeQuote, CrosschainEvent, GasPrice
from ys_platform.sources.simulator.anomalies import Anomaly, AnomalyLog
from ys_platform.sources.simulator.clock import datetime_of
from ys_platform.sources.simulator.reference import Universe

# Gas of a typical swap in USD at rest, and its per-quote noise.
_GAS_USD = {"ethereum": 3.0, "arbitrum": 0.05, "optimism": 0.03, "base": 0.02, "polygon": 0.01}
_GAS_NOISE = 0.15
# Share of crosschain.events that are gas prices (the rest are bridge quotes).
_GAS_SHARE = 0.4
# Share of bridge quotes asked for an asset/route with an active dislocation: arbitrageurs ask
# for the routes that pay.
_QUOTE_DISLOCATION_SHARE = 0.5


@dataclass(slots=True)
class _GasSpike:
    chain: str
    start_ms: int
    multiple: float
    decay_ms: float


class CrosschainMarket:
    """Gas and bridge quotes of a universe's chains at given event times.

    ``rng`` is the simulator's shared scalar stream (its draws interleave with the users'),
    ``gas_rng`` the gas spikes' own; ``dislocated_routes`` gives the (ticker, chain) of the
    price dislocations active now.
    """

    def __init__(
        self,
        universe: Universe,
        *,
        start_ms: int,
        rng: random.Random,
        gas_rng: random.Random,
        gas_spike_every_s: float,
        dislocated_routes: Callable[[], list[tuple[str, str]]],
        log: AnomalyLog,
    ) -> None:
        self._universe = universe
        self._chains = universe.chains
        self._rng = rng
        self._gas_rng = gas_rng
        self._dislocated_routes = dislocated_routes
        self._log = log
        self._gas_turn = 0
        self._gas_spikes: list[_GasSpike] = []
        self._gas_spike_mean_ms = gas_spike_every_s * 1000
        if math.isfinite(gas_spike_every_s):
            self._next_gas_spike_ms = start_ms + gas_rng.expovariate(1.0 / gas_spike_every_s) * 1000
        else:  # math.inf disables spikes (expovariate(0) would divide by zero)
            self._next_gas_spike_ms = math.inf

    def event(self, at_ms: int) -> CrosschainEvent:
        """The next gas price (round-robin over chains) or bridge quote, at ``at_ms``."""
        self._schedule_gas_spikes(at_ms)
        rng = self._rng
        when = datetime_of(at_ms)
        if len(self._chains) < 2 or rng.random() < _GAS_SHARE:
            # Round-robin over chains: each chain's gas is refreshed at a steady cadence.
            chain = self._chains[self._gas_turn % len(self._chains)]
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
        dislocated = self._dislocated_routes()
        if dislocated and rng.random() < _QUOTE_DISLOCATION_SHARE:
            asset, chain = rng.choice(dislocated)
            other = rng.choice([c for c in self._chains if c != chain])
            return (asset, other, chain) if rng.random() < 0.5 else (asset, chain, other)
        index = self._universe.pick_symbol(rng)
        from_chain, to_chain = rng.sample(self._chains, 2)
        return self._universe.tickers[index], from_chain, to_chain

    def _schedule_gas_spikes(self, until_ms: int) -> None:
        rng = self._gas_rng
        while self._next_gas_spike_ms <= until_ms:
            at = int(self._next_gas_spike_ms)
            chain = rng.choice(self._chains)
            spike = _GasSpike(chain, at, rng.uniform(3.0, 10.0), rng.uniform(30_000, 120_000))
            self._gas_spikes.append(spike)
            # Reported as over after three decay times (the excess is down to 5 %).
            self._log.record(
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
