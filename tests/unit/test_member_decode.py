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
