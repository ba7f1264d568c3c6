"""The market simulator: deterministic, ordered, valid on the wire, realistic where it matters."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from ys_platform.catalog.codec import decode, encode, key_of, timestamp_ms, topic_of
from ys_platform.catalog.models import (
    BridgeQuote,
    DefiTransaction,
    GasPrice,
    MarketPrice,
    UserPortfolio,
)
from ys_platform.sources.simulator import DEFAULT_MIX, MarketSimulator

TEN_MINUTES_S = 600.0


def _encoded(messages) -> list[tuple[bytes | None, bytes, int]]:
    return [(encode(m)[0], encode(m)[1], timestamp_ms(m)) for m in messages]


@pytest.fixture(scope="module")
def ten_minutes() -> tuple[MarketSimulator, list]:
    """A 10-minute run at 50 msg/s (30k messages) shared by the read-only tests."""
    simulator = MarketSimulator(seed=11)
    return simulator, list(simulator.events(TEN_MINUTES_S, rate=50))


def _health_factor(portfolio: UserPortfolio, prices: dict[str, float]) -> float | None:
    collateral = sum(
        p.amount * prices[p.asset] * p.liquidation_threshold
        for p in portfolio.positions
        if p.kind == "collateral"
    )
    debt = sum(p.amount * prices[p.asset] for p in portfolio.positions if p.kind == "debt")
    return collateral / debt if debt else None


# --- determinism and order -------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not():
    def run(seed: int) -> list:
        simulator = MarketSimulator(seed=seed, symbols=45, users=50)
        return _encoded([*simulator.reference_messages(), *simulator.events(60, rate=100)])

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert len(first) > 6_000
    assert first != other
    # Not only the order: the price values themselves differ with the seed.
    assert {v for _, v, _ in first if b'"price"' in v} != {v for _, v, _ in other}


def test_fast_paths_are_deterministic():
    ticks = list(MarketSimulator(seed=1).encoded_price_ticks(20_000))
    assert ticks == list(MarketSimulator(seed=1).encoded_price_ticks(20_000))
    assert ticks != list(MarketSimulator(seed=2).encoded_price_ticks(20_000))


def test_event_time_never_goes_back_and_spans_the_duration(ten_minutes):
    simulator, messages = ten_minutes
    times = [timestamp_ms(m) for m in messages]
    assert times == sorted(times)
    assert times[0] == simulator.start_ms
    assert simulator.start_ms + TEN_MINUTES_S * 1000 - 1_000 <= times[-1]
    assert times[-1] < simulator.start_ms + TEN_MINUTES_S * 1000
    # About `rate` messages a second, plus one snapshot per user at the start.
    assert len(messages) == 50 * TEN_MINUTES_S + len(simulator.users)


def test_calls_continue_one_another_in_event_time():
    simulator = MarketSimulator(seed=2, users=10)
    first = list(simulator.events(5, rate=200))
    ticks = list(simulator.price_ticks(1_000, rate=1_000))
    second = list(simulator.events(5, rate=200))
    times = [timestamp_ms(m) for m in (*first, *ticks, *second)]
    assert times == sorted(times)
    assert simulator.now_ms == simulator.start_ms + 11_000


def test_no_wall_clock_unless_start_is_given():
    assert MarketSimulator(seed=1).start_ms == MarketSimulator(seed=1).start_ms
    simulator = MarketSimulator(seed=1, start_ms=1_800_000_000_000)
    first = next(iter(simulator.events(1, rate=10)))
    assert timestamp_ms(first) == 1_800_000_000_000


# --- the wire --------------------------------------------------------------------------------


def test_every_message_round_trips_through_the_codec(ten_minutes):
    simulator, messages = ten_minutes
    for message in [*simulator.reference_messages(), *messages]:
        key, value, _ = encode(message)
        topic = topic_of(message)
        assert decode(topic, value) == message
        assert key == key_of(message).encode()


def test_encoded_fast_path_is_exactly_what_the_codec_writes():
    # Includes PEPE (~1e-5 USD, written in decimal) and huge reserves: pydantic's float format.
    models = list(MarketSimulator(seed=3).price_ticks(30_000))
    fast = list(MarketSimulator(seed=3).encoded_price_ticks(30_000))
    assert len(fast) == len(models) == 30_000
    for model, (key, value, ts) in zip(models, fast, strict=True):
        assert (key, value, ts) == (encode(model)[0], encode(model)[1], timestamp_ms(model))
    assert any(m.base == "PEPE" for m in models)
    for _, value, _ in fast[:2_000]:
        assert isinstance(decode("market.prices", value), MarketPrice)


def test_mix_is_within_a_fifth_of_the_documented_shares():
    simulator = MarketSimulator(seed=4)
    messages = list(simulator.events(100, rate=100))[:10_000]
    counts = Counter(topic_of(m) for m in messages)
    assert set(counts) == set(DEFAULT_MIX)
    for topic, share in DEFAULT_MIX.items():
        assert counts[topic] == pytest.approx(share * 10_000, rel=0.2), topic


def test_reference_set():
    simulator = MarketSimulator(seed=1)
    protocols = simulator.protocols()
    assert len(protocols) >= 20
    assert len({p.id for p in protocols}) == len(protocols)
    assert len({p.description for p in protocols}) == len(protocols)
    assert {"lending", "dex", "liquid-staking", "derivatives", "bridge"} <= {
        p.category for p in protocols
    }
    tokens = simulator.tokens()
    assert len({t.address for t in tokens}) == len(tokens) == 40 * 5
    # Every protocol a user position or swap names is in the reference set.
    ids = {p.id for p in protocols}
    used = {
        position.protocol
        for m in simulator.events(30, rate=200)
        if isinstance(m, UserPortfolio)
        for position in m.positions
    }
    assert used <= ids


# --- prices ----------------------------------------------------------------------------------


def test_prices_cover_symbols_sources_and_chains(ten_minutes):
    simulator, messages = ten_minutes
    ticks = [m for m in messages if isinstance(m, MarketPrice)]
    assert {t.symbol for t in ticks} == set(simulator.symbols)
    assert "TKN40/USD" not in simulator.symbols  # the fixed list covers 40
    assert MarketSimulator(seed=1, symbols=42).symbols[-2:] == ("TKN41/USD", "TKN42/USD")
    assert {t.source for t in ticks} == {"binance", "coinbase", "kraken", "chainlink", "uniswap-v2"}
    assert {t.chain for t in ticks} == {
        "offchain",
        "ethereum",
        "arbitrum",
        "optimism",
        "base",
        "polygon",
    }
    for tick in ticks:
        if tick.source == "uniswap-v2":
            assert tick.reserve_quote / tick.reserve_base == pytest.approx(tick.price, rel=1e-12)
            assert tick.liquidity_usd == pytest.approx(2 * tick.reserve_quote)
            assert tick.volume is None
        elif tick.chain == "offchain":
            assert tick.volume is not None and tick.volume > 0
            assert tick.reserve_base is None and tick.liquidity_usd is None


def test_prices_walk_and_sources_agree(ten_minutes):
    _, messages = ten_minutes
    eth = [m.price for m in messages if isinstance(m, MarketPrice) and m.base == "ETH"]
    usdc = [m.price for m in messages if isinstance(m, MarketPrice) and m.base == "USDC"]
    # ETH moves (a random walk, not a constant) but not absurdly in ten minutes.
    assert len(set(eth)) == len(eth)
    log_returns = [math.log(b / a) for a, b in itertools.pairwise(eth)]
    median_move = sorted(abs(r) for r in log_returns)[len(log_returns) // 2]
    assert 1e-5 < median_move < 0.01
    # A stablecoin stays on its peg except for injected outliers.
    assert sorted(usdc)[len(usdc) // 2] == pytest.approx(1.0, abs=0.002)


def test_anomalies_occur_in_ten_minutes(ten_minutes):
    simulator, messages = ten_minutes
    injected = simulator.injected
    for kind in ("dislocation", "dislocated_ticks", "stale", "outlier", "gas_spike"):
        assert injected[kind] > 0, kind
    anomalies = Counter(a.kind for a in simulator.anomalies)
    assert anomalies["dislocation"] == injected["dislocation"]
    assert anomalies["outlier"] == injected["outlier"]

    # Every dislocation is 0.5-3 % and lasts tens of seconds.
    for a in simulator.anomalies:
        if a.kind == "dislocation":
            assert 0.005 <= abs(a.magnitude) <= 0.03
            assert 20_000 <= a.end_ms - a.start_ms <= 90_000

    # Outliers are ticks 10-50 % away from the symbol's other sources at that moment.
    outliers = [a for a in simulator.anomalies if a.kind == "outlier"]
    ticks = [m for m in messages if isinstance(m, MarketPrice)]
    for outlier in outliers:
        (tick,) = [
            t
            for t in ticks
            if timestamp_ms(t) == outlier.start_ms
            and t.symbol == outlier.symbol
            and t.source == outlier.source
            and t.chain == outlier.chain
            and abs(t.price / _median_before(ticks, t) - 1) > 0.09
        ]
        assert 0.08 < abs(tick.price / _median_before(ticks, tick) - 1) < 0.55

    # A stale source sends nothing for that symbol during its window.
    for a in simulator.anomalies:
        if a.kind == "stale":
            during = [
                t
                for t in ticks
                if t.symbol == a.symbol
                and t.source == a.source
                and a.start_ms <= timestamp_ms(t) < a.end_ms
            ]
            assert during == []

    # Gas spikes show in the gas prices.
    spike = next(a for a in simulator.anomalies if a.kind == "gas_spike")
    gas = [m for m in messages if isinstance(m, GasPrice) and m.chain == spike.chain]
    before = [g.gas_usd for g in gas if timestamp_ms(g) < spike.start_ms]
    during = [g.gas_usd for g in gas if spike.start_ms <= timestamp_ms(g) < spike.start_ms + 30_000]
    assert before and during
    assert max(during) > 1.5 * sorted(before)[len(before) // 2]


def _median_before(ticks: list[MarketPrice], tick: MarketPrice) -> float:
    window = [
        t.price
        for t in ticks
        if t.symbol == tick.symbol and 0 <= timestamp_ms(tick) - timestamp_ms(t) <= 30_000
    ]
    return sorted(window)[len(window) // 2]


# --- crosschain ------------------------------------------------------------------------------


def test_crosschain_events(ten_minutes):
    simulator, messages = ten_minutes
    quotes = [m for m in messages if isinstance(m, BridgeQuote)]
    gas = [m for m in messages if isinstance(m, GasPrice)]
    assert quotes and gas
    assert {g.chain for g in gas} == set(simulator.chains)
    assert all(q.from_chain != q.to_chain for q in quotes)
    assert {q.from_chain for q in quotes} == set(simulator.chains)
    assert all(q.fee_usd > 0 and 0 < q.fee_bps < 50 and q.latency_s > 0 for q in quotes)
    eth_gas = sorted(g.gas_usd for g in gas if g.chain == "ethereum")
    l2_gas = sorted(g.gas_usd for g in gas if g.chain == "arbitrum")
    assert eth_gas[len(eth_gas) // 2] > 10 * l2_gas[len(l2_gas) // 2]


# --- users -----------------------------------------------------------------------------------


def test_some_users_start_close_to_liquidation():
    simulator = MarketSimulator(seed=12)
    stream = simulator.events(TEN_MINUTES_S, rate=50)
    initial = [next(stream) for _ in simulator.users]
    assert all(isinstance(m, UserPortfolio) for m in initial)
    assert {m.user_id for m in initial} == set(simulator.users)
    prices = simulator.mid_prices()
    factors = [_health_factor(m, prices) for m in initial]
    near = [hf for hf in factors if hf is not None and 1.0 <= hf <= 1.3]
    assert len(near) >= 0.1 * len(initial)
    assert any(hf is None for hf in factors)  # savers
    for portfolio in initial:
        for position in portfolio.positions:
            if position.kind == "collateral":
                assert 0.75 <= position.liquidation_threshold <= 0.85

    # Ten minutes later prices have moved, and users are still near liquidation.
    latest = {m.user_id: m for m in stream if isinstance(m, UserPortfolio)}
    prices = simulator.mid_prices()
    factors = [_health_factor(m, prices) for m in latest.values()]
    assert sum(1 for hf in factors if hf is not None and 1.0 <= hf <= 1.3) >= 10


def test_transactions_are_consistent_with_positions(ten_minutes):
    """Replaying the transactions on each user's previous snapshot gives their next snapshot."""
    _, messages = ten_minutes
    books: dict[str, dict[tuple[str, str, str, str], float]] = {}
    checked = 0
    actions: Counter[str] = Counter()
    for message in messages:
        if isinstance(message, UserPortfolio):
            snapshot = {(p.protocol, p.chain, p.asset, p.kind): p.amount for p in message.positions}
            if message.user_id in books:
                replayed = {k: v for k, v in books[message.user_id].items() if v > 0}
                assert replayed.keys() == snapshot.keys()
                for key, amount in snapshot.items():
                    assert replayed[key] == pytest.approx(amount, rel=1e-9)
                checked += 1
            books[message.user_id] = snapshot
        elif isinstance(message, DefiTransaction):
            actions[message.action] += 1
            assert message.user_id in books  # every user is snapshotted before transacting
            if message.action == "swap":
                continue
            kind = "debt" if message.action in ("borrow", "repay") else "collateral"
            key = (message.protocol, message.chain, message.asset, kind)
            book = books[message.user_id]
            if message.action in ("deposit", "borrow"):
                book[key] = book.get(key, 0.0) + message.amount
            else:
                held = book.get(key, 0.0)
                assert message.amount <= held * (1 + 1e-9), message  # never more than held
                book[key] = 0.0 if message.amount >= held else held - message.amount
    assert checked > 1_000
    assert {"deposit", "withdraw", "borrow", "repay", "swap"} <= set(actions)


