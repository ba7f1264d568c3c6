"""The ClickHouse sink's store out of reach mid-stream: another process takes the chDB path (as
a reader the sink lets in between flushes) and keeps it past the sink's lock timeout. The sink
commits nothing meanwhile, says why in one line, pauses its partitions (staying in its group),
and once the path is free resumes every partition from what the store holds: every record is
stored exactly once, with every value."""

from __future__ import annotations

import logging
import select
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from targets import plaintext_target
from test_clickhouse_sink import (
    GROUP,
    PARTITIONS,
    SEED,
    assert_exactly_once,
    create_sink_topics,
    dead_letters,
    expected_rows,
    produce,
    sink_input,
    stored_rows,
)

from ys_platform.clients.clickhouse import client_factory, waiting_readers
from ys_platform.sinks.clickhouse import ClickHouseSink, load_mapping
from ys_platform.streaming import sink_worker
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

# In `make test-faults`: failed in the fresh-clone CI run (after test_cdc_faults), not yet
# explained; passes alone and after the other ClickHouse sink tests.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

LOCK_TIMEOUT_S = 1.0  # the sink's: it gives up on the held path quickly
HOLD_S = 6.0  # the other process keeps the path this long: several of the sink's attempts

HOLDER = """
import sys, time
from ys_platform.clients.clickhouse import open_clickhouse
# Waits, announced, until the sink lets go of the path between two flushes.
with open_clickhouse("chdb://" + sys.argv[1], lock_timeout_s=60) as client:
    client.command("SELECT 1")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _committed(connection, group_id: str, topics: list[str]) -> dict[tuple[str, int], int]:
    request = ConsumerGroupTopicPartitions(
        group_id, [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    )
    admin = connection.admin()  # held until the answer: a dropped client never completes it
    (future,) = admin.list_consumer_group_offsets([request]).values()
    return {(tp.topic, tp.partition): tp.offset for tp in future.result(30).topic_partitions}


def _wait(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.1)


def test_a_held_store_commits_nothing_and_resumes_without_loss(local_stack, tmp_path, caplog):
    # Plaintext only: the store's outage is independent of how the sink talks to Kafka.
    target = plaintext_target(local_stack)
    namespace = target.namespace()
    connection = target.settings.kafka
    create_sink_topics(connection, namespace)
    records = sink_input(SEED, prices=6_000, others=600)
    half = len(records) // 2
    produce(connection, namespace, records[:half])

    path = tmp_path / "clickhouse"
    dsn = f"chdb://{path}"
    sink = ClickHouseSink(
        client_factory(dsn, lock_timeout_s=LOCK_TIMEOUT_S),
        load_mapping(),
        namespace,
        readers=waiting_readers(dsn),
    )
    config = SinkConfig(batch_size=2_000, flush_interval_s=0.3, namespace=namespace)
    worker = SinkWorker(connection, sink, config)
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # surfaced below
            failed.append(exc)

    group_id = f"{namespace}{GROUP.group_id}"
    topics = [f"{namespace}{t}" for t in GROUP.inputs]
    thread = threading.Thread(target=run, daemon=True)
    with caplog.at_level(logging.INFO, logger=sink_worker.__name__):
        thread.start()
        _wait(lambda: worker.metrics.consumed == half or failed, "the first half stored")
        assert not failed, failed
        before = _committed(connection, group_id, topics)

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(HOLD_S)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            ready, _, _ = select.select([holder.stdout], [], [], 60)
            line = holder.stdout.readline().strip() if ready else ""
            if line != "held":
                holder.kill()
                _, err = holder.communicate(10)
                raise AssertionError(f"the holder took no path (exit {holder.returncode}): {err}")
            held_at = time.monotonic()
            produce(connection, namespace, records[half:])  # arrives while the path is held
            _wait(lambda: worker.store_outages >= 1, "the sink noticed the held store", HOLD_S)
            consumed_in_outage = worker.metrics.consumed
            # Nothing is stored or committed while the path is held.
            time.sleep(max(0.0, HOLD_S - (time.monotonic() - held_at) - 1.0))
            assert worker.metrics.consumed == consumed_in_outage
            assert _committed(connection, group_id, topics) == before
            assert holder.wait(30) == 0
        finally:
            holder.kill()
        _wait(lambda: worker.metrics.consumed == len(records) or failed, "the rest stored")
        stop.set()
        thread.join(60)
    assert not failed, failed

    expected, poison = expected_rows(connection, namespace)
    assert_exactly_once(expected, stored_rows(dsn, sink))
    # Dead letters are at-least-once: a flush that could not be stored is read and sent again.
    assert set(dead_letters(connection, namespace)) == set(poison)
    lines = [r.getMessage() for r in caplog.records if r.name == sink_worker.__name__]
    held = [line for line in lines if "its store cannot be written" in line]
    resumed = [line for line in lines if "its store answers again after" in line]
    assert len(held) == worker.store_outages and len(resumed) == worker.store_outages, lines
    assert "another process" in held[0], held[0]
    assert _committed(connection, group_id, topics) != before
