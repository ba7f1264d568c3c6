"""Where the simulator's messages go in dev: CDC-captured topics to PostgreSQL, the rest to Kafka.

The split is the catalog's (``TopicSpec.change_stream``, tables from ``postgres.CAPTURED``); the
row of a message is its model's fields, adapted to the column types (JSONB, arrays).
"""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from ys_platform.catalog.codec import topic_of
from ys_platform.catalog.models import MODELS
from ys_platform.catalog.topics import TOPICS
from ys_platform.postgres import CAPTURED
from ys_platform.sources.record import (
    CAPTURED_TOPICS,
    TableLayout,
    captured_table,
    is_captured,
    message_of_row,
    row_of,
)
from ys_platform.sources.simulator import MarketSimulator


def test_the_captured_topics_are_the_catalogs_change_streams_each_with_its_table():
    assert set(CAPTURED_TOPICS) == {t.name for t in TOPICS if t.change_stream}
    assert {captured_table(name).table for name in CAPTURED_TOPICS} == {c.table for c in CAPTURED}
    for spec in TOPICS:
        assert is_captured(spec.name) == spec.change_stream
    with pytest.raises(KeyError, match=r"market\.prices"):
        captured_table("market.prices")


def test_the_simulated_stream_splits_into_postgres_entities_and_kafka_market_data():
    simulator = MarketSimulator(seed=5, users=30)
    messages = [*simulator.reference_messages(), *simulator.events(60, rate=200)]
    to_postgres = {topic_of(m) for m in messages if is_captured(topic_of(m))}
    to_kafka = {topic_of(m) for m in messages if not is_captured(topic_of(m))}
    assert to_postgres == {"defi.protocols", "defi.tokens", "defi.transactions", "users.portfolios"}
    assert to_kafka == {"market.prices", "crosschain.events"}
    # Sentiment (not simulated yet) and the processors' outputs are not captured either.
    assert not is_captured("market.sentiment")
    assert not is_captured("market.analytics")


def _layout(topic_name: str, key: str, jsonb=(), arrays=()) -> TableLayout:
    # What inspect_layout reads from the migrated database (checked against it in
    # tests/integration/test_simulator_publish.py).
    return TableLayout(
        topic=topic_name,
        table=captured_table(topic_name).table,
        columns=tuple(MODELS[topic_name].model_fields),
        primary_key=(key,),
        jsonb=frozenset(jsonb),
        arrays=frozenset(arrays),
    )


def test_a_row_is_the_models_fields_and_reads_back_as_the_message():
    simulator = MarketSimulator(seed=5, users=30)
    protocol = simulator.protocols()[0]
    portfolio = next(m for m in simulator.events(1, rate=10) if topic_of(m) == "users.portfolios")

    layout = _layout("defi.protocols", "id", arrays=("chains",))
    row = row_of(protocol, layout)
    assert len(row) == len(layout.columns)
    values = dict(zip(layout.columns, row, strict=True))
    assert values["chains"] == list(protocol.chains)
    assert values["updated_at"] == protocol.updated_at
    assert message_of_row("defi.protocols", values) == protocol

    layout = _layout("users.portfolios", "user_id", jsonb=("positions",))
    values = dict(zip(layout.columns, row_of(portfolio, layout), strict=True))
    document = values["positions"]
    assert isinstance(document, Jsonb)
    assert document.obj == portfolio.model_dump(mode="json")["positions"]
    # As psycopg returns the JSONB column (parsed) and as Debezium sends it (JSON text).
    assert message_of_row("users.portfolios", {**values, "positions": document.obj}) == portfolio
    text = portfolio.model_dump_json(include={"positions"})[len('{"positions":') : -1]
    assert message_of_row("users.portfolios", {**values, "positions": text}) == portfolio


def test_an_empty_document_is_still_a_jsonb_array():
    # psycopg would send a bare empty list as an array literal ('{}'): an object in JSONB.
    portfolio = MODELS["users.portfolios"].model_validate(
        {"user_id": "u-1", "positions": [], "ts": "2026-01-01T00:00:00.000Z"}
    )
    layout = _layout("users.portfolios", "user_id", jsonb=("positions",))
    (_, positions, _) = row_of(portfolio, layout)
    assert isinstance(positions, Jsonb) and positions.obj == []


def test_the_upsert_updates_every_column_but_the_key():
    text = _layout("defi.transactions", "tx_hash").upsert().as_string(None)
    assert text.startswith('INSERT INTO "transactions" ("tx_hash", "user_id", ')
    assert 'ON CONFLICT ("tx_hash") DO UPDATE SET "user_id" = EXCLUDED."user_id", ' in text
    assert '"tx_hash" = EXCLUDED' not in text
    assert text.count("%s") == len(MODELS["defi.transactions"].model_fields)
