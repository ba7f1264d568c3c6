"""Exactly once under crashes: the ClickHouse sink, a subprocess of its real CLI, SIGKILLed at
random moments while records keep arriving, restarted each time; in the end every record of the
six topics is in its table once, with every value, and every poison record was dead-lettered.

SIGKILL leaves no ``finally``: the chDB parts of an insert in flight, a BEFORE with no AFTER, an
uncommitted Kafka offset are all left as they were, which is what the sink's state machine is for.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from test_clickhouse_sink import (
    GROUP,
    PARTITIONS,
    assert_exactly_once,
    create_sink_topics,
    dead_letters,
    expected_rows,
    produce,
    sink_input,
    stored_rows,
)

from ys_platform.clients.clickhouse import client_factory
from ys_platform.sinks.clickhouse import ClickHouseSink, load_mapping

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SEED = 4_242
CHUNK = 1_000  # records per feed step
# ~1,000 records/s: the input (~51k records) lasts ~50 s, longer than the kills take (~30 s
# measured here: each incarnation's first flush comes 5-7 s after its start).
FEED_INTERVAL_S = 0.9
KILLS = 4
KILL_AFTER_S = (0.3, 3.0)  # after the incarnation's first flush: mid-batch, mid-insert
BATCH_SIZE = "3000"  # small flushes: many BEFORE/AFTER transitions for a kill to land in
FLUSH_INTERVAL_S = "0.3"
CLI = Path(sys.executable).with_name("ys-platform")


def _start(settings, namespace: str, dsn: str, *extra: str, stderr) -> subprocess.Popen:
    env = {**os.environ, "YS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    command = [
        str(CLI),
        "sink",
        "run",
        "clickhouse",
        "--namespace",
        namespace,
        "--dsn",
        dsn,
        "--batch-size",
        BATCH_SIZE,
        "--flush-interval",
        FLUSH_INTERVAL_S,
        # Static membership: a restart takes the partitions back at once instead of waiting
        # out the killed member's 30 s session.
        "--instance",
        "0",
        *extra,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _committed_total(admin, group_id: str, namespace: str) -> int:
    request = ConsumerGroupTopicPartitions(
        group_id,
        [TopicPartition(f"{namespace}{t}", p) for t in GROUP.inputs for p in range(PARTITIONS)],
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    return sum(max(tp.offset, 0) for tp in future.result(30).topic_partitions)


def test_sigkill_and_restart_store_every_record_once(local_stack, tmp_path):
    started = time.monotonic()
    namespace = f"t{uuid.uuid4().hex[:8]}."
    connection = local_stack.kafka
    admin = connection.admin()
    create_sink_topics(connection, namespace)
    records = sink_input(SEED, prices=36_000, others=3_000)
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    group_id = f"{namespace}{GROUP.group_id}"

    feed_errors: list[BaseException] = []
    hurry = threading.Event()
    fed = [0]

    def feed() -> None:
        try:
            # One producer for every step: once hurried, the rest arrives in a second or two (a
            # producer per step cost ~0.55 s, which the final incarnation spent waiting).
            producer = connection.producer(linger_ms=20)
            for lo in range(0, len(records), CHUNK):
                produce(connection, namespace, records[lo : lo + CHUNK], producer)
                fed[0] = min(lo + CHUNK, len(records))
                hurry.wait(FEED_INTERVAL_S)
        except BaseException as exc:  # surfaced by the assertion below
            feed_errors.append(exc)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    rng = random.Random(SEED)
    log: list[str] = []
    for kill in range(1, KILLS + 1):
        before = _committed_total(admin, group_id, namespace)
        t0 = time.monotonic()
        log_path = tmp_path / f"run{kill}.log"  # a file, not a pipe nobody reads
        with log_path.open("w") as stderr:
            proc = _start(local_stack, namespace, dsn, stderr=stderr)
        try:
            # Kill only after this incarnation has flushed once: a kill before any progress
            # would only test start-up.
            deadline = time.monotonic() + 90
            while _committed_total(admin, group_id, namespace) <= before:
                assert proc.poll() is None, f"the sink exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, "no progress 90 s after a restart"
                time.sleep(0.1)
            t1 = time.monotonic()
            time.sleep(rng.uniform(*KILL_AFTER_S))
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
        assert fed[0] < len(records), f"the input was all fed before kill {kill}"
        log.append(
            f"kill {kill}: first flush {t1 - t0:.1f}s after start, killed "
            f"{time.monotonic() - t1:.1f}s later, {fed[0]}/{len(records)} records fed"
        )

    # The last incarnation drains the input and stops once idle.
    t0 = time.monotonic()
    hurry.set()
    final = _start(local_stack, namespace, dsn, "--max-idle", "5", stderr=subprocess.PIPE)
    try:
        stdout, stderr = final.communicate(timeout=180)
    finally:
        final.kill()
    assert final.returncode == 0, stderr
    feeder.join(30)
    assert not feeder.is_alive() and not feed_errors, feed_errors
    summary = json.loads(stdout.strip().splitlines()[-1])
    log.append(
        f"final run {time.monotonic() - t0:.1f}s: consumed {summary['consumed']}, "
        f"{summary['replayed_batches']} batches re-sent from BEFORE, {summary['seeks']} seeks"
    )
    assert summary["consumed"] > 0
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("run*.log"))) + stderr
    log.append(
        f"over all runs: {logs.count('was not confirmed')} batches found in BEFORE and re-sent, "
        f"{logs.count('from the sink')} partitions resumed away from the group's commit"
    )

    expected, poison = expected_rows(connection, namespace)
    assert sum(map(len, expected.values())) + sum(poison.values()) == len(records)
    sink = ClickHouseSink(client_factory(dsn), load_mapping(), namespace)  # only for its naming
    assert_exactly_once(expected, stored_rows(dsn, sink))
    # Dead letters are at-least-once across crashes: every poison record is there, a kill
    # between a dead letter and the sink's progress may have added a duplicate.
    dead = dead_letters(connection, namespace)
    assert set(dead) == set(poison)
    log.append(f"{sum(dead.values()) - len(poison)} duplicate dead letters")
    log.append(f"{time.monotonic() - started:.0f}s in all")
    print("\n" + "\n".join(log))
