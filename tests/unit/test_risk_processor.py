"""The risk-assessment processor's logic driven directly (no Kafka): figures by hand, positions
under transactions and out-of-order snapshots, alerts with hysteresis, missing prices."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from ys_platform.catalog.codec import timestamp_ms
from ys_platform.catalog.models import (
    DefiTransaction,
    MarketAnalytics,
    MarketPrice,
    Position,
    RiskAlert,
    RiskAssessment,
    UserPortfolio,
)
from ys_platform.processing import risk
from ys_platform.processors.risk_assessment import (
    LOG_SPAN_MS,
    LTV_CAP,
    RiskAssessmentProcessor,
    apply_transaction,
    epoch_ms,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PORTFOLIOS = ("users.portfolios", 0)
TRANSACTIONS = ("defi.transactions", 0)
# 41 ticks over a 60 s window: one return per 1.5 s, and day / 1.5 s = 57 600 = 240², so the
# daily volatility is exactly 240 × the window's per-tick volatility.
TICKS, TICK_TO_DAY = 41, 240


def analytics(asset: str, price: float, at: datetime, tick_vol: float = 0.0) -> MarketAnalytics:
    return MarketAnalytics(
        symbol=f"{asset}/USD",
        window_start=at - timedelta(minutes=1),
        window_end=at,
        twap=price * 1.01,  # differs from the consolidated price: which one is used shows
        vwap=None,
        volatility=tick_vol,
        consolidated_price=price,
        sources=3,
        ticks=TICKS,
    )


def collateral(asset: str, amount: float, lt: float, protocol: str = "aave-v3") -> Position:
    return Position(
        protocol=protocol,
        chain="ethereum",
        asset=asset,
        kind="collateral",
        amount=amount,
        liquidation_threshold=lt,
    )


def debt(asset: str, amount: float, protocol: str = "aave-v3") -> Position:
    return Position(protocol=protocol, chain="ethereum", asset=asset, kind="debt", amount=amount)


def snapshot(user: str, positions: list[Position], at: datetime = T0) -> UserPortfolio:
    return UserPortfolio(user_id=user, positions=tuple(positions), ts=at)


_hashes = iter(range(1, 1 << 30))


def tx(user: str, action: str, asset: str, amount: float, at: datetime) -> DefiTransaction:
    return DefiTransaction(
        tx_hash=f"0x{next(_hashes):064x}",
        user_id=user,
        protocol="aave-v3",
        chain="ethereum",
        action=action,  # type: ignore[arg-type]
        asset=asset,
        amount=amount,
        ts=at,
    )


def feed(proc: RiskAssessmentProcessor, partition, messages) -> list:
    result = proc.process(partition, messages, [timestamp_ms(m) for m in messages])
    assert result.rejected == []
    return result.outputs


def assessments(outputs) -> list[RiskAssessment]:
    return [m for m in outputs if isinstance(m, RiskAssessment)]


def alerts(outputs, kind: str = "liquidation_risk") -> list[RiskAlert]:
    return [m for m in outputs if isinstance(m, RiskAlert) and m.kind == kind]


def test_two_collateral_one_debt_by_hand():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast(
        [
            analytics("ETH", 2_000.0, T0, tick_vol=0.0002),  # 0.0002 × 240 = 4.8 %/day
            analytics("BTC", 40_000.0, T0, tick_vol=0.000125),  # 0.000125 × 240 = 3 %/day
        ]
    )  # USDC: no analytics, the stablecoin peg (1.0, no volatility)
    user = snapshot(
        "alice",
        [collateral("ETH", 10.0, 0.80), collateral("BTC", 0.5, 0.75), debt("USDC", 20_000.0)],
    )
    (a,) = feed(proc, PORTFOLIOS, [user])
    # collateral: ETH 10 × 2 000 = 20 000, BTC 0.5 × 40 000 = 20 000 → 40 000 USD
    # HF  = (20 000 × 0.80 + 20 000 × 0.75) / 20 000 = 31 000 / 20 000 = 1.55
    # LTV = 20 000 / 40 000 = 0.5
    # HHI over assets (gross): ETH, BTC, USDC 20 000 each → 3 × (1/3)² = 1/3
    # VaR = 1.645 × (20 000 × 0.048 + 20 000 × 0.03 + 20 000 × 0) = 1.645 × 1 560 = 2 566.2
    # σ̄ (gross-weighted) = 1 560 / 60 000 = 0.026
    # score = 1 − (1 − 0.45)(1 − 0.3/3)(1 − 0.5 × 0.26) = 1 − 0.55 × 0.9 × 0.87 = 0.56935
    assert isinstance(a, RiskAssessment)
    assert a.user_id == "alice"
    assert a.collateral_usd == pytest.approx(40_000.0, rel=1e-12)
    assert a.debt_usd == pytest.approx(20_000.0, rel=1e-12)
    assert a.health_factor == pytest.approx(1.55, rel=1e-12)
    assert a.ltv == pytest.approx(0.5, rel=1e-12)
    assert a.hhi == pytest.approx(1 / 3, rel=1e-12)
    assert a.var_95_1d_usd == pytest.approx(2_566.2, rel=1e-12)
    assert a.risk_score == pytest.approx(0.56935, rel=1e-12)
    assert a.assessed_at == T0
    # The same figures as risk.py's reference functions.
    assert a.health_factor == pytest.approx(
        risk.health_factor([10.0, 0.5], [2_000.0, 40_000.0], [0.8, 0.75], [20_000.0], [1.0])
    )
    assert a.hhi == pytest.approx(risk.hhi([20_000.0, 20_000.0, 20_000.0]))
    assert a.var_95_1d_usd == pytest.approx(
        risk.var_95_1d_usd([20_000.0, 20_000.0, -20_000.0], [0.048, 0.03, 0.0])
    )
    assert a.risk_score == pytest.approx(risk.risk_score(1.55, 1 / 3, 0.026))


def test_no_debt_has_null_health_factor_and_stake_is_exposure_not_collateral():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    stake = Position(protocol="lido", chain="ethereum", asset="ETH", kind="stake", amount=5.0)
    out = feed(proc, PORTFOLIOS, [snapshot("saver", [collateral("ETH", 1.0, 0.8), stake])])
    (a,) = assessments(out)
    assert a.health_factor is None
    assert a.debt_usd == 0.0 and a.ltv == 0.0
    assert a.collateral_usd == 2_000.0  # the stake (10 000 USD) is not collateral...
    assert a.hhi == 1.0  # ...but is exposure: all of it in ETH
    assert alerts(out, "liquidation_risk") == []


def test_debt_without_collateral_caps_ltv():
    proc = RiskAssessmentProcessor()
    (a,) = assessments(feed(proc, PORTFOLIOS, [snapshot("bob", [debt("DAI", 100.0)])]))
    assert a.health_factor == 0.0
    assert a.ltv == LTV_CAP


def test_consolidated_price_then_twap():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    assert proc.price_of("ETH").price == 2_000.0
    no_consensus = analytics("ETH", 2_000.0, T0 + timedelta(seconds=5)).model_copy(
        update={"consolidated_price": None, "twap": 2_100.0}
    )
    proc.on_broadcast([no_consensus])
    assert proc.price_of("ETH").price == 2_100.0
    proc.on_broadcast([analytics("ETH", 1.0, T0)])  # an older window arriving late: ignored
    assert proc.price_of("ETH").price == 2_100.0
    assert proc.price_of("USDT").price == 1.0 and proc.price_of("LINK") is None


def test_transactions_change_positions():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0), analytics("BTC", 40_000.0, T0)])
    feed(proc, PORTFOLIOS, [snapshot("carol", [collateral("ETH", 10.0, 0.8), debt("USDC", 1e4)])])
    s = timedelta(seconds=1)
    moves = [
        tx("carol", "deposit", "ETH", 2.0, T0 + s),  # ETH 12
        tx("carol", "borrow", "USDC", 2_000.0, T0 + 2 * s),  # USDC 12 000
        tx("carol", "repay", "USDC", 500.0, T0 + 3 * s),  # USDC 11 500
        tx("carol", "withdraw", "ETH", 1.0, T0 + 4 * s),  # ETH 11
        tx("carol", "liquidation", "ETH", 0.5, T0 + 5 * s),  # ETH 10.5
        tx("carol", "swap", "BTC", 1.0, T0 + 6 * s),  # no position moves
        tx("carol", "deposit", "BTC", 0.1, T0 + 7 * s),  # new collateral: BTC's LT unknown yet
    ]
    out = feed(proc, TRANSACTIONS, moves[:-1])
    (a,) = assessments(out)  # one assessment per user and slice, at the latest change
    assert a.assessed_at == T0 + 5 * s
    key = ("aave-v3", "ethereum")
    assert proc.user_positions("carol") == {
        (*key, "ETH", "collateral"): 10.5,
        (*key, "USDC", "debt"): 11_500.0,
    }
    assert a.health_factor == pytest.approx(10.5 * 2_000 * 0.8 / 11_500, rel=1e-12)
    assert proc.stats["swaps_ignored"] == 1
    # BTC collateral without a known liquidation threshold: not assessed until a snapshot
    # (of anyone) tells BTC's threshold.
    assert feed(proc, TRANSACTIONS, moves[-1:]) == []
    assert proc.stats["not_assessed_missing_threshold"] == 1
    feed(proc, PORTFOLIOS, [snapshot("dave", [collateral("BTC", 1.0, 0.7)])])
    (a,) = assessments(feed(proc, TRANSACTIONS, [tx("carol", "repay", "USDC", 1e6, T0 + 9 * s)]))
    assert a.health_factor is None  # repaid in full: a repay never goes below zero
    assert a.collateral_usd == pytest.approx(10.5 * 2_000 + 0.1 * 40_000, rel=1e-12)


def test_thresholds_come_from_the_users_own_snapshot():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    emode = snapshot("emode", [collateral("ETH", 1.0, 0.93), debt("USDC", 1_000.0)])
    plain = snapshot("plain", [collateral("ETH", 1.0, 0.83), debt("USDC", 1_000.0)])
    feed(proc, PORTFOLIOS, [emode, plain])
    (a,) = assessments(feed(proc, TRANSACTIONS, [tx("emode", "deposit", "ETH", 1.0, T0 + T0S)]))
    assert a.health_factor == pytest.approx(2 * 2_000 * 0.93 / 1_000)  # not plain's 0.83


T0S = timedelta(seconds=1)


def test_apply_transaction_drops_dust_like_the_simulator():
    positions = {("aave-v3", "ethereum", "ETH", "collateral"): 1.0}
    apply_transaction(positions, tx("u", "withdraw", "ETH", 1.0 - 1e-12, T0))
    assert positions == {}


def test_event_time_orders_snapshots_and_transactions():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    s = timedelta(seconds=1)
    early = tx("erin", "deposit", "ETH", 1.0, T0 + s)
    late = tx("erin", "deposit", "ETH", 2.0, T0 + 3 * s)
    # Transactions before the first snapshot wait for it: not assessed yet.
    assert feed(proc, TRANSACTIONS, [early, late]) == []
    assert proc.stats["awaiting_snapshot"] == 1
    # A snapshot at T0+2s already includes `early`; `late` is applied on top of it.
    erin = snapshot("erin", [collateral("ETH", 5.0, 0.8)], T0 + 2 * s)
    (a,) = assessments(feed(proc, PORTFOLIOS, [erin]))
    assert proc.user_positions("erin") == {("aave-v3", "ethereum", "ETH", "collateral"): 7.0}
    assert a.collateral_usd == 14_000.0
    # A replayed transaction (same hash) and an older snapshot change nothing.
    assert feed(proc, TRANSACTIONS, [late]) == []
    assert feed(proc, PORTFOLIOS, [snapshot("erin", [collateral("ETH", 9.0, 0.8)], T0)]) == []
    assert proc.stats["duplicate_transactions"] == 1 and proc.stats["stale_snapshots"] == 1
    assert proc.user_positions("erin") == {("aave-v3", "ethereum", "ETH", "collateral"): 7.0}
    # A transaction older than the latest snapshot is already in it.
    assert feed(proc, TRANSACTIONS, [tx("erin", "deposit", "ETH", 4.0, T0 + s)]) == []
    assert proc.stats["transactions_in_snapshot"] == 1


def _hf_user(proc: RiskAssessmentProcessor) -> list:
    # ETH 10 at LT 0.8 against 12 000 USDC: HF = 10 × p × 0.8 / 12 000 = p / 1 500.
    proc.on_broadcast([analytics("ETH", 1.25 * 1_500, T0)])
    return feed(
        proc, PORTFOLIOS, [snapshot("hf", [collateral("ETH", 10.0, 0.8), debt("USDC", 1.2e4)])]
    )


def _price_path(proc: RiskAssessmentProcessor, hfs: list[float]) -> list[list]:
    """Move ETH so the user's HF walks ``hfs``, one window (and one slice) per step."""
    outputs = []
    for step, hf in enumerate(hfs, start=1):
        proc.on_broadcast([analytics("ETH", hf * 1_500, T0 + timedelta(seconds=5 * step))])
        outputs.append(feed(proc, TRANSACTIONS, []))
    return outputs


