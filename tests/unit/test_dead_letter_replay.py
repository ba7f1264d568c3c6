"""The pure parts of dead-letter replay and of showing records: which dead letters are replayed
or passed over, the headers a replayed record carries, and a record rendered for the operator."""

from dataclasses import dataclass

from ys_platform.operations.dead_letters import (
    PASSED_OVER_NO_SOURCE,
    PASSED_OVER_REPLAYED,
    PASSED_OVER_SINCE,
    REPLAY,
    classify,
    replayed_headers,
)
from ys_platform.operations.records import render


@dataclass(frozen=True)
class Message:
    """A consumed record's accessors, as confluent_kafka.Message has them.

    confluent-kafka builds Message objects itself before 2.13 (which the bench's quixstreams
    pins below), so the pure logic is fed this value with the same methods.
    """

    topic_: str
    partition_: int
    offset_: int
    value_: bytes | None
    timestamp_: tuple[int, int]
    key_: bytes | None = None
    headers_: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_


def _record(**fields) -> Message:
    return Message(**{f"{name}_": value for name, value in fields.items()})


DLQ_HEADERS = [
    ("schema-version", b"1"),
    ("ys.dlq.error", b"market.prices: field 'price': Input should be greater than 0"),
    ("ys.dlq.topic", b"ns.market.prices"),
    ("ys.dlq.partition", b"2"),
    ("ys.dlq.offset", b"41"),
    ("ys.dlq.timestamp", b"1767614400000"),
    ("ys.dlq.group", b"ns.price-aggregation-processor"),
]
VALUE = (
    b'{"symbol": "ETH/USD", "base": "ETH", "quote": "USD", "price": -5.0, "source": "x",'
    b' "chain": "c", "venue": "v", "ts": "2026-01-05T12:00:00.000Z"}'
)


def _letter(headers=DLQ_HEADERS, at_ms: int = 1_767_614_460_000) -> Message:
    return _record(
        topic="ns.dlq.price-aggregation-processor",
        partition=1,
        offset=7,
        key=b"ETH/USD",
        value=VALUE,
        headers=list(headers),
        timestamp=(1, at_ms),
    )


def test_a_dead_letter_is_replayed_to_its_source_partition():
    item = classify(_letter(), since_ms=None)
    assert (item.action, item.source, item.partition, item.offset) == (
        REPLAY,
        ("ns.market.prices", 2),
        1,
        7,
    )
    assert item.reason == "market.prices: field 'price': Input should be greater than 0"


def test_dead_letters_passed_over():
    assert classify(_letter(at_ms=1000), since_ms=2000).action == PASSED_OVER_SINCE
    assert classify(_letter(at_ms=2000), since_ms=2000).action == REPLAY
    replayed = [*DLQ_HEADERS, ("ys.replay.topic", b"ns.dlq.price-aggregation-processor")]
    assert classify(_letter(replayed), since_ms=None).action == PASSED_OVER_REPLAYED
    assert classify(_letter([("schema-version", b"1")]), None).action == PASSED_OVER_NO_SOURCE


def test_a_replayed_record_keeps_its_headers_without_the_dead_letter_ones():
    assert replayed_headers(_letter()) == [
        ("schema-version", b"1"),
        ("ys.replay.topic", b"ns.dlq.price-aggregation-processor"),
        ("ys.replay.partition", b"1"),
        ("ys.replay.offset", b"7"),
    ]


def test_a_dead_letter_renders_with_its_reason_and_decode_error():
    assert render(_letter(), namespace="ns.") == {
        "partition": 1,
        "offset": 7,
        "timestamp": "2026-01-05T12:01:00.000Z",
        "key": "ETH/USD",
        "dead_letter": {
            "reason": "market.prices: field 'price': Input should be greater than 0",
            "topic": "ns.market.prices",
            "partition": 2,
            "offset": 41,
            "group": "ns.price-aggregation-processor",
        },
        "error": "market.prices: field 'price': Input should be greater than 0",
        "raw": VALUE.decode(),
    }


def test_a_record_of_a_topic_outside_the_catalog_renders_its_json():
    record = _record(
        topic="connect-status",
        partition=0,
        offset=3,
        value=b'{"state": "RUNNING"}',
        timestamp=(1, 0),
    )
    assert render(record) == {
        "partition": 0,
        "offset": 3,
        "timestamp": "1970-01-01T00:00:00.000Z",
        "key": None,
        "value": {"state": "RUNNING"},
    }
    broken = _record(topic="connect-status", partition=0, offset=4, value=b"{", timestamp=(1, 0))
    assert render(broken)["raw"] == "{"
    assert render(broken)["error"].startswith("not JSON: ")
