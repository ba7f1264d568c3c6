"""The price-aggregation processor end to end on the local broker: exact analytics (equal to the
same logic run directly on each partition's ticks), every poison message dead-lettered with its
reason, and the output visible only once committed."""

import math
import threading
from collections import Counter
from datetime import timedelta

import numpy as np
from kafka_helpers import create_namespaced_topics, read_topic, recent_minute

from ys_platform.catalog.codec import DecodeError, decode, decode_batch, encode, timestamp_ms
from ys_platform.catalog.models import MarketPrice
from ys_platform.processing.windows import SlidingWindowState
from ys_platform.processors.price_aggregation import GROUP, ticks_of, to_message
from ys_platform.processors.runner import run_processor
from ys_platform.streaming import dead_letter
from ys_platform.streaming.worker import WorkerConfig

START = recent_minute()
SYMBOLS = ["ETH", "BTC", "SOL", "ARB", "OP", "LINK", "UNI", "AAVE"]
SOURCES = ["binance", "coinbase", "chainlink"]


def _ticks(seconds: int) -> list[MarketPrice]:
    """Each symbol ticked by each source every second with a seeded random walk."""
    rng = np.random.default_rng(11)
    price = {s: 100.0 * (i + 1) for i, s in enumerate(SYMBOLS)}
    ticks = []
    for second in range(seconds):
        for symbol in SYMBOLS:
            price[symbol] *= math.exp(rng.normal(0, 0.001))
            for k, source in enumerate(SOURCES):
                ticks.append(
                    MarketPrice(
                        symbol=f"{symbol}/USD",
                        base=symbol,
                        quote="USD",
                        price=round(price[symbol] * (1 + rng.normal(0, 0.0005)), 6),
                        volume=round(float(rng.uniform(0.1, 5)), 4)
                        if source != "chainlink"
                        else None,
                        source=source,
                        chain="ethereum",
                        venue=source,
                        ts=START + timedelta(seconds=second, milliseconds=137 * k),
                    )
                )
    return ticks


POISON = [
    b"{not json",
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": "3000", "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z"}',
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": NaN, "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z"}',
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": -5.0, "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z"}',
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": 5.0, "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z", "colour": "red"}',
]


def test_price_aggregation_end_to_end(kafka_target):
    namespace = kafka_target.namespace()
    connection = kafka_target.settings.kafka
    admin = connection.admin()
    create_namespaced_topics(
        admin, namespace, ["market.prices", "market.analytics", GROUP.dead_letter_topic], 3
    )
    ticks = _ticks(seconds=150)
    producer = connection.producer()
    for i, tick in enumerate(ticks):
        key, value, headers = encode(tick)
        producer.produce(
            f"{namespace}market.prices", value, key, headers=headers, timestamp=timestamp_ms(tick)
        )
        if i % 1000 == 500:  # poison spread through the stream, keyed so all land in one place
            for bad in POISON:
                producer.produce(f"{namespace}market.prices", bad, b"ETH/USD")
            producer.poll(0)
    producer.flush(30)
    poison_sent = len(POISON) * sum(1 for i in range(len(ticks)) if i % 1000 == 500)

    metrics = run_processor(
        kafka_target.settings,
        GROUP.group_id,
        config=WorkerConfig(batch_size=700, namespace=namespace),
        stop=threading.Event(),
        max_idle_s=4.0,
    )
    assert metrics.consumed == len(ticks) + poison_sent
    assert metrics.dead_lettered == poison_sent

    # Expected: the same logic run directly, in one batch per input partition.
    inputs = read_topic(connection, f"{namespace}market.prices")
    expected = []
    for partition in sorted({r.partition() for r in inputs}):
        values = [r.value() for r in inputs if r.partition() == partition]
        good, _ = decode_batch("market.prices", values)
        windows, ingest = SlidingWindowState().process(ticks_of(good))
        assert ingest.too_late.size == 0
        expected += [to_message(w) for w in windows]

    outputs = [
        decode("market.analytics", r.value())
        for r in read_topic(connection, f"{namespace}market.analytics")
    ]
    assert metrics.produced == len(outputs)
    key = lambda m: (m.symbol, m.window_end)  # noqa: E731
    assert sorted(outputs, key=key) == sorted(expected, key=key)
    # 150 s of ticks: window ends every 5 s from the first tick to watermark − grace.
    assert len(outputs) == len(SYMBOLS) * len({m.window_end for m in expected})
    eth = [m for m in outputs if m.symbol == "ETH/USD"]
    assert all(m.sources == 3 and m.ticks > 0 for m in eth[12:])

    dead = read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}")
    assert len(dead) == poison_sent
    rounds = poison_sent // len(POISON)
    reasons = Counter(dead_letter.header(r.headers(), dead_letter.ERROR) for r in dead)
    assert reasons == Counter({_decode_error(bad): rounds for bad in POISON})
    assert {r.split(":")[0] for r in reasons} == {"market.prices"}
    for record in dead:
        headers = record.headers()
        assert dead_letter.header(headers, dead_letter.SOURCE_TOPIC) == f"{namespace}market.prices"
        source_offset = int(dead_letter.header(headers, dead_letter.SOURCE_OFFSET))
        partition = int(dead_letter.header(headers, dead_letter.SOURCE_PARTITION))
        (original,) = [
            r for r in inputs if r.partition() == partition and r.offset() == source_offset
        ]
        assert original.value() == record.value()


def _decode_error(value: bytes) -> str:
    try:
        decode("market.prices", value)
    except DecodeError as exc:
        return str(exc)
    raise AssertionError(f"{value!r} decoded")