def test_liquidation_alerts_with_hysteresis():
    proc = RiskAssessmentProcessor()
    (first,) = assessments(_hf_user(proc))
    assert first.health_factor == pytest.approx(1.25)
    steps = [1.19, 1.21, 1.19, 1.21, 1.04, 1.09, 1.11, 1.31, 1.19]
    outputs = _price_path(proc, steps)
    # Every step moved ETH by more than 0.5 %: every step re-assessed the user, at its window.
    for step, (hf, out) in enumerate(zip(steps, outputs, strict=True), start=1):
        (a,) = assessments(out)
        assert a.health_factor == pytest.approx(hf, rel=1e-12)
        assert a.assessed_at == T0 + timedelta(seconds=5 * step)
    fired = [[(x.severity, x.threshold) for x in alerts(out)] for out in outputs]
    assert fired == [
        [("warning", 1.2)],  # 1.19 < 1.2
        [],  # 1.21: inside the 1.2 → 1.3 gap, still warning
        [],  # 1.19: already warning (no flapping)
        [],
        [("critical", 1.05)],  # 1.04 < 1.05
        [],  # 1.09: not above 1.1, still critical
        [("warning", 1.1)],  # 1.11 > 1.1: steps down to warning
        [],  # 1.31 > 1.3: cleared, nothing emitted
        [("warning", 1.2)],  # a new episode
    ]
    a = alerts(outputs[0])[0]
    assert a.user_id == "hf" and a.value == pytest.approx(1.19)
    assert a.ts == T0 + timedelta(seconds=5)
    assert "health factor" in a.message
    # alert ids are deterministic: the same input gives the same ids
    again = RiskAssessmentProcessor()
    _hf_user(again)
    ids = [x.alert_id for out in _price_path(again, steps) for x in alerts(out)]
    assert ids == [x.alert_id for out in outputs for x in alerts(out)]
    assert len(set(ids)) == len(ids) == 4


