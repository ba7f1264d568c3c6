"""The ClickHouse sink for real: simulator and synthetic records of the six sinked topics through
the local broker into chDB, every value compared, each record stored once, poison dead-lettered.

The helpers here (input, production, reading back) are shared with the crash test.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import decode, encode, timestamp_ms, topic_of
from ys_platform.catalog.models import (
    ArbitrageOpportunity,
    MarketAnalytics,
    Message,
    RiskAssessment,
    YieldStrategy,
)
from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.clickhouse import client_factory, open_clickhouse
from ys_platform.clients.kafka import KafkaConnection, produce_record
from ys_platform.sinks.clickhouse import ClickHouseSink, load_mapping
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming import dead_letter
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP = consumer_group("clickhouse-sink")
PARTITIONS = 3  # fewer than the catalog's: the same code paths, much less broker work
SEED = 7_301
POISON = (b'{"oops', b"[]", b'{"symbol": 1}')

Record = tuple[str, bytes | None, bytes, int | None]  # catalog topic, key, value, timestamp


def sink_input(seed: int, prices: int, others: int) -> list[Record]:
    """Encoded records of the sink's six topics: simulator prices and transactions, synthetic
    analytics, yields, risk assessments and arbitrage, a few poison values in each topic."""
    start_ms = (time.time_ns() // 1_000_000 - 3_600_000) // 1000 * 1000  # inside retention
    sim = MarketSimulator(seed, symbols=12, users=50, start_ms=start_ms)
    records: list[Record] = [
        ("market.prices", k, v, ts) for k, v, ts in sim.encoded_price_ticks(prices, rate=500.0)
    ]
    rng = random.Random(seed)
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    transactions = (m for m in sim.events(1e9, 50.0) if topic_of(m) == "defi.transactions")
    for message in _take(transactions, others):
        records.append(_encoded(message))
    for make in (_analytics, _yields, _risk, _arbitrage):
        for i in range(others):
            records.append(_encoded(make(rng, start + timedelta(milliseconds=250 * i), i)))
    for topic_name in GROUP.inputs:
        for i, value in enumerate(POISON):
            records.insert(rng.randrange(len(records)), (topic_name, b"poison%d" % i, value, None))
    return records


def _take(messages: Iterator[Message], n: int) -> list[Message]:
    return [next(messages) for _ in range(n)]


def _encoded(message: Message) -> Record:
    key, value, _ = encode(message)
    return topic_of(message), key, value, timestamp_ms(message)


SYMBOLS = ("ETH/USD", "BTC/USD", "SOL/USD", "ARB/USD", "OP/USD")
CHAINS = ("ethereum", "arbitrum", "optimism", "base")


def _analytics(rng: random.Random, at: datetime, i: int) -> MarketAnalytics:
    twap = rng.uniform(1, 4000)
    no_vwap = i % 5 == 0
    return MarketAnalytics(
        symbol=rng.choice(SYMBOLS),
        window_start=at - timedelta(minutes=1),
        window_end=at,
        twap=twap,
        vwap=None if no_vwap else twap * rng.uniform(0.99, 1.01),
        volatility=rng.uniform(0, 0.05),
        consolidated_price=None if i % 7 == 0 else twap,
        sources=0 if i % 7 == 0 else rng.randint(1, 6),
        ticks=rng.randint(1, 500),
    )


def _yields(rng: random.Random, at: datetime, i: int) -> YieldStrategy:
    return YieldStrategy(
        strategy_id=f"strategy-{i % 40}",
        protocol=rng.choice(("aave-v3", "compound-v3", "lido", "curve")),
        chain=rng.choice(CHAINS),
        asset=rng.choice(("USDC", "WETH", "DAI")),
        apy=rng.uniform(0, 25),
        tvl_usd=rng.uniform(1e5, 1e9),
        ts=at,
    )


def _risk(rng: random.Random, at: datetime, i: int) -> RiskAssessment:
    collateral = rng.uniform(100, 1e6)
    debt = 0.0 if i % 4 == 0 else collateral * rng.uniform(0.1, 0.9)
    return RiskAssessment(
        user_id=f"user-{i % 60:04d}",
        health_factor=None if debt == 0 else collateral * 0.8 / debt,
        ltv=debt / collateral,
        collateral_usd=collateral,
        debt_usd=debt,
        risk_score=rng.random(),
        hhi=rng.random(),
        var_95_1d_usd=rng.uniform(0, 1e4),
        assessed_at=at,
    )


def _arbitrage(rng: random.Random, at: datetime, i: int) -> ArbitrageOpportunity:
    buy = rng.uniform(10, 4000)
    return ArbitrageOpportunity(
        id=f"arb-{i}",
        symbol=rng.choice(SYMBOLS),
        buy_chain=rng.choice(CHAINS),
        buy_venue="uniswap-v3",
        buy_price=buy,
        sell_chain=rng.choice(CHAINS),
        sell_venue="sushiswap",
        sell_price=buy * rng.uniform(1.001, 1.03),
        spread_bps=rng.uniform(10, 300),
        trade_size=rng.uniform(0.1, 100),
        expected_profit_usd=rng.uniform(-50, 500),
        score=rng.random(),
        detected_at=at,
        expires_at=at + timedelta(seconds=30),
    )


def create_sink_topics(connection: KafkaConnection, namespace: str) -> None:
    names = [*GROUP.inputs, GROUP.dead_letter_topic]
    create_namespaced_topics(connection.admin(), namespace, names, PARTITIONS)


def produce(
    connection: KafkaConnection,
    namespace: str,
    records: Iterable[Record],
    producer: Producer | None = None,
) -> int:
    """``records`` into the namespace's topics, flushed. ``producer``: one the caller keeps
    across calls (a new producer per call costs ~0.55 s here)."""
    producer = producer or connection.producer(linger_ms=20)
    count = 0
    for topic_name, key, value, ts in records:
        produce_record(producer, f"{namespace}{topic_name}", value, key, None, ts)
        count += 1
    assert producer.flush(60) == 0
    return count


def expected_rows(connection: KafkaConnection, namespace: str) -> tuple[dict, Counter]:
    """What the tables must hold, from the topics themselves: per catalog topic, {(partition,
    offset): field values}; and the poison records as Counter[(topic, partition, offset)]."""
    expected: dict[str, dict[tuple[int, int], tuple]] = {}
    poison: Counter = Counter()
    for topic_name in GROUP.inputs:
        rows = expected.setdefault(topic_name, {})
        physical = f"{namespace}{topic_name}"
        for record in read_topic(connection, physical, idle_s=1.0):
            if record.value() in POISON:
                poison[(physical, record.partition(), record.offset())] += 1
                continue
            message = decode(topic_name, record.value())
            rows[(record.partition(), record.offset())] = tuple(
                getattr(message, f) for f in type(message).model_fields
            )
    return expected, poison


def stored_rows(dsn: str, sink: ClickHouseSink) -> dict[str, list[tuple]]:
    """Every row of every sink table as (partition, offset, *fields), with the _topic checked."""
    stored: dict[str, list[tuple]] = {}
    with open_clickhouse(dsn) as client:
        for topic_name, spec in sink.tables.items():
            fields = [c.name for c in spec.columns if c.field is not None]
            result = client.query(
                f"SELECT _topic, _partition, _offset, {', '.join(f'`{f}`' for f in fields)} "
                f"FROM `{sink.table(topic_name)}`"
            ).result_rows
            assert {row[0] for row in result} <= {sink.physical_topic(topic_name)}
            stored[topic_name] = [tuple(map(_utc, row[1:])) for row in result]
    return stored


def _utc(value):
    # clickhouse-connect returns DateTime64(3, 'UTC') as naive datetimes in UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def assert_exactly_once(expected: dict, stored: dict[str, list[tuple]]) -> None:
    for topic_name, rows in expected.items():
        got = stored[topic_name]
        keys = [(p, o) for p, o, *_ in got]
        assert len(keys) == len(set(keys)), f"{topic_name}: duplicate rows"
        assert len(got) == len(rows), f"{topic_name}: {len(got)} rows stored, {len(rows)} sent"
        # Every value as decoded from the topic: floats exactly, times to the millisecond.
        stored_values = {(p, o): tuple(values) for p, o, *values in got}
        differ = [k for k, v in rows.items() if stored_values.get(k) != v]
        assert not differ, (
            topic_name,
            [
                (a, b)
                for a, b in zip(rows[differ[0]], stored_values.get(differ[0], ()), strict=False)
                if a != b
            ],
        )


def dead_letters(connection: KafkaConnection, namespace: str) -> Counter:
    records = read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}", idle_s=1.0)
    found: Counter = Counter()
    for r in records:
        headers = r.headers()
        assert dead_letter.header(headers, dead_letter.GROUP) == f"{namespace}{GROUP.group_id}"
        assert dead_letter.header(headers, dead_letter.ERROR)
        source = (
            dead_letter.header(headers, dead_letter.SOURCE_TOPIC),
            int(dead_letter.header(headers, dead_letter.SOURCE_PARTITION) or -1),
            int(dead_letter.header(headers, dead_letter.SOURCE_OFFSET) or -1),
        )
        assert r.value() in POISON
        found[source] += 1
    return found


def test_every_topic_lands_once_with_every_value(kafka_target, tmp_path):
    namespace = kafka_target.namespace()
    connection = kafka_target.settings.kafka
    create_sink_topics(connection, namespace)
    records = sink_input(SEED, prices=12_000, others=1_500)
    half = len(records) // 2
    produce(connection, namespace, records[:half])

    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    sink = ClickHouseSink(client_factory(dsn), load_mapping(), namespace)
    # Small batches: many flushes, several per partition, and a flush by time for the tail.
    config = SinkConfig(batch_size=4_000, flush_interval_s=0.5, namespace=namespace)
    worker = SinkWorker(connection, sink, config)
    feeder = threading.Thread(target=lambda: produce(connection, namespace, records[half:]))
    feeder.start()  # the rest arrives while the sink runs
    metrics = worker.run(threading.Event(), max_idle_s=4.0)
    feeder.join(60)

    expected, poison = expected_rows(connection, namespace)
    assert sum(map(len, expected.values())) + sum(poison.values()) == len(records)
    assert all(expected.values()), "every topic has rows"
    stored = stored_rows(dsn, sink)
    assert_exactly_once(expected, stored)
    assert metrics.consumed == len(records)
    assert metrics.produced == sum(map(len, expected.values()))
    assert metrics.dead_lettered == sum(poison.values()) == len(POISON) * len(GROUP.inputs)
    assert dead_letters(connection, namespace) == poison
    assert metrics.lag and all(lag == 0 for lag in metrics.lag.values())

    # A restart finds nothing to redo: the sink's progress says every partition is done.
    again = SinkWorker(
        connection, ClickHouseSink(client_factory(dsn), load_mapping(), namespace), config
    )
    assert again.run(threading.Event(), max_idle_s=2.0).consumed == 0
    assert_exactly_once(expected, stored_rows(dsn, sink))


def test_a_table_left_by_an_older_layout_is_refused_with_the_fix(tmp_path):
    """transactions used to be a plain MergeTree without _is_deleted: CREATE … IF NOT EXISTS
    would keep it, and the first insert would fail. The sink refuses it at start-up instead."""
    from dataclasses import replace as replace_spec

    from ys_platform.catalog.tables import table_spec
    from ys_platform.sinks.clickhouse import SinkTableError

    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    spec = table_spec("defi.transactions", "transactions")
    old = replace_spec(
        spec,
        columns=tuple(c for c in spec.columns if c.name != "_is_deleted"),
        versioned=False,
        keeps_deletes=False,
        order_by=("user_id", "ts"),
    )
    with open_clickhouse(dsn) as client:
        client.command(old.ddl())
    sink = ClickHouseSink(client_factory(dsn), load_mapping())
    with pytest.raises(SinkTableError) as caught:
        sink.open()
    sink.close()
    message = str(caught.value)
    assert "ClickHouse table transactions was created by an older version" in message
    assert "engine MergeTree" in message and "ReplacingMergeTree(_offset, _is_deleted)" in message
    assert "DROP TABLE transactions" in message and "_ys_sink_offsets" in message
