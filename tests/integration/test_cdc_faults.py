"""CDC through faults: the Connect worker SIGKILLed, then PostgreSQL restarted, while rows of
``transactions`` are inserted, updated and deleted; the ClickHouse sink keeps copying the topic.

After both faults and a last write, ``transactions FINAL`` in ClickHouse equals the PostgreSQL
table, row for row. Debezium delivers at least once — after the kill it re-sends what it sent
after its last flushed source offset — and the table's ReplacingMergeTree keeps the latest
version of each key, so the re-sent changes duplicate records in the topic but no row.

Recovery is measured per fault: from the fault to the first change written after it reaching
the topic.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    start_connect,
)
from confluent_kafka import TopicPartition
from kafka_helpers import create_namespaced_topics

from ys_platform.catalog.codec import decode, is_delete
from ys_platform.clients.clickhouse import client_factory, open_clickhouse
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.connectors import status as connector_status
from ys_platform.local import postgres
from ys_platform.local.stack import status as stack_status
from ys_platform.local.state import Layout
from ys_platform.postgres import CAPTURED
from ys_platform.settings import Settings
from ys_platform.sinks.clickhouse import ClickHouseSink, ClickHouseSinkMapping
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

# In `make test-faults`: in the fresh-clone CI run the tests after it (the ClickHouse and Dagster
# ones, health) then hung until their timeouts, not yet explained (passes alone and in pairs).
pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

TOPIC = "defi.transactions"
SEED = 20_261_202
WRITES_PER_S = 100
SETTLE_S = 60.0  # the last write to reach ClickHouse after the faults


@dataclass
class Writer:
    """Inserts, updates and deletes rows of ``transactions`` at a steady rate, on a seeded
    random plan, until stopped; rides out a PostgreSQL restart by reconnecting. Every statement
    is idempotent (insert on conflict do nothing, updates that set values, deletes), so one
    retried after a lost connection leaves the table as if it ran once."""

    conninfo: str
    stop: threading.Event = field(default_factory=threading.Event)
    written: list[float] = field(default_factory=list)
    """Wall time of each statement, once committed."""
    reconnects: int = 0
    failed: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        plan = random.Random(SEED)
        live: list[str] = []
        n = 0
        conn: psycopg.Connection | None = None
        try:
            while not self.stop.is_set():
                n += 1
                op = plan.random()
                if op < 0.6 or len(live) < 10:
                    tx, sql = f"0x{n:06x}", _INSERT
                    args: tuple = (
                        tx,
                        f"user-{n % 37}",
                        "aave-v3",
                        "ethereum",
                        "deposit",
                        "WETH",
                        round(plan.uniform(0.1, 10), 3),
                        _now(),
                    )
                    live.append(tx)
                elif op < 0.85:
                    tx = plan.choice(live)
                    sql, args = _UPDATE, (round(plan.uniform(0.1, 10), 3), tx)
                else:
                    tx = live.pop(plan.randrange(len(live)))
                    sql, args = _DELETE, (tx,)
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg.connect(
                                self.conninfo, autocommit=True, connect_timeout=2
                            )
                        conn.execute(sql, args)
                        break
                    except psycopg.OperationalError:  # PostgreSQL restarting: same statement again
                        self.reconnects += 1
                        conn = None
                        if self.stop.wait(0.2):
                            return
                self.written.append(time.time())
                self.stop.wait(1 / WRITES_PER_S)
        except BaseException as exc:  # surfaced by the test
            self.failed.append(exc)
        finally:
            if conn is not None:
                conn.close()


_INSERT = (
    "INSERT INTO transactions (tx_hash, user_id, protocol, chain, action, asset, amount, ts)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tx_hash) DO NOTHING"
)
# A transaction's user and time are its identity (the table refuses to change them).
_UPDATE = "UPDATE transactions SET amount = %s WHERE tx_hash = %s"
_DELETE = "DELETE FROM transactions WHERE tx_hash = %s"


def _now() -> datetime:
    return datetime.fromtimestamp(round(time.time(), 3), UTC)


@dataclass
class TopicWatch:
    """Reads the CDC topic as it fills: each record's arrival time and the change's own time."""

    settings: Settings
    topic: str
    stop: threading.Event = field(default_factory=threading.Event)
    arrivals: list[tuple[float, float | None]] = field(default_factory=list)
    """(arrival wall time, the row's ``ts`` — None for a delete) per record."""

    def run(self) -> None:
        consumer = self.settings.kafka.consumer(f"test-watch-{uuid.uuid4().hex[:8]}")
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            while not self.stop.is_set():
                for record in consumer.consume(500, timeout=0.2):
                    if record.error() is not None or record.value() is None:
                        continue
                    changed = None
                    if not is_delete(record.headers()):
                        changed = decode(TOPIC, record.value()).ts.timestamp()
                    self.arrivals.append((time.time(), changed))
        finally:
            consumer.close()

    def recovered_after(self, fault_at: float, timeout_s: float = 120.0) -> float:
        """Seconds from ``fault_at`` to the arrival of the first row inserted after it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            later = [a for a, ts in list(self.arrivals) if ts is not None and ts > fault_at]
            if later:
                return min(later) - fault_at
            time.sleep(0.2)
        raise AssertionError(f"no change made after the fault reached {self.topic} in {timeout_s}s")


def _pg_rows(conninfo: str) -> dict[str, tuple]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT tx_hash, user_id, amount, ts FROM transactions ORDER BY tx_hash"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3].astimezone(UTC)) for r in rows}


def _clickhouse_rows(dsn: str, table: str) -> dict[str, tuple]:
    with open_clickhouse(dsn) as client:
        rows = client.query(
            f"SELECT tx_hash, user_id, amount, ts FROM `{table}` FINAL ORDER BY tx_hash"
        ).result_rows
    return {r[0]: (r[1], r[2], r[3].replace(tzinfo=UTC)) for r in rows}


def test_connect_killed_and_postgres_restarted_mid_stream_lose_no_row(tmp_path: Path) -> None:
    with connect_stack() as stack, fresh_database(stack) as dbname:
        suffix = uuid.uuid4().hex[:10]
        namespace = f"t{suffix}."
        admin = stack.kafka.admin()
        create_namespaced_topics(admin, namespace, [c.topic for c in CAPTURED], partitions=1)
        conninfo = app_conninfo(stack, dbname)
        file = namespaced_source(stack, dbname, suffix)
        dsn = f"chdb://{tmp_path / 'clickhouse'}"
        sink = ClickHouseSink(
            client_factory(dsn), ClickHouseSinkMapping(topics={TOPIC: "transactions"}), namespace
        )
        sink_stop = threading.Event()
        sink_worker = SinkWorker(
            stack.kafka, sink, SinkConfig(batch_size=500, flush_interval_s=0.5, namespace=namespace)
        )
        sink_failed: list[BaseException] = []

        def run_sink() -> None:
            try:
                sink_worker.run(sink_stop)
            except BaseException as exc:  # surfaced below
                sink_failed.append(exc)

        writer = Writer(conninfo)
        watch = TopicWatch(stack, namespace + TOPIC)
        threads = [
            threading.Thread(target=f, daemon=True) for f in (writer.run, watch.run, run_sink)
        ]
        with KafkaConnectClient(stack.connect_url) as client:
            try:
                result = apply_connector(client, file, stack.kafka)
                assert result.ok, result.message
                for thread in threads:
                    thread.start()
                time.sleep(5)  # streaming under way

                # --- kill -9 the Connect worker, restart it 5 s later -------------------------
                (connect,) = [s for s in stack_status(stack) if s.name == "connect"]
                assert connect.pid is not None
                killed_at = time.time()
                os.kill(connect.pid, signal.SIGKILL)
                time.sleep(5)
                start_connect(stack)
                connect_recovery = watch.recovered_after(killed_at)

                # --- restart PostgreSQL under the connector and the writer --------------------
                layout = Layout(stack.home_dir)
                restarted_at = time.time()
                assert postgres.down(stack, layout)
                postgres.up(stack, layout)
                postgres_recovery = watch.recovered_after(restarted_at)
                live = connector_status(client, file.name)
                assert live.is_("RUNNING"), live.summary()

                writer.stop.set()
                threads[0].join(30)
                assert not writer.failed, writer.failed
                # A last change, after every other: once it is in the topic, all are.
                marker_at = time.time()
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(
                        _INSERT,
                        ("0xmarker", "user-0", "aave-v3", "ethereum", "swap", "WETH", 1.0, _now()),
                    )
                watch.recovered_after(marker_at, timeout_s=SETTLE_S)
                expected = _pg_rows(conninfo)
                time.sleep(2)  # the sink's next flush (0.5 s) after the last record
            finally:
                sink_stop.set()
                watch.stop.set()
                writer.stop.set()
                for thread in threads:
                    thread.join(60)
                delete_connector(client, file.name)
        assert not sink_failed, sink_failed

        stored = _clickhouse_rows(dsn, sink.table(TOPIC))
        lost = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        differing = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
        changes = len(writer.written) + 1
        print(
            f"\ncdc faults: {changes} changes, {len(expected)} rows, {len(watch.arrivals)} records "
            f"(+{len(watch.arrivals) - changes} re-sent or retried), lost {len(lost)}, "
            f"extra {len(extra)}, differing {len(differing)}; connect kill recovered in "
            f"{connect_recovery:.1f} s, postgres restart in "
            f"{postgres_recovery:.1f} s; writer reconnects {writer.reconnects}"
        )
        assert (lost, extra, differing) == ([], [], [])
        assert len(expected) > 500 and writer.reconnects >= 1