def test_no_flapping_between_1_19_and_1_21():
    proc = RiskAssessmentProcessor()
    _hf_user(proc)
    outputs = _price_path(proc, [1.19, 1.21] * 20)
    assert len([a for out in outputs for a in assessments(out)]) == 40
    assert [x.severity for out in outputs for x in alerts(out)] == ["warning"]


def test_small_price_moves_do_not_reassess():
    proc = RiskAssessmentProcessor()
    _hf_user(proc)
    # +0.4 % then +0.8 % from the price of the last assessment: only the second re-assesses.
    assert assessments(_price_path(proc, [1.25 * 1.004])[0]) == []
    (a,) = assessments(_price_path(proc, [1.25 * 1.008])[0])
    assert a.health_factor == pytest.approx(1.25 * 1.008)


def test_missing_price_is_not_assessed_until_priced():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    user = snapshot("frank", [collateral("ETH", 1.0, 0.8), collateral("LINK", 100.0, 0.7)])
    assert feed(proc, PORTFOLIOS, [user]) == []
    assert proc.stats["not_assessed_missing_price"] == 1
    # LINK's first price re-assesses its holders.
    proc.on_broadcast([analytics("LINK", 10.0, T0 + timedelta(seconds=5))])
    (a,) = assessments(feed(proc, TRANSACTIONS, []))
    assert a.collateral_usd == 3_000.0
    assert a.assessed_at == T0 + timedelta(seconds=5)


