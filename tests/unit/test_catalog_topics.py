"""The topic catalog against the seed (kafka-streaming-architecture.md): names, sizes, configs."""

from __future__ import annotations

import re

import pytest

from ys_platform.catalog import (
    ALL_TOPICS,
    CONSUMER_GROUPS,
    DEAD_LETTER_TOPICS,
    TOPICS,
    ConsumerGroupSpec,
    consumer_group,
    topic,
)

# The seed's "Topic Architecture" section, verbatim: name -> partitions (all RF=3).
SEED_PARTITIONS = {
    "defi.protocols": 12,
    "defi.tokens": 12,
    "defi.transactions": 24,
    "defi.liquidity-pools": 12,
    "defi.yields": 6,
    "market.prices": 12,
    "market.analytics": 6,
    "market.sentiment": 6,
    "users.events": 6,
    "users.portfolios": 6,
    "system.alerts": 3,
    "system.metrics": 3,
    "risk.assessments": 6,
    "risk.alerts": 6,
    "crosschain.events": 12,
    "crosschain.arbitrage": 6,
}
SEED_GROUPS = {
    "price-aggregation-processor",
    "risk-assessment-processor",
    "crosschain-arbitrage-processor",
    "clickhouse-sink",
    "vector-sink",
}


def test_the_sixteen_seed_topics_with_their_partitions() -> None:
    assert {t.name: t.partitions for t in TOPICS} == SEED_PARTITIONS
    assert len(TOPICS) == 16


@pytest.mark.parametrize("name", SEED_PARTITIONS)
def test_replication_factor_three(name: str) -> None:
    assert topic(name).replication_factor == 3


def test_compacted_protocols() -> None:
    assert dict(topic("defi.protocols").configs) == {
        "cleanup.policy": "compact",
        "compression.type": "snappy",
    }


def test_high_volume_transactions() -> None:
    assert dict(topic("defi.transactions").configs) == {
        "compression.type": "snappy",
        "retention.ms": "2592000000",
        "segment.ms": "86400000",
    }


def test_other_topics_keep_broker_defaults() -> None:
    special = {"defi.protocols", "defi.transactions"}
    assert all(not t.configs for t in TOPICS if t.name not in special)


def test_every_stream_topic_is_keyed() -> None:
    assert all(t.key for t in TOPICS)


def test_the_seed_consumer_groups() -> None:
    assert {g.group_id for g in CONSUMER_GROUPS} == SEED_GROUPS
    processors = {g.group_id for g in CONSUMER_GROUPS if g.kind == "processor"}
    assert processors == {g for g in SEED_GROUPS if g.endswith("-processor")}


def test_seed_processor_wiring() -> None:
    assert consumer_group("price-aggregation-processor").inputs == ("market.prices",)
    assert consumer_group("price-aggregation-processor").outputs == ("market.analytics",)
    risk = consumer_group("risk-assessment-processor")
    assert set(risk.inputs) == {"defi.transactions", "users.portfolios", "market.analytics"}
    assert set(risk.outputs) == {"risk.assessments", "risk.alerts"}
    arbitrage = consumer_group("crosschain-arbitrage-processor")
    assert set(arbitrage.inputs) == {"market.prices", "crosschain.events"}
    assert arbitrage.outputs == ("crosschain.arbitrage",)


@pytest.mark.parametrize("group", CONSUMER_GROUPS, ids=lambda g: g.group_id)
def test_group_inputs_and_outputs_are_catalog_topics(group: ConsumerGroupSpec) -> None:
    names = {t.name for t in TOPICS}
    assert group.inputs and set(group.inputs) <= names
    assert set(group.outputs) <= names
    assert (group.kind == "sink") == (not group.outputs)


def test_one_dead_letter_topic_per_group() -> None:
    assert {t.name for t in DEAD_LETTER_TOPICS} == {f"dlq.{g}" for g in SEED_GROUPS}
    for group in CONSUMER_GROUPS:
        dlq = topic(group.dead_letter_topic)
        assert dlq.is_dead_letter and dlq.dead_letter_for == group.group_id
        assert dlq.configs.get("cleanup.policy", "delete") == "delete"  # every reject kept
    assert not any(t.is_dead_letter for t in TOPICS)


def test_all_topics_are_unique() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names)) == 16 + len(SEED_GROUPS)


def test_domain_is_the_first_segment() -> None:
    assert topic("defi.liquidity-pools").domain == "defi"
    assert topic("dlq.vector-sink").domain == "dlq"


def test_unknown_topic_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match=re.escape("'market.price' is not a catalog topic")):
        topic("market.price")
    with pytest.raises(KeyError, match="'nope' is not a catalog consumer group"):
        consumer_group("nope")


def test_specs_are_immutable() -> None:
    spec = topic("defi.protocols")
    with pytest.raises(TypeError):
        spec.configs["cleanup.policy"] = "delete"  # type: ignore[index]


def test_a_dead_letter_of_the_largest_input_record_fits_its_topic():
    from ys_platform.catalog.topics import BROKER_MAX_MESSAGE_BYTES, DEAD_LETTER_MAX_BYTES
    from ys_platform.streaming.dead_letter import MAX_ERROR_BYTES

    # The input's bytes, its reason (cut at MAX_ERROR_BYTES) and the source headers.
    assert DEAD_LETTER_MAX_BYTES >= BROKER_MAX_MESSAGE_BYTES + MAX_ERROR_BYTES + 1024
    for spec in DEAD_LETTER_TOPICS:
        assert spec.configs["max.message.bytes"] == str(DEAD_LETTER_MAX_BYTES)
