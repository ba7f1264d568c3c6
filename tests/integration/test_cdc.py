"""CDC end to end, for real: PostgreSQL rows -> Debezium (Kafka Connect) -> catalog topics.

A fresh migrated database per test, the repository's ``connectors/postgres-source.json`` with
its topics routed under a test namespace (``t<hex>.defi.protocols``, ...), a unique slot and
topic prefix. Rows that exist before the connector starts arrive through the snapshot; an
insert, an update and a delete afterwards through the stream. Every record must decode with the
catalog codec, be keyed by the catalog key, and equal the source row. Then the ClickHouse sink
stores the two CDC topics it maps: ``transactions`` read FINAL equals the source table, deletes
included; ``yield_data`` keeps the strategies' observation history.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cdc_helpers import (
    app_conninfo,
    apply_connector,
    connect_stack,
    delete_connector,
    fresh_database,
    namespaced_source,
    read_records,
)
from kafka_helpers import create_namespaced_topics
from targets import KafkaTarget, plaintext_target, secure_target

from ys_platform.catalog.codec import CDC_OP_HEADER, decode, is_delete
from ys_platform.catalog.models import MODELS
from ys_platform.catalog.tables import LAYOUTS
from ys_platform.clients.clickhouse import client_factory, open_clickhouse
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.connectors import heartbeat_topic
from ys_platform.postgres import CAPTURED
from ys_platform.security.principals import connector_principal
from ys_platform.settings import Settings
from ys_platform.sinks.clickhouse import ClickHouseSink, ClickHouseSinkMapping
from ys_platform.sources.record import captured_table, message_of_row
from ys_platform.streaming.dead_letter import header
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

# Connect up (~10 s if not running), snapshot ~5 s, streaming within a second or two; a busy
# 2-core machine can triple that.
pytestmark = pytest.mark.timeout(240)

T0 = datetime(2026, 11, 27, 12, 0, 0, 123_000, tzinfo=UTC)  # whole milliseconds, as on the wire
# The CDC topics the ClickHouse sink stores, with the seed's table names.
CDC_TABLES = {"defi.transactions": "transactions", "defi.yields": "yield_data"}


@pytest.fixture(scope="module")
def plaintext_connect() -> Iterator[Settings]:
    with connect_stack() as settings:
        yield settings


@pytest.fixture(params=["plaintext", "secure"])
def cdc_target(request: pytest.FixtureRequest) -> KafkaTarget:
    """Each CDC test on the plaintext stack, then on the secure one: Debezium logs in to
    PostgreSQL as its own role with its password (scram-sha-256), its producers to Kafka as the
    connector's own principal, the ClickHouse sink as its own."""
    if request.param == "plaintext":
        return plaintext_target(request.getfixturevalue("plaintext_connect"))
    return secure_target(request.getfixturevalue("secure_connect"))


def _rows(conn: psycopg.Connection, table: str) -> list[dict]:
    cur = conn.execute(f"SELECT * FROM {table}")
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _seed(conn: psycopg.Connection) -> None:
    """One or two rows in every captured table, written before the connector exists."""
    conn.execute(
        "INSERT INTO protocols (id, name, description, category, chains, tvl, apy, risk_score,"
        " updated_at) VALUES"
        " ('aave-v3', 'Aave V3', 'Lending', 'lending', '{ethereum,arbitrum}', 5.2e9, 4.2, 0.3, %s),"
        " ('uni-v3', 'Uniswap V3', NULL, 'dex', '{}', 3.1e9, NULL, NULL, %s)",
        (T0, T0),
    )
    conn.execute(
        "INSERT INTO tokens VALUES ('0xa0b8', 'USDC', 'USD Coin', 'ethereum', 6, 1.0, 3.2e10,"
        " NULL, %s)",
        (T0,),
    )
    conn.execute(
        "INSERT INTO transactions VALUES ('0xt1', 'user-1', 'aave-v3', 'ethereum', 'deposit',"
        " 'WETH', 2.5, %s)",
        (T0,),
    )
    conn.execute(
        "INSERT INTO liquidity_pools VALUES ('pool-1', 'uni-v3', 'ethereum', 'WETH', 'USDC',"
        " 1200.0, 4.1e6, 30, 8.2e6, %s)",
        (T0,),
    )
    conn.execute(
        "INSERT INTO yield_strategies VALUES ('y-1', 'aave-v3', 'ethereum', 'USDC', 4.5, 1e8, %s)",
        (T0,),
    )
    positions = [
        {
            "protocol": "aave-v3",
            "chain": "ethereum",
            "asset": "WETH",
            "kind": "collateral",
            "amount": 2.5,
            "liquidation_threshold": 0.83,
        },
        {
            "protocol": "aave-v3",
            "chain": "ethereum",
            "asset": "USDC",
            "kind": "debt",
            "amount": 900,
        },
    ]
    conn.execute("INSERT INTO portfolios VALUES ('user-1', %s, %s)", (json.dumps(positions), T0))


