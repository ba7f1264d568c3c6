"""The risk-assessment processor end to end on the local broker: simulator portfolios and
transactions valued at broadcast market.analytics prices (health factors equal to the simulator's
own), exact liquidation alerts for hand-made users, state and alert levels restored across a
restart, poison input dead-lettered with its reason, and a CDC delete of a transaction skipped."""

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import CDC_OP_HEADER, DecodeError, decode, encode, timestamp_ms
from ys_platform.catalog.models import (
    DefiTransaction,
    MarketAnalytics,
    Message,
    Position,
    UserPortfolio,
)
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.processors.risk_assessment import GROUP
from ys_platform.processors.runner import run_processor
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming import dead_letter
from ys_platform.streaming.worker import WorkerConfig

ETH_LT = 0.8
# Per-tick volatility of the analytics: 41 ticks a minute make the daily volatility 240 × this,
# 1.2 %/day, under the 4 % clear level of the volatility alert: no volatility alerts at all.
TICK_VOL, TICKS = 0.00005, 41
# Hand-made users: 10 ETH of collateral and the USDC debt that puts them at this health factor.
HAND_HF = {"hand-ok": 1.5, "hand-warn": 1.15, "hand-crit": 1.0}

POISON = {
    "defi.transactions": [
        b"{not json",
        b'{"tx_hash": "0x1", "user_id": "hand-ok", "protocol": "aave-v3", "chain": "ethereum",'
        b' "action": "deposit", "asset": "ETH", "amount": -1.0, "ts": "2026-01-05T12:00:00.000Z"}',
    ],
    "users.portfolios": [
        b'{"user_id": "hand-ok", "positions": [], "ts": "2026-01-05T12:00:00.000Z", "colour": 1}',
    ],
}


def _decode_error(topic: str, value: bytes) -> str:
    try:
        decode(topic, value)
    except DecodeError as exc:
        return str(exc)
    raise AssertionError(f"{value!r} decoded")


