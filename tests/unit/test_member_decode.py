"""A member decodes a batch's partitions of a columnar topic in one call, then slices it: each
partition must get exactly what decoding it alone would give (rows, good records, failures)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ys_platform.catalog.codec import decode_batch
from ys_platform.catalog.columnar import decode_columns
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.member import decode_slices

TOPIC = "market.prices"


@dataclass(frozen=True)
class Record:
    """What the decoder reads of a consumed record: its value (and, here, where it was)."""

    partition: int
    offset: int
    payload: bytes | None

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return None

    def headers(self) -> None:
        return None


def _values(n: int) -> list[bytes]:
    return [v for _, v, _ in MarketSimulator(seed=3).encoded_price_ticks(n)]


def _slices(bad: dict[int, set[int]]) -> dict[tuple[str, int], list[Record]]:
    """Three partitions of 40, 0 and 25 records; the offsets in ``bad[p]`` are invalid."""
    values = iter(_values(65))
    slices: dict[tuple[str, int], list[Record]] = {}
    for partition, count in ((0, 40), (1, 0), (2, 25)):
        records = []
        for offset in range(count):
            value = next(values)
            if offset in bad.get(partition, set()):
                value = value.replace(b'"price":', b'"price":-', 1)  # a negative price
            records.append(Record(partition, offset, value))
        slices[(TOPIC, partition)] = records
    return slices


@pytest.mark.parametrize("bad", [{}, {0: {0, 39}, 2: {3}}, {2: {0, 24}}])
def test_one_call_per_topic_equals_each_partition_alone(bad: dict[int, set[int]]) -> None:
    slices = _slices(bad)
    decoded = decode_slices(slices, {TOPIC})
    assert set(decoded) == set(slices)
    for key, records in slices.items():
        alone = decode_columns(TOPIC, [r.value() for r in records])
        got = decoded[key]
        assert got.table is not None and got.table.equals(alone.table)
        assert [r.offset for r in got.good] == [records[i].offset for i in alone.indices]
        assert [(r.offset, str(e)) for r, e in got.failures] == [
            (records[i].offset, str(e)) for i, e in alone.failures
        ]
        expected_bad = sorted(bad.get(key[1], set()))
        assert [r.offset for r, _ in got.failures] == expected_bad
        assert all("price" in str(e) for _, e in got.failures)


def test_models_for_a_topic_not_listed_as_columnar() -> None:
    slices = _slices({0: {5}})
    decoded = decode_slices(slices)
    for key, records in slices.items():
        messages, failures = decode_batch(TOPIC, [r.value() for r in records])
        assert decoded[key].table is None
        assert list(decoded[key].messages) == messages
        assert [r.offset for r, _ in decoded[key].failures] == [i for i, _ in failures]


@dataclass(frozen=True)
class Consumed:
    """A consumed record with the envelope decoding reads: key, headers, value, offset."""

    k: bytes | None
    v: bytes | None
    h: list[tuple[str, bytes]] | None
    at: int

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.h

    def offset(self) -> int:
        return self.at


@pytest.mark.parametrize("columnar", [frozenset(), frozenset({TOPIC})])
def test_the_envelope_and_the_event_time_are_checked_with_the_value(columnar):
    from ys_platform.catalog.codec import encode

    ticks = list(MarketSimulator(seed=4).price_ticks(6))
    now_ms = int(ticks[-1].ts.timestamp() * 1000)
    encoded = [encode(t) for t in ticks]
    records = [Consumed(k, v, h, i) for i, (k, v, h) in enumerate(encoded)]
    key, value, headers = encoded[0]
    future = value.replace(ticks[0].ts.strftime("%Y").encode(), b"2999", 1)
    past = value.replace(ticks[0].ts.strftime("%Y").encode(), b"1999", 1)
    records[1] = Consumed(b"\xff" + key, value, headers, 1)
    records[2] = Consumed(key, value, [("schema-version", b"2")], 2)
    records[3] = Consumed(key, future, headers, 3)
    records[4] = Consumed(key, past, None, 4)  # CDC records carry no schema-version: fine
    decoded = decode_slices({(TOPIC, 0): records}, columnar, now_ms=now_ms)[(TOPIC, 0)]
    assert [r.offset() for r in decoded.good] == [0, 5]
    reasons = [(r.offset(), str(e)) for r, e in decoded.failures]
    assert [offset for offset, _ in reasons] == [1, 2, 3, 4]
    assert reasons[0][1] == (
        "market.prices: record key is not UTF-8 text (invalid start byte at byte 0)"
    )
    assert reasons[1][1] == (
        "market.prices: header 'schema-version' is '2', not this topic's version 1"
    )
    assert reasons[2][1].startswith("market.prices: field 'ts': event time is ")
    assert reasons[2][1].endswith(" s ahead of this consumer's clock (at most 300 s allowed)")
    assert reasons[3][1] == (
        "market.prices: field 'ts': event time is before 2009-01-03 (no event can be older)"
    )
    if columnar:
        assert decoded.table.num_rows == 2
    else:
        assert [m.ts for m in decoded.messages] == [ticks[0].ts, ticks[5].ts]