def _changes(conn: psycopg.Connection) -> None:
    """After the snapshot: an insert, an update and a delete in the tables that show them."""
    later = T0 + timedelta(seconds=1)
    conn.execute(
        "INSERT INTO protocols (id, name, category, tvl, updated_at)"
        " VALUES ('curve', 'Curve', 'dex', 1.9e9, %s)",
        (later,),
    )
    conn.execute(
        "UPDATE protocols SET tvl = 5.3e9, apy = 4.4, updated_at = %s WHERE id = 'aave-v3'",
        (later,),
    )
    conn.execute("DELETE FROM protocols WHERE id = 'uni-v3'")
    conn.execute(
        "INSERT INTO transactions VALUES ('0xt2', 'user-2', 'aave-v3', 'ethereum', 'borrow',"
        " 'USDC', 500, %s)",
        (later,),
    )
    conn.execute("UPDATE transactions SET amount = 3.0 WHERE tx_hash = '0xt1'")
    conn.execute("DELETE FROM transactions WHERE tx_hash = '0xt2'")
    conn.execute(
        "INSERT INTO transactions VALUES ('0xt3', 'user-1', 'aave-v3', 'ethereum', 'withdraw',"
        " 'WETH', 1.0, %s)",
        (later,),
    )
    # A corrected observation (same ts) replaces y-1's; y-2 is observed, then deleted.
    conn.execute("UPDATE yield_strategies SET apy = 4.7 WHERE strategy_id = 'y-1'")
    conn.execute(
        "INSERT INTO yield_strategies VALUES ('y-2', 'lido', 'ethereum', 'ETH', 3.1, 2e9, %s)",
        (later,),
    )
    conn.execute("DELETE FROM yield_strategies WHERE strategy_id = 'y-2'")
    conn.execute(
        "UPDATE portfolios SET positions = '[]', ts = %s WHERE user_id = 'user-1'", (later,)
    )


def _models(topic_name: str, rows_by_table: dict[str, list[dict]]) -> list:
    """The table of record's rows feeding ``topic_name`` as catalog messages, in key order."""
    rows = rows_by_table[captured_table(topic_name).table]
    return sorted((message_of_row(topic_name, row) for row in rows), key=_identity(topic_name))


def _identity(topic_name: str):
    return lambda m: tuple(getattr(m, c) for c in LAYOUTS[topic_name].order_by)


def _sink_to_clickhouse(kafka: KafkaConnection, namespace: str, tmp_path: Path) -> dict:
    """Run the ClickHouse sink over the test's CDC topics until idle; each table read FINAL as
    catalog messages in identity order."""
    mapping = ClickHouseSinkMapping(topics=CDC_TABLES)
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    sink = ClickHouseSink(client_factory(dsn), mapping, namespace)
    config = SinkConfig(batch_size=1_000, flush_interval_s=0.5, namespace=namespace)
    metrics = SinkWorker(kafka, sink, config).run(threading.Event(), max_idle_s=3.0)
    assert metrics.dead_lettered == 0
    stored: dict[str, list] = {}
    with open_clickhouse(dsn) as client:
        for topic_name in CDC_TABLES:
            model = MODELS[topic_name]
            fields = list(model.model_fields)
            result = client.query(
                f"SELECT {', '.join(fields)} FROM `{sink.table(topic_name)}` FINAL"
            ).result_rows
            stored[topic_name] = sorted(
                (
                    model.model_validate(dict(zip(fields, map(_utc, row), strict=True)))
                    for row in result
                ),
                key=_identity(topic_name),
            )
    return stored


