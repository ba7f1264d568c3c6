"""``ys-platform topics describe|tail`` against the local broker: partitions, replicas, configs
and exact offsets; the last, first and keyed records of a known topic, decoded with the catalog
codec, read committed (an aborted transaction's record never shows), a bad value shown with its
decode error."""

import json
import uuid
from datetime import timedelta

import pytest
from kafka_helpers import create_namespaced_topics, recent_minute

from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.catalog.models import MarketPrice
from ys_platform.catalog.topics import topic
from ys_platform.cli import main
from ys_platform.streaming.topics import desired_configs

T0 = recent_minute()


def _tick(base: str, second: int) -> MarketPrice:
    return MarketPrice(
        symbol=f"{base}/USD",
        base=base,
        quote="USD",
        price=100.0 + second,
        source="s",
        chain="ethereum",
        venue="v",
        ts=T0 + timedelta(seconds=second),
    )


@pytest.fixture(scope="module")
def known_topic(local_stack):
    """``<ns>market.prices`` with 3 partitions: p0 five ETH ticks (T0+0..4 s), p1 three BTC
    ticks (T0+5..7 s) and a value that is not JSON (T0+8 s), p2 an aborted transaction's tick
    (T0+9 s) and a committed one's (T0+10 s)."""
    connection = local_stack.kafka
    namespace = f"t{uuid.uuid4().hex[:8]}."
    name = f"{namespace}market.prices"
    create_namespaced_topics(connection.admin(), namespace, ["market.prices"], 3)
    producer = connection.producer()
    ticks = {0: [_tick("ETH", s) for s in range(5)], 1: [_tick("BTC", s) for s in range(5, 8)]}
    for partition, batch in ticks.items():
        for tick in batch:
            key, value, headers = encode(tick)
            producer.produce(
                name, value, key, partition=partition, headers=headers, timestamp=timestamp_ms(tick)
            )
    bad_at = timestamp_ms(_tick("BTC", 8))
    producer.produce(name, b"{not json", b"BTC/USD", partition=1, timestamp=bad_at)
    assert producer.flush(30) == 0

    transactional = connection.producer(transactional_id=f"{namespace}tail-test")
    transactional.init_transactions(30)
    for tick, commit in ((_tick("ETH", 9), False), (_tick("ETH", 10), True)):
        transactional.begin_transaction()
        key, value, headers = encode(tick)
        transactional.produce(
            name, value, key, partition=2, headers=headers, timestamp=timestamp_ms(tick)
        )
        if commit:
            transactional.commit_transaction(30)
        else:
            transactional.flush(30)
            transactional.abort_transaction(30)
    return namespace, name, ticks


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _where(lines: list[dict]) -> list[tuple[int, int]]:
    return [(line["partition"], line["offset"]) for line in lines]


def test_describe_shows_partitions_replicas_configs_and_offsets(local_stack, known_topic, capsys):
    _, name, _ = known_topic
    assert main(["topics", "describe", name]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        f"topic {name}: 3 partitions, replication factor 1, 0 under-replicated"
    )
    broker = str(next(iter(local_stack.kafka.admin().list_topics(timeout=10).brokers)))
    assert [line.split() for line in out[1:5]] == [
        ["PARTITION", "LEADER", "REPLICAS", "ISR", "EARLIEST", "LATEST"],
        ["0", broker, broker, broker, "0", "5"],
        ["1", broker, broker, broker, "0", "4"],
        # Aborted tick, abort marker, committed tick, commit marker.
        ["2", broker, broker, broker, "0", "4"],
    ]
    assert out[5] == "configs that differ from the defaults:"
    for key, value in desired_configs(topic("market.prices"), 1).items():
        assert f"    {key}={value}  (DYNAMIC_TOPIC_CONFIG)" in out


def test_tail_prints_exactly_the_last_records_decoded(local_stack, known_topic, capsys):
    namespace, name, ticks = known_topic
    assert main(["topics", "tail", name, "-n", "3", "--namespace", namespace]) == 0
    lines = _lines(capsys)
    assert _where(lines) == [(1, 2), (1, 3), (2, 2)]
    assert lines[0] == {
        "partition": 1,
        "offset": 2,
        "timestamp": (T0 + timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "key": "BTC/USD",
        "value": ticks[1][2].model_dump(mode="json"),
    }
    assert lines[1]["key"] == "BTC/USD" and lines[1]["raw"] == "{not json"
    assert lines[1]["error"].startswith("market.prices: ") and "value" not in lines[1]
    assert lines[2]["value"] == _tick("ETH", 10).model_dump(mode="json")

    # From the beginning: every committed record in time order; the aborted tick is not there.
    assert main(["topics", "tail", name, "--from-beginning", "--namespace", namespace]) == 0
    lines = _lines(capsys)
    assert _where(lines) == [(0, i) for i in range(5)] + [(1, i) for i in range(4)] + [(2, 2)]
    assert all(line["value"]["price"] != 109.0 for line in lines if "value" in line)

    assert main(["topics", "tail", name, "--from-beginning", "-n", "2"]) == 0
    assert _where(_lines(capsys)) == [(0, 0), (0, 1)]
    assert main(["topics", "tail", name, "--key", "ETH/USD", "-n", "2"]) == 0
    assert _where(_lines(capsys)) == [(0, 4), (2, 2)]
    assert main(["topics", "tail", name, "--key", "SOL/USD"]) == 0
    assert _lines(capsys) == []

    assert main(["topics", "tail", f"{name}-absent"]) == 1
    assert f"there is no topic '{name}-absent' on the cluster" in capsys.readouterr().err
