"""The poison generator of the integration tests (tests/integration/poison.py) makes what it says:
every kind of poison on every input topic of the workers is refused, with the reason of its
kind, by the catalog's decoders and the runtime's decode step, and the simulator's valid
records pass."""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ys_platform.catalog.codec import MAX_VALUE_BYTES, decode_batch, encode
from ys_platform.catalog.columnar import decode_columns, is_columnar
from ys_platform.catalog.envelope import header_error, key_error
from ys_platform.catalog.topics import CONSUMER_GROUPS
from ys_platform.streaming.member import decode_slices

# The generator is a helper of the integration tests, which run with their folder on sys.path.
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from poison import (
    KINDS,
    REASONS,
    PoisonRecord,
    applicable_kinds,
    poison_records,
    valid_messages,
)

INPUTS = sorted({name for group in CONSUMER_GROUPS for name in group.inputs})
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
VALID = valid_messages(INPUTS, NOW - timedelta(hours=1), seed=5, seconds=12)

VALUE_KINDS = frozenset(KINDS) - {"far_event_time", "wrong_schema_version", "non_utf8_key"}


@dataclass(frozen=True)
class Record:
    """The accessors of confluent_kafka.Message that decoding reads."""

    record: PoisonRecord | None
    at: int
    k: bytes | None = None
    v: bytes | None = None
    h: list[tuple[str, bytes]] | None = None

    def key(self) -> bytes | None:
        return self.record.key if self.record else self.k

    def value(self) -> bytes | None:
        return self.record.value if self.record else self.v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.record.headers if self.record else self.h

    def offset(self) -> int:
        return self.at


def _poison(topic: str, seed: int, count: int = 400) -> list[PoisonRecord]:
    return poison_records(
        topic,
        count,
        VALID[topic],
        seed=seed,
        now=NOW,
        limit_bytes=MAX_VALUE_BYTES,
        oversized_every=50,
    )


@pytest.mark.parametrize("topic", INPUTS)
@settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=st.integers(0, 2**32))
def test_each_kind_is_refused_with_its_reason(topic: str, seed: int) -> None:
    records = _poison(topic, seed)
    assert {r.kind for r in records} == set(applicable_kinds(topic))
    assert all(r.topic == topic for r in records)
    consumed = [Record(r, offset) for offset, r in enumerate(records)]
    columnar = frozenset({topic}) if is_columnar(topic) else frozenset()
    for columns in {frozenset(), columnar}:
        decoded = decode_slices({(topic, 0): consumed}, columns, now_ms=NOW_MS)[(topic, 0)]
        assert list(decoded.good) == []
        reasons = {record.offset(): str(error) for record, error in decoded.failures}
        assert sorted(reasons) == list(range(len(records)))  # each once, none lost
        for offset, record in enumerate(records):
            reason = reasons[offset]
            assert reason.startswith(topic), reason
            assert re.search(REASONS[record.kind], reason), (record.kind, reason)


@pytest.mark.parametrize("topic", INPUTS)
def test_value_kinds_are_refused_by_both_catalog_decoders_alike(topic: str) -> None:
    records = [r for r in _poison(topic, seed=1) if r.kind in VALUE_KINDS]
    values = [r.value for r in records]
    _, failures = decode_batch(topic, values)
    assert [i for i, _ in failures] == list(range(len(records)))
    for (_, error), record in zip(failures, records, strict=True):
        assert re.search(REASONS[record.kind], str(error)), (record.kind, str(error))
    if is_columnar(topic):
        batch = decode_columns(topic, values)
        assert len(batch) == 0
        assert [(i, str(e)) for i, e in batch.failures] == [(i, str(e)) for i, e in failures]


@pytest.mark.parametrize("topic", INPUTS)
def test_envelope_kinds_are_refused_by_the_catalog_envelope(topic: str) -> None:
    records = _poison(topic, seed=2)
    for record in records:
        if record.kind == "wrong_schema_version":
            assert header_error(topic, record.headers) is not None
            assert decode_batch(topic, [record.value])[1] == []  # the value alone is fine
        elif record.kind == "non_utf8_key":
            assert key_error(topic, record.key) is not None
            assert header_error(topic, record.headers) is None


def test_kinds_take_turns_and_oversized_values_reach_the_broker_limit() -> None:
    records = poison_records(
        "market.prices", 10_000, VALID["market.prices"], seed=3, now=NOW, limit_bytes=1000
    )
    counts = Counter(r.kind for r in records)
    assert counts["oversized"] == 20  # one in 500
    assert set(counts) == set(KINDS)
    assert max(counts.values()) - min(v for k, v in counts.items() if k != "oversized") <= 1
    sizes = [len(r.value or b"") for r in records if r.kind == "oversized"]
    assert min(sizes) > 1000 and max(sizes) <= 1_000_000 - 1_000
    again = poison_records(
        "market.prices", 10_000, VALID["market.prices"], seed=3, now=NOW, limit_bytes=1000
    )
    assert again == records  # reproducible


def test_a_tombstone_is_no_poison_on_the_compacted_protocols() -> None:
    assert "tombstone" not in applicable_kinds("defi.protocols")
    assert "tombstone" in applicable_kinds("defi.tokens")


@pytest.mark.parametrize("topic", INPUTS)
def test_valid_records_pass(topic: str) -> None:
    messages = VALID[topic]
    assert len(messages) >= 10
    consumed = [Record(None, i, *encode(m)) for i, m in enumerate(messages)]
    columnar = frozenset({topic}) if is_columnar(topic) else frozenset()
    for columns in {frozenset(), columnar}:
        decoded = decode_slices({(topic, 0): consumed}, columns, now_ms=NOW_MS)[(topic, 0)]
        assert decoded.failures == []
        assert len(decoded.good) == len(messages)