def test_liquidations_follow_a_crash():
    # A turbulent market (volatility x40) pushes near-liquidation users under water.
    simulator = MarketSimulator(seed=3, volatility_scale=40, users=100)
    messages = list(simulator.events(1_800, rate=20))
    liquidations = [
        m for m in messages if isinstance(m, DefiTransaction) and m.action == "liquidation"
    ]
    assert liquidations
    assert simulator.injected["liquidation"] == len(liquidations)
    # Each liquidation is followed by the liquidator's repay of the same user's debt.
    transactions = [m for m in messages if isinstance(m, DefiTransaction)]
    for i, tx in enumerate(transactions):
        if tx.action == "liquidation":
            follow = transactions[i + 1]
            assert (follow.user_id, follow.action) == (tx.user_id, "repay")


# --- parameters ------------------------------------------------------------------------------


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="sources"):
        MarketSimulator(seed=1, sources=0)
    with pytest.raises(ValueError, match="chains"):
        MarketSimulator(seed=1, chains=("solana",))
    with pytest.raises(ValueError, match="rate"):
        MarketSimulator(seed=1).events(1, rate=0)


@pytest.mark.parametrize(
    ("interval", "kind"),
    [
        ("dislocation_every_s", "dislocation"),
        ("stale_every_s", "stale"),
        ("outlier_every_s", "outlier"),
        ("gas_spike_every_s", "gas_spike"),
    ],
)
def test_math_inf_disables_an_anomaly(interval, kind):
    # Each at a tenth of its default interval, so every kind fires in two minutes unless off.
    frequent = {
        "dislocation_every_s": 4.5,
        "stale_every_s": 6.0,
        "outlier_every_s": 3.0,
        "gas_spike_every_s": 12.0,
    }
    simulator = MarketSimulator(seed=8, users=20, **{**frequent, interval: math.inf})
    messages = list(simulator.events(120, rate=100))
    assert len(messages) == 100 * 120 + 20
    assert simulator.injected[kind] == 0
    assert all(
        simulator.injected[k] > 0
        for k in ("dislocation", "stale", "outlier", "gas_spike")
        if k != kind
    )


def test_small_configurations_work():
    simulator = MarketSimulator(seed=1, symbols=3, sources=1, chains=("base",), users=0)
    messages = list(simulator.events(60, rate=50))
    assert {topic_of(m) for m in messages} <= {"market.prices", "crosschain.events"}
    assert len(messages) == 3_000
    for message in messages:
        assert decode(topic_of(message), encode(message)[1]) == message