def _produce(connection: KafkaConnection, namespace: str, messages: list[Message]) -> None:
    producer = connection.producer()
    for m in messages:
        key, value, headers = encode(m)
        topic = {
            UserPortfolio: "users.portfolios",
            DefiTransaction: "defi.transactions",
            MarketAnalytics: "market.analytics",
        }[type(m)]
        producer.produce(
            f"{namespace}{topic}", value, key, headers=headers, timestamp=timestamp_ms(m)
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def _run(settings, namespace: str):
    return run_processor(
        settings,
        GROUP.group_id,
        config=WorkerConfig(batch_size=500, namespace=namespace),
        stop=threading.Event(),
        max_idle_s=5.0,
    )


def _outputs(connection: KafkaConnection, namespace: str):
    assessments = [
        decode("risk.assessments", r.value())
        for r in read_topic(connection, f"{namespace}risk.assessments")
    ]
    alerts = [
        decode("risk.alerts", r.value()) for r in read_topic(connection, f"{namespace}risk.alerts")
    ]
    return assessments, alerts


def _hand_debt(prices: dict[str, float], hf: float) -> float:
    """USDC units of debt that put 10 ETH of collateral at health factor ``hf``."""
    return 10 * prices["ETH"] * ETH_LT / (hf * prices["USDC"])


def test_risk_assessment_end_to_end(kafka_target):
    namespace = kafka_target.namespace()
    connection = kafka_target.settings.kafka
    admin = connection.admin()
    # Not co-partitioned, like the catalog (24 vs 6): a user's records sit in unrelated
    # partition numbers of the two inputs.
    create_namespaced_topics(admin, namespace, ["defi.transactions"], 4)
    create_namespaced_topics(
        admin,
        namespace,
        [
            "users.portfolios",
            "market.analytics",
            "risk.assessments",
            "risk.alerts",
            GROUP.dead_letter_topic,
        ],
        3,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=10)  # inside the restore span and the topics' retention
    sim = MarketSimulator(21, symbols=12, users=60, start_ms=int(start.timestamp() * 1000))
    inputs = [m for m in sim.events(60, 400) if isinstance(m, UserPortfolio | DefiTransaction)]
    mids = sim.mid_prices()
    eth = mids["ETH"]
    # The prices: one analytics window per asset at the simulator's final mid prices, ending
    # now (the broadcast reader starts 15 minutes back in wall-clock time).
    _produce(
        connection,
        namespace,
        [
            MarketAnalytics(
                symbol=f"{asset}/USD",
                window_start=now - timedelta(minutes=1),
                window_end=now,
                twap=price * 1.01,
                vwap=None,
                volatility=TICK_VOL,
                consolidated_price=price,
                sources=3,
                ticks=TICKS,
            )
            for asset, price in mids.items()
        ],
    )
    snap_at = start + timedelta(seconds=61)
    hand = [
        UserPortfolio(
            user_id=user,
            positions=(
                Position(
                    protocol="aave-v3",
                    chain="ethereum",
                    asset="ETH",
                    kind="collateral",
                    amount=10.0,
                    liquidation_threshold=ETH_LT,
                ),
                Position(
                    protocol="aave-v3",
                    chain="ethereum",
                    asset="USDC",
                    kind="debt",
                    amount=_hand_debt(mids, hf),
                ),
            ),
            ts=snap_at,
        )
        for user, hf in HAND_HF.items()
    ]
    _produce(connection, namespace, inputs + hand)
    producer = connection.producer()
    # A row deleted at the source (CDC: the deleted row, marked ys.cdc.op=d) is not an event:
    # had this 1,000 ETH deposit been applied, hand-ok's health factor would be far from 1.5,
    # now and after the restore of run 2.
    deleted = DefiTransaction(
        tx_hash="0xdeleted",
        user_id="hand-ok",
        protocol="aave-v3",
        chain="ethereum",
        action="deposit",
        asset="ETH",
        amount=1000.0,
        ts=snap_at + timedelta(seconds=1),
    )
    key, value, headers = encode(deleted)
    producer.produce(
        f"{namespace}defi.transactions",
        value,
        key,
        headers=[*headers, (CDC_OP_HEADER, b"d")],
        timestamp=timestamp_ms(deleted),
    )
    for topic, values in POISON.items():
        for value in values:
            producer.produce(f"{namespace}{topic}", value, b"hand-ok")
    assert producer.flush(30) == 0
    poison = sum(len(v) for v in POISON.values())

    # --- run 1 -----------------------------------------------------------------------------
    metrics = _run(kafka_target.settings, namespace)
    assert metrics.consumed == len(inputs) + len(hand) + 1 + poison
    assert metrics.dead_lettered == poison
    assessments, alerts = _outputs(connection, namespace)
    assert metrics.produced == len(assessments) + len(alerts)

    # Every simulated user's latest assessment has the simulator's own health factor.
    latest = {a.user_id: a for a in assessments}  # per user, output order is input order
    assert set(latest) == set(sim.users) | set(HAND_HF)
    for user in sim.users:
        expected = sim.health_factor(user)
        got = latest[user].health_factor
        assert (got is None) == (expected is None), user
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-9, abs=0), user
    for user, hf in HAND_HF.items():
        a = latest[user]
        debt = _hand_debt(mids, hf)
        # HF = 10 × ETH × 0.8 / (debt × USDC) = hf by construction of the debt.
        assert a.health_factor == pytest.approx(hf, rel=1e-9)
        assert a.collateral_usd == pytest.approx(10 * eth, rel=1e-12)
        assert a.debt_usd == pytest.approx(debt * mids["USDC"], rel=1e-12)
        assert a.assessed_at == snap_at

    # Alerts: exact for the hand-made users, consistent with an assessment for everyone.
    assert {a.kind for a in alerts} <= {"liquidation_risk", "concentration"}  # vol is low
    by_assessment = {(a.user_id, a.assessed_at): a for a in assessments}
    for alert in alerts:
        source = by_assessment[(alert.user_id, alert.ts)]
        value = source.health_factor if alert.kind == "liquidation_risk" else source.hhi
        assert alert.value == value
    hand_alerts = sorted(
        (a.user_id, a.severity, a.threshold)
        for a in alerts
        if a.user_id in HAND_HF and a.kind == "liquidation_risk"
    )
    assert hand_alerts == [("hand-crit", "critical", 1.05), ("hand-warn", "warning", 1.2)]
    assert len({a.alert_id for a in alerts}) == len(alerts)

    # Poison: dead-lettered to the namespaced DLQ with the decode error as the reason.
    dead = read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}")
    reasons = Counter(dead_letter.header(r.headers(), dead_letter.ERROR) for r in dead)
    expected_reasons = Counter(
        _decode_error(topic, value) for topic, values in POISON.items() for value in values
    )
    assert reasons == expected_reasons
    assert any("amount" in r for r in reasons) and any("colour" in r for r in reasons)
    sources = {dead_letter.header(r.headers(), dead_letter.SOURCE_TOPIC) for r in dead}
    assert sources == {f"{namespace}{t}" for t in POISON}

    # --- run 2: a restart restores positions and alert levels ------------------------------
    later = start + timedelta(seconds=120)

    def debt_to(user: str, hf: float, action: str) -> DefiTransaction:
        """The borrow or repay that moves a hand-made user's health factor to ``hf``."""
        delta = _hand_debt(mids, hf) - _hand_debt(mids, HAND_HF[user])
        return DefiTransaction(
            tx_hash=f"0x{uuid.uuid4().hex}",
            user_id=user,
            protocol="aave-v3",
            chain="ethereum",
            action=action,  # type: ignore[arg-type]
            asset="USDC",
            amount=abs(delta),
            ts=later,
        )

    second = [
        debt_to("hand-warn", 1.12, "borrow"),  # still warning: nothing new
        debt_to("hand-crit", 1.08, "repay"),  # still critical (not above 1.1): nothing new
        debt_to("hand-ok", 1.04, "borrow"),  # OK → critical
    ]
    _produce(connection, namespace, second)
    metrics = _run(kafka_target.settings, namespace)
    assert metrics.consumed == len(second)
    assert metrics.restored_records >= len(inputs) + len(hand)
    assessments2, alerts2 = _outputs(connection, namespace)
    fresh = [a for a in assessments2 if a.assessed_at == later]
    assert sorted(a.user_id for a in fresh) == sorted(HAND_HF)
    for a in fresh:
        hf = {"hand-warn": 1.12, "hand-crit": 1.08, "hand-ok": 1.04}[a.user_id]
        # Positions were rebuilt by the restore: snapshot debt ± the new transaction.
        assert a.health_factor == pytest.approx(hf, rel=1e-9)
    # Only hand-ok's alert is new: the others' levels came back with the restore.
    new_alerts = [a for a in alerts2 if a.ts == later]
    assert [(a.user_id, a.kind, a.severity) for a in new_alerts] == [
        ("hand-ok", "liquidation_risk", "critical")
    ]
    assert len(alerts2) == len(alerts) + 1
    assert len(assessments2) == len(assessments) + len(second)
