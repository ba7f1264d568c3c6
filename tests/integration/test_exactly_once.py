"""Exactly once under crashes: the price-aggregation processor SIGKILLed at random moments while
its input is still arriving, restarted each time, commits the same output as a run that never
crashed — no record lost, none duplicated, floats bit for bit, the same dead letters — read with
``isolation.level=read_committed``.

Two namespaces get byte-identical input (same keys, values, timestamps and partitions, produced
in the same order): ``…a.`` for the crash run (subprocesses of the real CLI, killed with
SIGKILL, so no ``finally`` and no clean group leave), ``…b.`` for the clean run (in-process, a
different batch size: batching must not matter either).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_helpers import create_namespaced_topics, read_topic

from ys_platform.catalog.codec import CONTENT_TYPE, decode
from ys_platform.catalog.models import MODELS
from ys_platform.clients.kafka import KafkaConnection, produce_record
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.runner import run_processor
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming import dead_letter
from ys_platform.streaming.worker import WorkerConfig

SEED = 20_261_127
TICKS = 100_000
RATE = 100.0  # ticks per second of event time: 100k ticks ≈ 17 min, 200 window ends
SYMBOLS = 20
PARTITIONS = 4
# The crash run's input: a head at once, so that the restores start mid-topic (the restore
# span, 370 s of event time, is 37k ticks), then steps until the kills are done.
HEAD = 40_000
CHUNK = 500
FEED_INTERVAL_S = 1.0  # ~500 records/s: the rest lasts ~2 min, longer than the kills take
KILLS = 3
KILL_AFTER_S = (1.5, 5.0)  # after the restarted worker's first commit: mid-stream, mid-batch
POISON_EVERY = 7_919  # undecodable records, dead-lettered by decode
LATE_EVERY = 5_003  # a tick re-sent 3000 records (~25 s of event time) later: too late
CLI = Path(sys.executable).with_name("ys-platform")

Record = tuple[int, bytes, bytes, int]  # partition, key, value, timestamp (ms)


def _input() -> list[Record]:
    """The simulator's ticks plus poison and too-late records, each with its partition fixed
    here (symbol key → partition) so both namespaces hold the very same partitions."""
    start_ms = (time.time_ns() // 1_000_000 - 2 * 3_600_000) // 60_000 * 60_000  # within retention
    ticks = list(
        MarketSimulator(SEED, symbols=SYMBOLS, start_ms=start_ms, users=0).encoded_price_ticks(
            TICKS, rate=RATE
        )
    )
    records: list[Record] = []
    for i, (key, value, ts) in enumerate(ticks):
        records.append((_partition(key), key, value, ts))
        if i % POISON_EVERY == POISON_EVERY - 1:
            records.append((_partition(key), key, b'{"symbol": "' + key + b'", oops', ts))
        if i % LATE_EVERY == LATE_EVERY - 1:
            k, v, t = ticks[i - 3_000]
            records.append((_partition(k), k, v, t))
    return records


def _partition(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


HEADERS = [
    ("schema-version", str(MODELS["market.prices"].SCHEMA_VERSION).encode()),
    ("content-type", CONTENT_TYPE),
]


def _produce(
    connection: KafkaConnection, topic: str, records: list[Record], producer: Producer | None = None
) -> None:
    """``records`` into ``topic``, flushed. ``producer``: one the caller keeps across calls (a
    new producer per call costs ~0.55 s here, 15x the produce and flush of 500 records)."""
    producer = producer or connection.producer(linger_ms=20)
    for partition, key, value, ts in records:
        produce_record(producer, topic, value, key, HEADERS, ts, partition=partition)
    assert producer.flush(60) == 0


def _committed(admin: AdminClient, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (-1001: none). Not ``require_stable``: the open transaction
    of a killed worker would make the fetch fail until the next incarnation aborts it; without
    it, offsets still pending in a transaction are simply not shown yet."""
    request = ConsumerGroupTopicPartitions(
        group_id, [TopicPartition(topic, p) for p in range(PARTITIONS)]
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    found = future.result(30).topic_partitions
    errors = [tp.error for tp in found if tp.error is not None]
    assert not errors, errors
    return {tp.partition: tp.offset for tp in found}


def _end_offsets(connection: KafkaConnection, topic: str) -> dict[int, int]:
    consumer = connection.consumer(f"test-ends-{uuid.uuid4().hex[:8]}")
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def _start(settings, namespace: str, *extra: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "YS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    return subprocess.Popen(
        [
            str(CLI),
            "processor",
            "run",
            "price-aggregation",
            "--namespace",
            namespace,
            "--batch-size",
            "500",
            # The same replica each restart: its transactional id fences the killed one's open
            # transaction at once (a standalone id of its own would leave it to time out).
            "--instance",
            "0",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _outputs(connection: KafkaConnection, namespace: str) -> dict[str, list]:
    """Committed analytics per symbol in offset order (a symbol lives in one partition)."""
    per_symbol: dict[str, list] = defaultdict(list)
    for record in read_topic(connection, f"{namespace}market.analytics", idle_s=1.0):
        message = decode("market.analytics", record.value())
        assert record.key() == message.symbol.encode()
        per_symbol[message.symbol].append(message)
    return dict(per_symbol)


def _count_uncommitted(connection: KafkaConnection, topic: str) -> int:
    """Records in ``topic`` as read_uncommitted sees them: aborted ones included."""
    consumer = connection.consumer(
        f"test-uncommitted-{uuid.uuid4().hex[:8]}",
        isolation_level="read_uncommitted",
        enable_partition_eof=True,
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        count, eof = 0, set()
        deadline = time.monotonic() + 60
        while len(eof) < len(partitions) and time.monotonic() < deadline:
            for record in consumer.consume(1000, timeout=0.5):
                if record.error() is None:
                    count += 1
                else:
                    eof.add(record.partition())
        return count
    finally:
        consumer.close()


def _dead_letters(connection: KafkaConnection, namespace: str) -> Counter:
    dead = read_topic(connection, f"{namespace}{GROUP.dead_letter_topic}", idle_s=1.0)
    return Counter(
        (
            dead_letter.header(r.headers(), dead_letter.SOURCE_PARTITION),
            dead_letter.header(r.headers(), dead_letter.SOURCE_OFFSET),
            dead_letter.header(r.headers(), dead_letter.ERROR),
        )
        for r in dead
    )


def test_sigkill_and_restart_commits_exactly_the_clean_output(local_stack, tmp_path):
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    crash_ns, clean_ns = f"t{run_id}a.", f"t{run_id}b."
    connection = local_stack.kafka
    admin = connection.admin()
    names = ["market.prices", "market.analytics", GROUP.dead_letter_topic]
    for namespace in (crash_ns, clean_ns):
        create_namespaced_topics(admin, namespace, names, PARTITIONS)
    records = _input()
    crash_input, clean_input = f"{crash_ns}market.prices", f"{clean_ns}market.prices"
    crash_group = f"{crash_ns}{GROUP.group_id}"

    # The clean run: all input first, then one in-process worker in the background until idle.
    _produce(connection, clean_input, records)
    clean_metrics = {}
    clean = threading.Thread(
        target=lambda: clean_metrics.update(
            m=run_processor(
                local_stack,
                GROUP.group_id,
                config=WorkerConfig(batch_size=2_000, namespace=clean_ns),
                stop=threading.Event(),
                max_idle_s=5.0,
            )
        ),
        daemon=True,
    )
    clean.start()

    # The crash run: the input arrives in steps while the worker is killed and restarted; once
    # the kills are done the rest arrives at full speed while the final incarnation drains it.
    feed_errors: list[BaseException] = []
    hurry = threading.Event()
    fed = [0]

    def feed() -> None:
        try:
            # One producer for every step: the feed keeps its ~500 records/s, and once hurried
            # the rest arrives in seconds (a producer per step made it ~60 s, which the final
            # incarnation spent waiting for input).
            producer = connection.producer(linger_ms=20)
            for lo in range(HEAD, len(records), CHUNK):
                _produce(connection, crash_input, records[lo : lo + CHUNK], producer)
                fed[0] = min(lo + CHUNK, len(records))
                hurry.wait(FEED_INTERVAL_S)
        except BaseException as exc:  # surfaced by the assertion below
            feed_errors.append(exc)

    _produce(connection, crash_input, records[:HEAD])
    fed[0] = HEAD
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    rng = random.Random(SEED)
    log: list[str] = []
    for kill in range(1, KILLS + 1):
        # A transaction the last kill caught inside EndTxn completes within milliseconds: let it
        # land, so that a commit counted as progress below is this incarnation's own.
        time.sleep(0.5)
        before = sum(max(o, 0) for o in _committed(admin, crash_group, crash_input).values())
        t0 = time.monotonic()
        log_path = tmp_path / f"run{kill}.log"  # a file: a pipe nobody reads could fill up
        with log_path.open("w") as stderr:
            proc = _start(local_stack, crash_ns, stderr=stderr)
        try:
            # Kill only once this incarnation has committed a transaction of its own: a restart
            # first waits out the killed member's session (30 s) before the group rebalances,
            # and a kill before any progress would test nothing.
            deadline = time.monotonic() + 90
            while (
                sum(max(o, 0) for o in _committed(admin, crash_group, crash_input).values())
                <= before
            ):
                assert proc.poll() is None, f"the processor exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, "no progress 90 s after a restart"
                time.sleep(0.2)
            t1 = time.monotonic()
            time.sleep(rng.uniform(*KILL_AFTER_S))
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
        # The input must still be arriving when the worker dies, or this is only a restart test.
        assert fed[0] < len(records), f"the input was all fed before kill {kill}"
        ran = time.monotonic() - t1
        restored = re.findall(r"restored \d+ partitions from (\d+) records", log_path.read_text())
        log.append(
            f"kill {kill}: first commit {t1 - t0:.1f}s after start, killed {ran:.1f}s later, "
            f"{fed[0]}/{len(records)} records fed, restore replayed {restored or 0} of {before}"
        )

    # The last incarnation drains the input and stops once idle.
    time.sleep(0.5)
    before = sum(max(o, 0) for o in _committed(admin, crash_group, crash_input).values())
    t0 = time.monotonic()
    hurry.set()
    final = _start(local_stack, crash_ns, "--max-idle", "5")
    try:
        stdout, stderr = final.communicate(timeout=150)
    finally:
        final.kill()
    assert final.returncode == 0, stderr
    feeder.join(30)
    assert not feeder.is_alive() and not feed_errors, feed_errors
    summary = json.loads(stdout.strip().splitlines()[-1])
    log.append(
        f"final run {time.monotonic() - t0:.1f}s: consumed {summary['consumed']}, restore "
        f"replayed {summary['restored_records']} of {before}"
    )
    # The restore started mid-topic (offsets_for_times), not from the beginning: the span
    # (370 s of event time) is shorter than what was committed by then.
    assert 0 < summary["restored_records"] < before
    assert summary["consumed"] > 0
    clean.join(120)
    assert not clean.is_alive(), "the clean run did not finish"

    # Every input record was consumed, and its offset committed, in both runs.
    ends = _end_offsets(connection, crash_input)
    assert ends == _end_offsets(connection, clean_input)
    assert sum(ends.values()) == len(records)
    assert _committed(admin, crash_group, crash_input) == ends
    assert _committed(admin, f"{clean_ns}{GROUP.group_id}", clean_input) == ends

    crashed, clean_out = _outputs(connection, crash_ns), _outputs(connection, clean_ns)
    assert set(crashed) == set(clean_out) and len(clean_out) == SYMBOLS
    for symbol, expected in clean_out.items():
        got = crashed[symbol]
        assert len(got) == len(expected), symbol
        ends_seen = [m.window_end for m in got]
        assert len(set(ends_seen)) == len(ends_seen), f"{symbol}: duplicate windows"
        assert got == expected, f"{symbol}: the outputs differ"  # floats compared exactly
    committed_outputs = sum(map(len, crashed.values()))
    assert committed_outputs == clean_metrics["m"].produced

    dead_crashed = _dead_letters(connection, crash_ns)
    dead_clean = _dead_letters(connection, clean_ns)
    assert dead_crashed == dead_clean
    assert max(dead_crashed.values()) == 1  # each bad record dead-lettered once
    assert sum(dead_clean.values()) == clean_metrics["m"].dead_lettered > 0

    # What the killed incarnations produced in transactions they never committed: in the log,
    # invisible to read_committed readers (evidence the kills landed mid-transaction).
    zombie = _count_uncommitted(connection, f"{crash_ns}market.analytics") - committed_outputs
    log.append(f"{zombie} aborted output records; {time.monotonic() - started:.0f}s in all")
    print("\n" + "\n".join(log))
    assert time.monotonic() - started < 240


# --- a rebalance while a transaction is open ------------------------------------------------------

REBALANCE_TICKS = 6_000
# Long enough that only the rebalance (or the emit of a window, or the stop) can commit.
REBALANCE_COMMIT_INTERVAL_S = 60.0


def _quiet_chunk(records: list[Record], start: int, interval_ms: int) -> int:
    """The end of a run of records from ``start`` whose event times all stay inside the emit
    interval the records before ``start`` reached: consuming it moves no partition's watermark
    past a multiple of the interval, so no window is emitted and nothing commits by itself."""
    step = max(ts for *_, ts in records[:start]) // interval_ms
    end = start
    while end < len(records) and records[end][3] // interval_ms == step:
        end += 1
    return end


def test_a_rebalance_commits_the_open_transaction_exactly_once(kafka_target):
    """A second replica joins while the first holds records in an open transaction: the first
    commits them in its revocation callback (committed offsets reach the ends at the rebalance,
    not a minute later at the commit interval), and the outputs of the two replicas together
    equal those of one worker that never rebalanced."""
    from ys_platform.processing.windows import DEFAULT_EMIT_INTERVAL_MS
    from ys_platform.processors.registry import build_processor
    from ys_platform.streaming.worker import TransactionalWorker

    shared_ns, clean_ns = kafka_target.namespace(), kafka_target.namespace()
    connection = kafka_target.settings.kafka
    admin = connection.admin()
    names = ["market.prices", "market.analytics", GROUP.dead_letter_topic]
    for namespace in (shared_ns, clean_ns):
        create_namespaced_topics(admin, namespace, names, PARTITIONS)
    records = _input()[:REBALANCE_TICKS]
    shared_input = f"{shared_ns}market.prices"
    group_id = f"{shared_ns}{GROUP.group_id}"

    _produce(connection, f"{clean_ns}market.prices", records)
    clean = run_processor(
        kafka_target.settings,
        GROUP.group_id,
        config=WorkerConfig(batch_size=2_000, namespace=clean_ns),
        stop=threading.Event(),
        max_idle_s=3.0,
    )

    def replica(instance: str) -> tuple[TransactionalWorker, threading.Thread, list]:
        config = WorkerConfig(
            namespace=shared_ns,
            instance_id=instance,
            commit_interval_s=REBALANCE_COMMIT_INTERVAL_S,
        )
        worker = TransactionalWorker(connection, build_processor(GROUP.group_id), config)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                worker.run(threading.Event(), max_idle_s=4.0)
            except BaseException as exc:  # surfaced by the assertions below
                failed.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return worker, thread, failed

    # The first replica takes a head of the input and commits it (its windows emit).
    head = len(records) // 2
    _produce(connection, shared_input, records[:head])
    first, first_thread, first_failed = replica("0")
    deadline = time.monotonic() + 60
    while _committed(admin, group_id, shared_input) != _end_offsets(connection, shared_input):
        assert not first_failed, first_failed
        assert time.monotonic() < deadline, "the first replica did not commit the head in 60 s"
        time.sleep(0.2)
    # Then records that close no window: they stay in its open transaction, uncommitted.
    quiet_end = _quiet_chunk(records, head, DEFAULT_EMIT_INTERVAL_MS)
    assert quiet_end - head >= 50, "the input has no quiet run to hold in a transaction"
    _produce(connection, shared_input, records[head:quiet_end])
    ends = _end_offsets(connection, shared_input)
    while first._open is None or first._open.consumed < quiet_end - head:
        assert time.monotonic() < deadline, "the first replica did not take the quiet records"
        time.sleep(0.05)
    held = _committed(admin, group_id, shared_input)
    assert held != ends  # held in the open transaction

    # The second replica joins: the rebalance revokes the first's partitions, which commits.
    joined = time.monotonic()
    second, second_thread, second_failed = replica("1")
    while _committed(admin, group_id, shared_input) != ends:
        assert not first_failed and not second_failed, first_failed + second_failed
        assert time.monotonic() - joined < 30, "the rebalance did not commit the open transaction"
        time.sleep(0.1)
    assert time.monotonic() - joined < REBALANCE_COMMIT_INTERVAL_S / 2

    # The rest arrives while the two share the partitions; both drain and stop when idle.
    _produce(connection, shared_input, records[quiet_end:])
    first_thread.join(120)
    second_thread.join(120)
    assert not first_thread.is_alive() and not second_thread.is_alive()
    assert not first_failed and not second_failed, first_failed + second_failed
    assert first.metrics.consumed > 0 and second.metrics.consumed > 0  # both took partitions
    assert first.metrics.consumed + second.metrics.consumed == len(records)
    final_ends = _end_offsets(connection, shared_input)
    assert sum(final_ends.values()) == len(records)
    assert _committed(admin, group_id, shared_input) == final_ends

    shared, clean_out = _outputs(connection, shared_ns), _outputs(connection, clean_ns)
    assert set(shared) == set(clean_out) and len(clean_out) == SYMBOLS
    for symbol, expected in clean_out.items():
        assert shared[symbol] == expected, f"{symbol}: the outputs differ"
    assert sum(map(len, shared.values())) == clean.produced
    assert _dead_letters(connection, shared_ns) == _dead_letters(connection, clean_ns)
