"""The simulator published to the local broker and read back: every record arrives exactly once,
on its catalog topic, with the codec's key and headers and its event time as timestamp. In dev
mode the CDC-captured entities land in PostgreSQL instead (a fresh database per test), row for
message, and through the Debezium connector on their topics."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

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
    superuser_conninfo,
)
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from kafka_helpers import create_namespaced_topics
from psycopg import sql
from pydantic import SecretStr

from ys_platform.catalog.codec import CDC_OP_HEADER, decode, encode, key_of, timestamp_ms, topic_of
from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import ALL_TOPICS
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.settings import Settings
from ys_platform.sources.publish import fill_topic, publish, run_simulation
from ys_platform.sources.record import (
    CAPTURED_TOPICS,
    RecordWriteError,
    RecordWriter,
    inspect_layout,
    is_captured,
    message_of_row,
)
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.topics import apply_plans, plan_topics

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 60.0
Record = tuple[str, bytes | None, bytes]  # topic, key, value


@pytest.fixture(scope="module")
def connection(local_stack: Settings) -> KafkaConnection:
    connection = local_stack.kafka
    admin = connection.admin()
    apply_plans(admin, plan_topics(admin, list(ALL_TOPICS)))  # idempotent
    return connection


def _end_offsets(connection: KafkaConnection, topics: list[str]) -> list[TopicPartition]:
    """The current end of every partition of ``topics``: where our records will start."""
    consumer = connection.consumer(f"test-sim-offsets-{uuid.uuid4().hex}")
    try:
        metadata = consumer.list_topics(timeout=30)
        ends = []
        for topic in topics:
            for partition in sorted(metadata.topics[topic].partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
                ends.append(TopicPartition(topic, partition, high))
        return ends
    finally:
        consumer.close()


def _read_back(
    connection: KafkaConnection, start: list[TopicPartition]
) -> list[tuple[Record, int, list[tuple[str, bytes]]]]:
    """Every record from ``start`` to the partitions' current end, read committed."""
    ends = {(tp.topic, tp.partition): high for tp, high in _highs(connection, start)}
    consumer = connection.consumer(f"test-sim-{uuid.uuid4().hex}", isolation_level="read_committed")
    records = []
    try:
        consumer.assign(start)
        deadline = time.monotonic() + READ_TIMEOUT_S
        pending = [tp for tp in start if ends[(tp.topic, tp.partition)] > tp.offset]
        while pending:
            assert time.monotonic() < deadline, f"partitions not read to their end: {pending}"
            for record in consumer.consume(num_messages=1_000, timeout=1.0):
                assert record.error() is None, record.error()
                if record.offset() < ends[(record.topic(), record.partition())]:
                    records.append(
                        (
                            (record.topic(), record.key(), record.value()),
                            record.timestamp()[1],
                            record.headers() or [],
                        )
                    )
            # The position (next offset to fetch) also steps over transaction markers.
            pending = [
                tp
                for tp in consumer.position(pending)
                if tp.offset < ends[(tp.topic, tp.partition)]
            ]
    finally:
        consumer.close()
    return records


def _highs(
    connection: KafkaConnection, partitions: list[TopicPartition]
) -> list[tuple[TopicPartition, int]]:
    consumer = connection.consumer(f"test-sim-offsets-{uuid.uuid4().hex}")
    try:
        return [
            (tp, consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), 30)[1])
            for tp in partitions
        ]
    finally:
        consumer.close()


