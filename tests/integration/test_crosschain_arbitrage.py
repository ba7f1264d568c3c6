"""The cross-chain arbitrage processor end to end on the local broker.

* A hand-made scenario: exactly the expected opportunities (a dislocation, then the same one
  persisting, then its profit moving), nothing from CEX/oracle ticks, a stale quote, a route
  without a bridge quote or a spread under the fees; poison messages dead-lettered with reasons.
* A simulator run: the worker's output (small batches, three partitions, reference data through
  the broadcast reader) equals the logic run directly on each partition's records, and every
  opportunity is above the thresholds and recomputes exactly from its own fields and the inputs.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter
from datetime import UTC, datetime, timedelta

from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import DecodeError, decode, decode_batch, encode, timestamp_ms
from ys_platform.catalog.models import (
    ArbitrageOpportunity,
    BridgeQuote,
    GasPrice,
    MarketPrice,
    Message,
)
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.processing.amm import get_amount_out
from ys_platform.processing.arbitrage import (
    BridgeCost,
    VenueQuote,
    evaluate_pair,
    liquidity_adjusted_score,
    spread_bps,
)
from ys_platform.processors.crosschain_arbitrage import (
    GROUP,
    ID_NAMESPACE,
    ArbitrageConfig,
    CrosschainArbitrageProcessor,
)
from ys_platform.processors.runner import run_processor
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming import dead_letter
from ys_platform.streaming.worker import WorkerConfig

TOPICS = ["market.prices", "crosschain.events", "crosschain.arbitrage", GROUP.dead_letter_topic]
CONFIG = ArbitrageConfig()
TTL = timedelta(milliseconds=CONFIG.ttl_ms)
# Event time of the scenarios: two minutes before the wall clock, so the broadcast reader's
# lookback (ten minutes before now, by record timestamp) covers all the reference data.
SCENARIO_AGE_MS = 120_000


def _now_ms() -> int:
    return int(time.time()) * 1000 - SCENARIO_AGE_MS


def _setup(local_stack) -> tuple[KafkaConnection, str]:
    namespace = f"t{uuid.uuid4().hex[:8]}."
    connection = local_stack.kafka
    create_namespaced_topics(connection.admin(), namespace, TOPICS, partitions=3)
    return connection, namespace


def _produce(connection: KafkaConnection, namespace: str, messages: list[Message]) -> None:
    producer = connection.producer()
    for message in messages:
        key, value, headers = encode(message)
        topic = "crosschain.events" if isinstance(message, GasPrice | BridgeQuote) else None
        topic = topic or ("market.prices" if isinstance(message, MarketPrice) else None)
        assert topic is not None
        producer.produce(
            f"{namespace}{topic}", value, key, headers=headers, timestamp=timestamp_ms(message)
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def _run(local_stack, namespace: str, batch_size: int):
    return run_processor(
        local_stack,
        GROUP.group_id,
        config=WorkerConfig(batch_size=batch_size, namespace=namespace),
        stop=threading.Event(),
        max_idle_s=4.0,
    )


def _outputs(connection: KafkaConnection, namespace: str) -> list[ArbitrageOpportunity]:
    records = read_topic(connection, f"{namespace}crosschain.arbitrage")
    outputs = [decode("crosschain.arbitrage", r.value()) for r in records]
    assert all(r.key() == o.symbol.encode() for r, o in zip(records, outputs, strict=True))
    return sorted(outputs, key=lambda o: (o.detected_at, o.id))  # type: ignore[attr-defined]


# --- the hand-made scenario ----------------------------------------------------------------------

GAS = {"ethereum": 3.0, "arbitrum": 0.05, "base": 0.02, "optimism": 0.03}


def _tick(
    symbol: str, chain: str, venue: str, at: datetime, reserves: tuple[float, float] | None
) -> MarketPrice:
    base = symbol.split("/")[0]
    if reserves is None:  # a CEX or an oracle: a price, no depth
        price = {"ETH": 2_900.0}.get(base, 1.0) if chain == "offchain" else 3_200.0
        return MarketPrice(
            symbol=symbol, base=base, quote="USD", price=price, source=venue, chain=chain,
            venue=venue, ts=at,
        )  # fmt: skip
    x, y = reserves
    return MarketPrice(
        symbol=symbol, base=base, quote="USD", price=y / x, source=venue, chain=chain,
        venue=venue, reserve_base=x, reserve_quote=y, liquidity_usd=2 * y, ts=at,
    )  # fmt: skip


def _poison(t0: datetime) -> list[tuple[bytes, bytes]]:
    stamp = t0.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fields = '"base": "ETH", "quote": "USD", "source": "u", "chain": "base", "venue": "u"'
    return [
        (b"ETH/USD", b"{not json"),
        (b"ETH/USD", f'{{"symbol": "ETH/USD", {fields}, "price": -1.0, "ts": "{stamp}"}}'.encode()),
        (
            b"ETH/USD",
            f'{{"symbol": "ETH/USD", {fields}, "price": 3000.0, "reserve_base": 1000.0,'
            f' "ts": "{stamp}"}}'.encode(),
        ),
    ]


def test_hand_made_scenario_exact_opportunities_and_dead_letters(local_stack):
    connection, namespace = _setup(local_stack)
    t0_ms = _now_ms()
    t0 = datetime.fromtimestamp(t0_ms / 1000, UTC)

    def at(ms: int) -> datetime:
        return t0 + timedelta(milliseconds=ms)

    before = at(-1_000)
    reference: list[Message] = [GasPrice(chain=c, gas_usd=g, ts=before) for c, g in GAS.items()]
    routes = [
        ("arbitrum", "base", "ETH"),
        ("arbitrum", "optimism", "ETH"),  # would pay for the stale Optimism quote
        ("base", "arbitrum", "BTC"),  # BTC is cheap on Arbitrum: this is the useless direction
        ("arbitrum", "base", "SOL"),
    ]
    reference += [
        BridgeQuote(from_chain=f, to_chain=t, asset=a, fee_usd=1.0, fee_bps=5.0, latency_s=90.0,
                    ts=before)
        for f, t, a in routes
    ]  # fmt: skip

    arb_eth, base_eth, base_eth_2 = (1_000.0, 3e6), (1_000.0, 3.1e6), (1_000.0, 3.05e6)
    ticks = [
        _tick("ETH/USD", "arbitrum", "uniswap-v2", at(0), arb_eth),
        _tick("ETH/USD", "offchain", "binance", at(10), None),  # 2900: CEX, not a leg
        _tick("ETH/USD", "base", "chainlink", at(20), None),  # 3200: an oracle, not a venue
        _tick("ETH/USD", "base", "aerodrome", at(100), base_eth),  # -> opportunity 1
        _tick("ETH/USD", "base", "aerodrome", at(1_000), base_eth),  # persisting: no record
        _tick("ETH/USD", "base", "aerodrome", at(2_000), base_eth_2),  # profit moved: record 2
        # 3300 on Optimism, but stamped 40 s before the watermark: stale, ignored.
        _tick("ETH/USD", "optimism", "velodrome", at(-40_000), (1_000.0, 3.3e6)),
        # BTC 4 % dearer on Base, but no Arbitrum -> Base bridge quote for BTC.
        _tick("BTC/USD", "arbitrum", "uniswap-v2", at(0), (100.0, 10e6)),
        _tick("BTC/USD", "base", "aerodrome", at(100), (100.0, 10.4e6)),
        # SOL 40 bps dearer on Base: over min_spread_bps, under the two pool fees.
        _tick("SOL/USD", "arbitrum", "uniswap-v2", at(0), (10_000.0, 1.5e6)),
        _tick("SOL/USD", "base", "aerodrome", at(100), (10_000.0, 1.506e6)),
    ]
    # A pool tick whose price (3300) contradicts its reserves (3000): rejected by the logic.
    inconsistent = _tick("ETH/USD", "optimism", "velodrome", at(2_500), (1_000.0, 3e6))
    inconsistent = inconsistent.model_copy(update={"price": 3_300.0})
    _produce(connection, namespace, reference)
    _produce(connection, namespace, [*ticks, inconsistent])
    poison = _poison(t0)
    producer = connection.producer()
    for key, value in poison:
        producer.produce(f"{namespace}market.prices", value, key)
    assert producer.flush(30) == 0

    # Batches of 7: the scenario's ticks are spread over several transactions.
    metrics = _run(local_stack, namespace, batch_size=7)
    assert metrics.consumed == len(ticks) + 1 + len(poison)
    assert metrics.dead_lettered == 1 + len(poison)

    outputs = _outputs(connection, namespace)
    assert metrics.produced == len(outputs) == 2
    bridge = BridgeCost(1.0, 5.0)
    for opp, (sell_pool, detected) in zip(
        outputs, [(base_eth, at(100)), (base_eth_2, at(2_000))], strict=True
    ):
        buy = VenueQuote("arbitrum", "uniswap-v2", 3_000.0, gas_usd=0.05, reserve_base=1e3,
                         reserve_quote=3e6)  # fmt: skip
        sell_price = sell_pool[1] / sell_pool[0]
        sell = VenueQuote("base", "aerodrome", sell_price, gas_usd=0.02,
                          reserve_base=sell_pool[0], reserve_quote=sell_pool[1])  # fmt: skip
        lib = evaluate_pair("ETH/USD", buy, sell, bridge)
        detected_ms = t0_ms + (100 if detected == at(100) else 2_000)
        key = "ETH/USD|arbitrum|uniswap-v2|base|aerodrome"
        s = lib.score
        assert opp == ArbitrageOpportunity(
            id=str(uuid.uuid5(ID_NAMESPACE, f"{key}|{detected_ms}")),
            symbol="ETH/USD",
            buy_chain="arbitrum",
            buy_venue="uniswap-v2",
            buy_price=3_000.0,
            sell_chain="base",
            sell_venue="aerodrome",
            sell_price=sell_price,
            spread_bps=spread_bps(3_000.0, sell_price),
            trade_size=float(get_amount_out(lib.trade_size_usd, 3e6, 1e3)),
            expected_profit_usd=lib.expected_profit_usd,
            score=s / (s + CONFIG.score_half_profit_usd),
            detected_at=detected,
            expires_at=detected + TTL,
        )
    # 262.68 USD (see the unit test's arithmetic), then ~64.8 USD once Base fell to 3050.
    assert math.isclose(outputs[0].expected_profit_usd, 262.684, abs_tol=1e-3)
    assert outputs[1].expected_profit_usd < 0.75 * outputs[0].expected_profit_usd

    dead = read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}")
    reasons = Counter(dead_letter.header(r.headers(), dead_letter.ERROR) for r in dead)
    expected = Counter(_decode_error(value) for _, value in poison)
    expected[
        "pool tick inconsistent: reserves imply price 3000 but price is 3300 "
        "(1000.0 bps apart, more than 50)"
    ] += 1
    assert reasons == expected
    for record in dead:
        assert dead_letter.header(record.headers(), dead_letter.GROUP) == (
            f"{namespace}{GROUP.group_id}"
        )


def _decode_error(value: bytes) -> str:
    try:
        decode("market.prices", value)
    except DecodeError as exc:
        return str(exc)
    raise AssertionError(f"{value!r} decoded")


# --- the simulator run ---------------------------------------------------------------------------


def test_simulated_market_opportunities_recompute_from_their_inputs(local_stack):
    connection, namespace = _setup(local_stack)
    # Dislocations every ~10 s over 100 s of a market of 8 symbols (pools on five chains).
    sim = MarketSimulator(
        5, symbols=8, users=0, start_ms=_now_ms() - 100_000, dislocation_every_s=10.0
    )
    events = list(sim.events(duration_s=100, rate=800))
    reference = [m for m in events if isinstance(m, GasPrice | BridgeQuote)]
    prices = [m for m in events if isinstance(m, MarketPrice)]
    _produce(connection, namespace, reference)  # reference first: the broadcast start reads it
    _produce(connection, namespace, prices)

    metrics = _run(local_stack, namespace, batch_size=500)
    assert metrics.consumed == len(prices)
    assert metrics.dead_lettered == 0
    outputs = _outputs(connection, namespace)
    assert metrics.produced == len(outputs)
    assert len(outputs) >= 10, sim.injected  # the injected dislocations are found

    # The same logic on each partition's records in one batch: batching and the broker change
    # nothing.
    inputs = read_topic(connection, f"{namespace}market.prices")
    direct: list[Message] = []
    by_partition: dict[int, list[MarketPrice]] = {}
    for partition in sorted({r.partition() for r in inputs}):
        values = [r.value() for r in inputs if r.partition() == partition]
        decoded, failures = decode_batch("market.prices", values)
        assert failures == []
        by_partition[partition] = decoded  # type: ignore[assignment]
        app = CrosschainArbitrageProcessor()
        app.on_broadcast(reference)
        direct += app.process(("market.prices", partition), decoded, [0] * len(decoded)).outputs
    assert outputs == sorted(direct, key=lambda o: (o.detected_at, o.id))  # type: ignore[attr-defined]

    # Each venue's ticks in offset order (= event-time order: the simulator's ticks are sorted),
    # with the partition watermark each one saw and its position; reference series by chain
    # and by route.
    venues: dict[tuple[str, str, str], _Series] = {}
    for ticks in by_partition.values():
        watermark = datetime.min.replace(tzinfo=UTC)
        for offset, tick in enumerate(ticks):
            watermark = max(watermark, tick.ts)
            series = venues.setdefault((tick.symbol, tick.chain, tick.venue), _Series())
            series.add(tick.ts, (tick, watermark, offset))
    gas: dict[str, _Series] = {}
    bridges: dict[tuple[str, str, str], _Series] = {}
    for m in reference:
        if isinstance(m, GasPrice):
            gas.setdefault(m.chain, _Series()).add(m.ts, m.gas_usd)
        elif isinstance(m, BridgeQuote):
            route = (m.from_chain, m.to_chain, m.asset)
            bridges.setdefault(route, _Series()).add(m.ts, BridgeCost(m.fee_usd, m.fee_bps))
    for opp in outputs:
        assert opp.expected_profit_usd >= CONFIG.min_profit_usd
        assert opp.spread_bps >= CONFIG.min_spread_bps
        assert _recomputes(opp, venues, gas, bridges) is None, opp


class _Series:
    """Values in time order, looked up as of a time (the latest at or before it)."""

    def __init__(self) -> None:
        self.times: list[datetime] = []
        self.values: list = []

    def add(self, ts: datetime, value) -> None:
        i = bisect_right(self.times, ts)  # after equal times: the later one wins
        self.times.insert(i, ts)
        self.values.insert(i, value)

    def at(self, when: datetime, max_age: timedelta | None = None):
        i = bisect_right(self.times, when) - 1
        if i < 0 or (max_age is not None and when - self.times[i] > max_age):
            return None
        return self.values[i]

    def last_group(self, when: datetime) -> list:
        """Every value at the latest time at or before ``when``: at ~800 ticks/s the simulator
        often stamps two ticks of one venue with the same millisecond."""
        end = bisect_right(self.times, when)
        if end == 0:
            return []
        return self.values[bisect_left(self.times, self.times[end - 1]) : end]

    def before(self, offset: int):
        """The last (tick, watermark, offset) value before ``offset`` in the partition."""
        i = bisect_left([v[2] for v in self.values], offset) - 1
        return None if i < 0 else self.values[i]


def _recomputes(
    opp: ArbitrageOpportunity,
    venues: dict[tuple[str, str, str], _Series],
    gas: dict[str, _Series],
    bridges: dict[tuple[str, str, str], _Series],
) -> str | None:
    """None when the record follows exactly from its own fields and the inputs it names: the buy
    and sell venues' latest ticks at ``detected_at`` (one of them at exactly that time, both
    fresh) and the gas and bridge quotes in force then; else what does not match."""
    detected = opp.detected_at
    max_age = timedelta(milliseconds=CONFIG.reference_max_age_ms)
    buy_gas = gas[opp.buy_chain].at(detected, max_age)
    sell_gas = gas[opp.sell_chain].at(detected, max_age)
    route = (opp.buy_chain, opp.sell_chain, opp.symbol.split("/")[0])
    bridge = bridges[route].at(detected, max_age) if route in bridges else None
    if None in (buy_gas, sell_gas, bridge):
        return "no gas or bridge quote in force"
    buy_venue = venues[(opp.symbol, opp.buy_chain, opp.buy_venue)]
    sell_venue = venues[(opp.symbol, opp.sell_chain, opp.sell_venue)]
    # The trigger is a tick of either leg at detected_at; the other leg is what the book held
    # then: that venue's last tick before the trigger in the partition.
    pairs = []
    for trigger in buy_venue.last_group(detected):
        pairs.append((trigger, sell_venue.before(trigger[2])))
    for trigger in sell_venue.last_group(detected):
        pairs.append((buy_venue.before(trigger[2]), trigger))
    diffs = []
    for buy_leg, sell_leg in pairs:
        if buy_leg is None or sell_leg is None:
            continue
        (buy, buy_wm, _), (sell, sell_wm, _) = buy_leg, sell_leg
        watermark = max(buy_wm, sell_wm)  # the trigger's: the later of the two in offset order
        stale_before = watermark - timedelta(milliseconds=CONFIG.stale_after_ms)
        if detected not in (buy.ts, sell.ts) or min(buy.ts, sell.ts) < stale_before:
            continue
        lib = evaluate_pair(opp.symbol, _venue(buy, buy_gas), _venue(sell, sell_gas), bridge)
        depth = min(2 * buy.reserve_quote, 2 * sell.reserve_quote)  # type: ignore[operator]
        s = liquidity_adjusted_score(lib.expected_profit_usd, lib.trade_size_usd, depth)
        key = "|".join((opp.symbol, opp.buy_chain, opp.buy_venue, opp.sell_chain, opp.sell_venue))
        size = float(get_amount_out(lib.trade_size_usd, buy.reserve_quote, buy.reserve_base))
        expected = opp.model_copy(
            update={
                "id": str(uuid.uuid5(ID_NAMESPACE, f"{key}|{timestamp_ms(opp)}")),
                "buy_price": buy.price,
                "sell_price": sell.price,
                "spread_bps": spread_bps(buy.price, sell.price),
                "trade_size": size,
                "expected_profit_usd": lib.expected_profit_usd,
                "score": s / (s + CONFIG.score_half_profit_usd),
                "expires_at": detected + TTL,
            }
        )
        if opp == expected:
            return None
        diffs.append({k: (v, getattr(opp, k)) for k, v in expected if getattr(opp, k) != v})
    return f"no fresh pair of ticks at detected_at reproduces it: {diffs}"


def _venue(tick: MarketPrice, gas_usd: float) -> VenueQuote:
    return VenueQuote(
        tick.chain,
        tick.venue,
        tick.price,
        gas_usd=gas_usd,
        reserve_base=tick.reserve_base,
        reserve_quote=tick.reserve_quote,
        liquidity_usd=tick.liquidity_usd,
    )