def test_volatility_and_concentration_alerts():
    proc = RiskAssessmentProcessor()
    # 0.0003 per tick → 7.2 %/day: above the 5 % warning, below the 10 % critical.
    proc.on_broadcast([analytics("ETH", 2_000.0, T0, tick_vol=0.0003)])
    out = feed(proc, PORTFOLIOS, [snapshot("gina", [collateral("ETH", 1.0, 0.8)])])
    (vol,) = alerts(out, "volatility")
    assert (vol.severity, vol.threshold) == ("warning", 0.05)
    assert vol.value == pytest.approx(0.0003 * TICK_TO_DAY)
    (conc,) = alerts(out, "concentration")  # everything in one asset: HHI 1
    assert (conc.severity, conc.value, conc.threshold) == ("critical", 1.0, 0.8)


def test_watermark_revoke_and_rejects():
    proc = RiskAssessmentProcessor()
    proc.assign(PORTFOLIOS)
    assert proc.watermark_ms(PORTFOLIOS) is None
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    later = snapshot("h", [collateral("ETH", 1.0, 0.8)], T0 + timedelta(seconds=9))
    feed(proc, PORTFOLIOS, [later, snapshot("i", [collateral("ETH", 1.0, 0.8)])])
    assert proc.watermark_ms(PORTFOLIOS) == epoch_ms(later.ts)
    price = MarketPrice(
        symbol="ETH/USD", base="ETH", quote="USD", price=1.0, source="s", chain="c", venue="v",
        ts=T0,
    )  # fmt: skip
    result = proc.process(TRANSACTIONS, [price], [timestamp_ms(price)])
    assert [r.index for r in result.rejected] == [0] and result.outputs == []
    # Revoking drops the user state (restore rebuilds it) but keeps the prices.
    proc.revoke(PORTFOLIOS)
    assert proc.watermark_ms(PORTFOLIOS) is None and proc.user_positions("h") is None
    assert proc.price_of("ETH").price == 2_000.0