def test_published_messages_read_back_exactly_once(connection: KafkaConnection) -> None:
    # Event time now: records stamped in the past could fall out of the topics' retention.
    simulator = MarketSimulator(seed=2026, users=50, start_ms=time.time_ns() // 1_000_000)
    # 50 initial snapshots + 195 msg/s for 10 s of event time = 2,000 messages.
    messages = list(simulator.events(10, rate=195))
    assert len(messages) == 2_000
    expected = Counter((topic_of(m), *encode(m)[:2]) for m in messages)
    per_topic = Counter(topic_of(m) for m in messages)
    timestamps = {(topic_of(m), encode(m)[1]): timestamp_ms(m) for m in messages}

    start = _end_offsets(connection, sorted(per_topic))
    counts: Counter[str] = Counter()
    assert publish(connection, messages, counts=counts) == 2_000
    assert counts == per_topic

    read = _read_back(connection, start)
    # Others (make dev, other tests) may produce to the same topics meanwhile: ours are the
    # records whose (topic, key, value) we sent — values carry unique event times and tx hashes.
    ours = Counter(record for record, _, _ in read if record in expected)
    assert ours == expected  # every message exactly once: no loss, no duplicate
    assert Counter(topic for topic, _, _ in ours.elements()) == per_topic
    for (topic, key, value), ts, headers in read:
        if (topic, key, value) in expected:
            assert ts == timestamps[(topic, value)]
            assert dict(headers)["schema-version"] == b"1"
            assert key == encode(decode(topic, value))[0]


def test_fill_topic_bulk_loads_encoded_ticks(connection: KafkaConnection) -> None:
    admin = connection.admin()
    topic = f"test.sim-fill-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    try:
        start_ms = time.time_ns() // 1_000_000
        ticks = list(MarketSimulator(seed=1, start_ms=start_ms).encoded_price_ticks(20_000))
        start = _end_offsets(connection, [topic])
        assert fill_topic(connection, topic, ticks) == 20_000
        read = _read_back(connection, start)
        assert Counter((key, value) for (_, key, value), _, _ in read) == Counter(
            (key, value) for key, value, _ in ticks
        )
        assert {ts for _, ts, _ in read} == {ts for _, _, ts in ticks}
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_run_simulation_paces_and_stops(local_stack: Settings, connection: KafkaConnection) -> None:
    started = time.monotonic()
    counts = run_simulation(local_stack, rate=400, duration_s=2, seed=5)
    elapsed = time.monotonic() - started
    # The reference set at once, then 2 s of events paced at 400/s (+ the initial snapshots).
    assert counts["defi.protocols"] >= 20 and counts["defi.tokens"] >= 200
    events = sum(counts.values()) - counts["defi.protocols"] - counts["defi.tokens"]
    assert events == 400 * 2 + 200
    assert elapsed >= 2.0

    # Forever, until stopped: returns promptly with what it produced.
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    counts = run_simulation(local_stack, rate=200, duration_s=float("inf"), seed=5, stop=stop)
    assert time.monotonic() - started < 15
    assert 200 < sum(counts.values()) < 2_000


# --- dev mode: the CDC-captured entities through PostgreSQL --------------------------------------


@pytest.fixture
def record_database(local_stack: Settings) -> Iterator[Settings]:
    """Settings whose PostgreSQL is a fresh migrated database of the local stack (dropped after):
    each test's rows are its own, reruns never collide."""
    if not local_stack.uses_local_postgres:
        pytest.skip("needs the local stack's PostgreSQL (superuser on loopback)")
    with fresh_database(local_stack) as dbname:
        conninfo = app_conninfo(local_stack, dbname)
        yield local_stack.model_copy(update={"postgres_dsn": SecretStr(conninfo)})


def _table_messages(conn: psycopg.Connection, topic_name: str) -> dict[str, Message]:
    """Every row of a captured topic's table as its catalog message, by primary key."""
    layout = inspect_layout(conn, topic_name)
    cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(layout.table)))
    names = [c.name for c in cur.description or ()]
    messages = {}
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        messages["|".join(str(row[k]) for k in layout.primary_key)] = message_of_row(
            topic_name, row
        )
    return messages


def _latest_by_key(conn: psycopg.Connection, messages: list[Message]) -> dict[str, dict]:
    """What the tables must hold after ``messages``: the last message of each primary key."""
    keys = {name: inspect_layout(conn, name).primary_key for name in CAPTURED_TOPICS}
    expected: dict[str, dict] = {name: {} for name in CAPTURED_TOPICS}
    for message in messages:
        topic_name = topic_of(message)
        key = "|".join(str(getattr(message, k)) for k in keys[topic_name])
        expected[topic_name][key] = message
    return expected