def _utc(value):
    # clickhouse-connect returns DateTime64(3, 'UTC') as naive datetimes in UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def test_snapshot_then_insert_update_delete_reach_the_catalog_topics_and_clickhouse(
    cdc_target: KafkaTarget, tmp_path: Path
) -> None:
    stack = cdc_target.settings
    namespace = cdc_target.namespace()
    suffix = namespace.removeprefix("t").removesuffix(".")
    topics = [c.topic for c in CAPTURED]
    kafka = stack.kafka
    admin = kafka.admin()
    create_namespaced_topics(admin, namespace, topics, partitions=1)

    with fresh_database(stack) as dbname:
        conninfo = app_conninfo(stack, dbname)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            _seed(conn)
            snapshot = {c.table: _rows(conn, c.table) for c in CAPTURED}

        file = namespaced_source(stack, dbname, suffix)
        # The connector's own principal, allowed what its file writes (secure stack).
        cdc_target.grant([connector_principal(file)])
        with KafkaConnectClient(stack.connect_url) as client:
            try:
                result = apply_connector(client, file, kafka)
                assert result.ok, result.message
                assert result.action == "created"
                if cdc_target.name == "secure":
                    # Connect stores and returns the reference; the password stays in its file.
                    stored = client.get_config(file.name)["producer.override.sasl.jaas.config"]
                    own = kafka.as_principal(file.name).sasl_password
                    assert own is not None
                    assert f'username="{file.name}"' in stored
                    assert f"/{file.name}.env:YS_KAFKA_SASL_PASSWORD}}" in stored
                    assert own.get_secret_value() not in stored

                # --- the snapshot: every pre-existing row, keyed and equal to the source ----
                for captured in CAPTURED:
                    expected = snapshot[captured.table]
                    records = read_records(kafka, namespace + captured.topic, len(expected))
                    got = {r.key().decode(): decode(captured.topic, r.value()) for r in records}
                    want = {
                        str(row[captured.key]): message_of_row(captured.topic, row)
                        for row in expected
                    }
                    assert got == want, captured.topic
                    assert len(records) == len(expected)

                # --- streaming: insert, update, delete ---------------------------------------
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    _changes(conn)
                    after = {c.table: _rows(conn, c.table) for c in CAPTURED}

                # defi.protocols: r aave, r uni, c curve, u aave, tombstone uni (compacted topic:
                # the tombstone deletes the key; Debezium's delete event itself is dropped).
                records = read_records(kafka, namespace + "defi.protocols", 5)
                assert [(r.key().decode(), r.value() is None) for r in records] == [
                    ("aave-v3", False),
                    ("uni-v3", False),
                    ("curve", False),
                    ("aave-v3", False),
                    ("uni-v3", True),
                ]
                latest: dict[str, object] = {}
                for r in records:
                    key = r.key().decode()
                    latest[key] = None if r.value() is None else decode("defi.protocols", r.value())
                assert {k: v for k, v in latest.items() if v is not None} == {
                    row["id"]: message_of_row("defi.protocols", row) for row in after["protocols"]
                }
                assert latest["uni-v3"] is None

                # defi.transactions: r t1, c t2, u t1, d t2, c t3. The delete is t2's row as
                # it was, marked by the ys.cdc.op header, so strict consumers can still decode it.
                records = read_records(kafka, namespace + "defi.transactions", 5)
                values = [decode("defi.transactions", r.value()) for r in records]
                assert [
                    (header(r.headers(), CDC_OP_HEADER), r.key().decode(), v.tx_hash, v.amount)
                    for r, v in zip(records, values, strict=True)
                ] == [
                    ("r", "user-1", "0xt1", 2.5),
                    ("c", "user-2", "0xt2", 500.0),
                    ("u", "user-1", "0xt1", 3.0),
                    ("d", "user-2", "0xt2", 500.0),
                    ("c", "user-1", "0xt3", 1.0),
                ]
                assert [is_delete(r.headers()) for r in records] == [
                    False,
                    False,
                    False,
                    True,
                    False,
                ]
                assert values[2] == message_of_row("defi.transactions", after["transactions"][0])

                # --- on to ClickHouse, through the exactly-once sink ---------------------------
                stored = _sink_to_clickhouse(kafka, namespace, tmp_path)
                # transactions mirrors its table of record: read FINAL, the same rows.
                assert stored["defi.transactions"] == _models("defi.transactions", after)
                # yield_data is the strategies' history: y-1's corrected observation replaced
                # the first, and y-2's observation stays although the strategy was deleted.
                y2 = message_of_row(
                    "defi.yields",
                    {
                        **snapshot["yield_strategies"][0],
                        "strategy_id": "y-2",
                        "protocol": "lido",
                        "asset": "ETH",
                        "apy": 3.1,
                        "tvl_usd": 2e9,
                        "ts": T0 + timedelta(seconds=1),
                    },
                )
                assert stored["defi.yields"] == [*_models("defi.yields", after), y2]

                # users.portfolios: the JSONB positions document, then the update emptying it.
                records = read_records(kafka, namespace + "users.portfolios", 2)
                values = [decode("users.portfolios", r.value()) for r in records]
                assert [len(v.positions) for v in values] == [2, 0]
                assert values[-1] == message_of_row("users.portfolios", after["portfolios"][0])

                # The heartbeat topic exists (created by the platform, not by Connect).
                heartbeat = heartbeat_topic(file)
                assert heartbeat == f"__debezium-heartbeat.t{suffix}"
                assert heartbeat in admin.list_topics(timeout=10).topics
            finally:
                delete_connector(client, file.name)