def test_simulator_health_factors_agree():
    from ys_platform.sources.simulator import MarketSimulator

    sim = MarketSimulator(3, symbols=20, users=150)
    inputs = [m for m in sim.events(60, 500) if isinstance(m, UserPortfolio | DefiTransaction)]
    proc = RiskAssessmentProcessor()
    end = T0.replace(year=2030)
    proc.on_broadcast([analytics(a, p, end) for a, p in sim.mid_prices().items()])
    latest: dict[str, RiskAssessment] = {}
    for start in range(0, len(inputs), 100):  # interleave the two topics as a worker would
        chunk = inputs[start : start + 100]
        for topic, kind in ((PORTFOLIOS, UserPortfolio), (TRANSACTIONS, DefiTransaction)):
            for a in assessments(feed(proc, topic, [m for m in chunk if isinstance(m, kind)])):
                latest[a.user_id] = a
    assert set(latest) == set(sim.users)
    for user in sim.users:
        expected = sim.health_factor(user)
        got = latest[user].health_factor
        assert (got is None) == (expected is None)
        if expected is not None:
            assert math.isclose(got, expected, rel_tol=1e-9), user


def test_old_transaction_logs_are_folded():
    proc = RiskAssessmentProcessor()
    proc.on_broadcast([analytics("ETH", 2_000.0, T0)])
    feed(proc, PORTFOLIOS, [snapshot("k", [collateral("ETH", 1.0, 0.8)])])
    feed(proc, TRANSACTIONS, [tx("k", "deposit", "ETH", 1.0, T0 + T0S)])
    feed(proc, TRANSACTIONS, [tx("pending", "deposit", "ETH", 1.0, T0 + T0S)])
    # Event time moves past the log span: both logs are folded (k) or dropped (no snapshot).
    beyond = T0 + timedelta(milliseconds=LOG_SPAN_MS + 2_000)
    feed(proc, TRANSACTIONS, [tx("other", "swap", "ETH", 1.0, beyond)])
    assert proc.user_positions("k") == {("aave-v3", "ethereum", "ETH", "collateral"): 2.0}
    # A snapshot older than the folded deposit cannot be rebuilt without it: stale.
    assert (
        feed(proc, PORTFOLIOS, [snapshot("k", [collateral("ETH", 7.0, 0.8)], T0 + T0S / 2)]) == []
    )
    assert proc.stats["stale_snapshots"] == 1
    # The pending user's first later snapshot stands alone (it includes the dropped deposit).
    later = snapshot("pending", [collateral("ETH", 3.0, 0.8)], beyond)
    (a,) = assessments(feed(proc, PORTFOLIOS, [later]))
    assert a.collateral_usd == 6_000.0