def test_record_writer_lands_each_simulated_entity_as_its_row(record_database: Settings) -> None:
    simulator = MarketSimulator(seed=31, users=40, start_ms=time.time_ns() // 1_000_000)
    messages = [*simulator.reference_messages(), *simulator.events(30, rate=200)]
    captured = [m for m in messages if is_captured(topic_of(m))]
    per_topic = Counter(topic_of(m) for m in captured)
    assert per_topic["defi.transactions"] > 100 and per_topic["users.portfolios"] > 40

    with psycopg.connect(record_database.postgres_conninfo()) as conn:
        # The layout read from the migrated tables: what the unit tests build by hand.
        assert inspect_layout(conn, "users.portfolios").jsonb == {"positions"}
        assert inspect_layout(conn, "defi.protocols").arrays == {"chains"}
        assert inspect_layout(conn, "defi.transactions").primary_key == ("tx_hash",)

        writer = RecordWriter(conn, batch_rows=100)  # several batches
        assert writer.write(captured) == len(captured)
        assert (writer.written, writer.pending) == (len(captured), 0)
        expected = _latest_by_key(conn, captured)
        stored = {name: _table_messages(conn, name) for name in CAPTURED_TOPICS}
        assert stored == expected
        # Exactly N rows: every transaction, protocol and token, one portfolio per user.
        assert len(stored["defi.transactions"]) == per_topic["defi.transactions"]
        assert len(stored["defi.protocols"]) == per_topic["defi.protocols"] == 25
        assert len(stored["defi.tokens"]) == per_topic["defi.tokens"] == 40 * 5
        assert len(stored["users.portfolios"]) == 40
        assert stored["defi.liquidity-pools"] == stored["defi.yields"] == {}

        # Writing the same messages again changes nothing: an upsert by primary key.
        assert writer.write(captured) == len(captured)
        assert {name: _table_messages(conn, name) for name in CAPTURED_TOPICS} == expected

        # A transaction moved to another time is refused (migration 0002), and nothing of its
        # batch lands: the protocol update written with it is rolled back.
        protocol = simulator.protocols()[0]
        renamed = protocol.model_copy(update={"name": "Renamed"})
        tx = next(m for m in captured if topic_of(m) == "defi.transactions")
        moved = tx.model_copy(update={"ts": tx.ts + timedelta(seconds=1)})
        with pytest.raises(RecordWriteError, match=r"defi\.transactions .*table transactions"):
            writer.write([renamed, moved])
        assert writer.pending == 0
        assert {name: _table_messages(conn, name) for name in CAPTURED_TOPICS} == expected

        with pytest.raises(KeyError, match="publish it to Kafka"):
            writer.add(next(m for m in messages if topic_of(m) == "market.prices"))


def test_record_writer_needs_the_migrated_tables(local_stack: Settings) -> None:
    if not local_stack.uses_local_postgres:
        pytest.skip("needs the local stack's PostgreSQL (superuser on loopback)")
    with (
        fresh_database(local_stack, migrated=False) as dbname,
        psycopg.connect(app_conninfo(local_stack, dbname)) as conn,
        pytest.raises(RecordWriteError, match=r"no table protocols .*ys-platform db migrate"),
    ):
        RecordWriter(conn)


def test_run_simulation_in_cdc_mode_splits_postgres_and_kafka(
    record_database: Settings, connection: KafkaConnection
) -> None:
    start_ms = time.time_ns() // 1_000_000
    # What run_simulation generates from these parameters, regenerated to compare with.
    simulator = MarketSimulator(seed=77, users=30, start_ms=start_ms)
    messages = [*simulator.reference_messages(), *simulator.events(2, rate=300)]
    captured = [m for m in messages if is_captured(topic_of(m))]
    direct = [m for m in messages if not is_captured(topic_of(m))]
    assert {topic_of(m) for m in direct} == {"market.prices", "crosschain.events"}

    topics = sorted({topic_of(m) for m in messages})
    start = _end_offsets(connection, topics)
    counts = run_simulation(
        record_database, rate=300, duration_s=2, seed=77, users=30, start_ms=start_ms, cdc=True
    )
    assert counts == dict(sorted(Counter(topic_of(m) for m in messages).items()))

    # The captured entities are in PostgreSQL, as they are after writing them one by one.
    with psycopg.connect(record_database.postgres_conninfo()) as conn:
        stored = {name: _table_messages(conn, name) for name in CAPTURED_TOPICS}
        assert stored == _latest_by_key(conn, captured)

    # Kafka got exactly the market data, and none of the captured entities straight.
    expected = Counter((topic_of(m), *encode(m)[:2]) for m in direct)
    sent = {(topic_of(m), *encode(m)[:2]) for m in messages}
    read = [record for record, _, _ in _read_back(connection, start)]
    assert Counter(r for r in read if r in sent) == expected


# Connect up (~10 s if not running), the connector's slot and empty snapshot a few seconds, then
# Debezium streams within a second or two; a busy 2-core machine can triple that.
@pytest.mark.timeout(240)
def test_dev_simulation_reaches_the_captured_topics_through_debezium() -> None:
    """``make dev``'s path end to end: run_simulation(cdc=True) into a fresh database captured
    by the repository's connector (its topics under a test namespace); every captured message
    arrives once on its topic, in order, equal to what the simulator made."""
    suffix = uuid.uuid4().hex[:10]
    namespace = f"t{suffix}."
    with connect_stack() as stack, fresh_database(stack) as dbname:
        kafka = stack.kafka
        admin = kafka.admin()
        create_namespaced_topics(admin, namespace, list(CAPTURED_TOPICS), partitions=1)
        file = namespaced_source(stack, dbname, suffix)
        with KafkaConnectClient(stack.connect_url) as client:
            try:
                result = apply_connector(client, file, stack.kafka)
                assert result.ok, result.message
                # Changes committed after the slot exists are streamed, each one: wait for it.
                _wait_for_slot(stack, f"t_{suffix}")

                start_ms = time.time_ns() // 1_000_000
                simulator = MarketSimulator(seed=41, users=20, start_ms=start_ms)
                messages = [*simulator.reference_messages(), *simulator.events(3, rate=200)]
                settings = stack.model_copy(
                    update={"postgres_dsn": SecretStr(app_conninfo(stack, dbname))}
                )
                counts = run_simulation(
                    settings, rate=200, duration_s=3, seed=41, users=20, start_ms=start_ms, cdc=True
                )
                assert counts == dict(sorted(Counter(topic_of(m) for m in messages).items()))

                ops = {}
                for name in CAPTURED_TOPICS:
                    sent = [m for m in messages if topic_of(m) == name]
                    if not sent:  # pools and yields: not simulated
                        continue
                    records = read_records(kafka, namespace + name, len(sent))
                    # One partition: offset order is commit order, each table's in write order.
                    assert [decode(name, r.value()) for r in records] == sent, name
                    assert [r.key().decode() for r in records] == [key_of(m) for m in sent]
                    ops[name] = Counter(dict(r.headers())[CDC_OP_HEADER] for r in records)
                # Inserts, except that a user's later snapshots update the user's row.
                assert ops == {
                    "defi.protocols": {b"c": 25},
                    "defi.tokens": {b"c": 40 * 5},
                    "defi.transactions": {b"c": counts["defi.transactions"]},
                    "users.portfolios": {b"c": 20, b"u": counts["users.portfolios"] - 20},
                }
            finally:
                delete_connector(client, file.name)


def _wait_for_slot(settings: Settings, slot: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(superuser_conninfo(settings), autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone():
            assert time.monotonic() < deadline, f"slot {slot} not created in {timeout_s}s"
            time.sleep(0.2)
