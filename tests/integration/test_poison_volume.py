"""Poison at volume (issue 11): 10,000 invalid records on each input topic of the workers,
interleaved with valid ones from the simulator, through the three processors and both sinks on
the local broker (ClickHouse sink into chDB, vector sink into Qdrant local mode with the real
model). Every invalid record must be in each reading group's dead-letter topic once, with a
reason of its kind and its source partition and offset; every valid record is processed; no
worker dies.

One namespace and one production for the whole module: the workers run one after the other
(processors first, so the sinks also take the processors' outputs) on the same topics.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import create_namespaced_topics, read_topic
from poison import REASONS, PoisonRecord, interleave, poison_records, valid_messages
from targets import plaintext_target

from ys_platform.catalog.codec import MAX_VALUE_BYTES, decode, encode, key_of, timestamp_ms
from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import CONSUMER_GROUPS, consumer_group
from ys_platform.clients.clickhouse import client_factory as clickhouse_factory
from ys_platform.clients.clickhouse import open_clickhouse
from ys_platform.clients.kafka import KafkaConnection, produce_record
from ys_platform.clients.qdrant import client_factory as qdrant_factory
from ys_platform.embeddings import shared_embedder
from ys_platform.processing.windows import SlidingWindowState
from ys_platform.processors.price_aggregation import ticks_of, to_message
from ys_platform.processors.registry import build_processor
from ys_platform.sinks.clickhouse import ClickHouseSink
from ys_platform.sinks.clickhouse import load_mapping as clickhouse_mapping
from ys_platform.sinks.vector import VectorSink, point_id
from ys_platform.sinks.vector import load_mapping as vector_mapping
from ys_platform.streaming import dead_letter
from ys_platform.streaming.app import BroadcastApp
from ys_platform.streaming.member import GroupMember
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

POISON_PER_TOPIC = 10_000
PARTITIONS = 3
SEED = 11
# Valid input: 20 s of simulator event time ending 5 min ago, inside the processors' broadcast
# lookbacks (10 and 15 min) and within the event-time bound; few enough vector-sink texts
# (~700: protocols, tokens, portfolio snapshots, sentiment) for the model's ~200 texts/s.
VALID_SECONDS = 20
MAX_IDLE_S = 1.5

RISK = "risk-assessment-processor"
PROCESSORS = ("price-aggregation-processor", "crosschain-arbitrage-processor", RISK)


def _broadcast(group_id: str) -> tuple[str, ...]:
    if group_id not in PROCESSORS:
        return ()
    app = build_processor(group_id)
    return app.broadcast_inputs if isinstance(app, BroadcastApp) else ()


READS = {g.group_id: (*g.inputs,) for g in CONSUMER_GROUPS}
"""What each group reads: its inputs (subscribed or broadcast, both are dead-lettered)."""
INPUTS = sorted({name for names in READS.values() for name in names})
OUTPUTS = sorted({name for g in CONSUMER_GROUPS for name in g.outputs} - set(INPUTS))


@dataclass
class Run:
    namespace: str
    connection: KafkaConnection
    now: datetime
    valid: dict[str, list[Message]]
    poison: dict[str, list[PoisonRecord]]
    metrics: dict[str, WorkerMetrics]
    seconds: dict[str, float]
    ends: dict[tuple[str, int], int]
    """Each input partition's end once the test's records were produced: the processors'
    outputs come after it."""
    clickhouse: ClickHouseSink
    clickhouse_dsn: str
    qdrant_path: Path


def _produce(connection: KafkaConnection, namespace: str, run_valid, run_poison) -> None:
    producer = connection.producer(linger_ms=50)
    for name in INPUTS:
        physical = f"{namespace}{name}"
        valid = [(*encode(m), timestamp_ms(m)) for m in run_valid[name]]
        for item in interleave(valid, run_poison[name], seed=SEED):
            if isinstance(item, PoisonRecord):
                key, value, headers, ts = item.key, item.value, item.headers, item.timestamp_ms
            else:
                key, value, headers, ts = item
            produce_record(producer, physical, value, key, headers, ts)
    assert producer.flush(120) == 0


@pytest.fixture(scope="module")
def run(local_stack, tmp_path_factory) -> Run:
    target = plaintext_target(local_stack)
    namespace = target.namespace()
    connection = local_stack.kafka
    dead_letter_topics = [g.dead_letter_topic for g in CONSUMER_GROUPS]
    create_namespaced_topics(
        connection.admin(), namespace, [*INPUTS, *OUTPUTS, *dead_letter_topics], PARTITIONS
    )
    now = datetime.now(UTC).replace(microsecond=0)
    valid = valid_messages(
        INPUTS, now - timedelta(minutes=5, seconds=VALID_SECONDS), seed=SEED, seconds=VALID_SECONDS
    )
    started = time.monotonic()
    poison = {
        name: poison_records(
            name,
            POISON_PER_TOPIC,
            valid[name],
            seed=SEED,
            now=now,
            limit_bytes=MAX_VALUE_BYTES,
            oversized_every=1000,
        )
        for name in INPUTS
    }
    seconds = {"generate": time.monotonic() - started}
    started = time.monotonic()
    _produce(connection, namespace, valid, poison)
    seconds["produce"] = time.monotonic() - started
    ends = _ends(connection, namespace)

    root = tmp_path_factory.mktemp("poison")
    dsn = f"chdb://{root / 'clickhouse'}"
    clickhouse = ClickHouseSink(clickhouse_factory(dsn), clickhouse_mapping(), namespace)
    qdrant_path = root / "qdrant"
    vector = VectorSink(
        qdrant_factory(path=qdrant_path), vector_mapping(), shared_embedder(), namespace
    )
    workers: dict[str, GroupMember] = {
        group_id: TransactionalWorker(
            connection, build_processor(group_id), WorkerConfig(namespace=namespace, metrics=None)
        )
        for group_id in PROCESSORS
    }
    sink_config = SinkConfig(namespace=namespace, metrics=None, flush_interval_s=0.5)
    workers["vector-sink"] = SinkWorker(connection, vector, sink_config)
    # The processors and the vector sink side by side (the model's kernels and librdkafka run
    # outside the GIL); then the ClickHouse sink, which also takes the processors' outputs.
    metrics = _run_all(workers, seconds)
    clickhouse_worker = SinkWorker(connection, clickhouse, sink_config)
    metrics |= _run_all({"clickhouse-sink": clickhouse_worker}, seconds)
    print(f"\npoison at volume, seconds: { {k: round(v, 1) for k, v in seconds.items()} }")
    for group_id, m in metrics.items():
        print(f"{group_id}: consumed {m.consumed}, produced {m.produced}, dlq {m.dead_lettered}")
    return Run(
        namespace,
        connection,
        now,
        valid,
        poison,
        metrics,
        seconds,
        ends,
        clickhouse,
        dsn,
        qdrant_path,
    )


def _run_all(workers: dict[str, GroupMember], seconds: dict[str, float]) -> dict:
    """Run the workers in threads until each is idle; a worker that raised fails the test."""
    metrics: dict[str, WorkerMetrics] = {}
    failed: dict[str, BaseException] = {}

    def work(group_id: str, worker: GroupMember) -> None:
        started = time.monotonic()
        try:
            metrics[group_id] = worker.run(threading.Event(), max_idle_s=MAX_IDLE_S)
        except BaseException as exc:  # the test's point: no worker dies
            failed[group_id] = exc
        seconds[group_id] = time.monotonic() - started

    threads = [threading.Thread(target=work, args=item) for item in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failed, f"workers died: {failed}"
    assert set(metrics) == set(workers), "a worker did not finish in 300 s"
    return metrics


def _ends(connection: KafkaConnection, namespace: str) -> dict[tuple[str, int], int]:
    consumer = connection.consumer("poison-ends")
    try:
        return {
            (name, p): consumer.get_watermark_offsets(
                TopicPartition(f"{namespace}{name}", p), timeout=10
            )[1]
            for name in INPUTS
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def _fingerprint(key: bytes | None, value: bytes | None, headers) -> tuple:
    """What tells the records the test produced apart: key, value and schema-version."""
    versions = [v for n, v in headers or () if n == "schema-version"]
    return key, value, versions[-1] if versions else None


@pytest.fixture(scope="module")
def letters(run: Run) -> dict[str, list]:
    """Every record of every group's dead-letter topic."""
    return {
        g.group_id: read_topic(run.connection, f"{run.namespace}{g.dead_letter_topic}", idle_s=0.2)
        for g in CONSUMER_GROUPS
    }


@pytest.fixture(scope="module")
def inputs(run: Run) -> dict[str, dict[tuple[int, int], object]]:
    """Every record of every input topic by (partition, offset)."""
    return {
        name: {
            (r.partition(), r.offset()): r
            for r in read_topic(run.connection, f"{run.namespace}{name}", idle_s=0.2)
        }
        for name in INPUTS
    }


@pytest.mark.parametrize("group_id", [g.group_id for g in CONSUMER_GROUPS])
def test_every_invalid_record_is_dead_lettered_once_with_its_reason(
    run: Run, inputs, letters, group_id
):
    physical_group = f"{run.namespace}{group_id}"
    dead = letters[group_id]
    by_topic: dict[str, list] = defaultdict(list)
    for record in dead:
        headers = record.headers()
        reason = dead_letter.header(headers, dead_letter.ERROR)
        assert reason, "a dead letter without a reason"
        assert dead_letter.header(headers, dead_letter.GROUP) == physical_group
        source = dead_letter.header(headers, dead_letter.SOURCE_TOPIC)
        name = source.removeprefix(run.namespace)
        partition = int(dead_letter.header(headers, dead_letter.SOURCE_PARTITION))
        offset = int(dead_letter.header(headers, dead_letter.SOURCE_OFFSET))
        original = inputs[name][(partition, offset)]
        # The original bytes, untouched, and where they came from.
        assert (record.key(), record.value()) == (original.key(), original.value())
        assert original.timestamp()[1] == int(
            dead_letter.header(headers, dead_letter.SOURCE_TIMESTAMP)
        )
        by_topic[name].append((record, reason, (partition, offset)))
    reading = READS[group_id]
    assert sorted(by_topic) == sorted(reading)
    for name in reading:
        letters = by_topic[name]
        # Exactly the invalid records: as many, each source offset once, the same bytes.
        assert len(letters) == POISON_PER_TOPIC, (group_id, name, len(letters))
        assert len({at for _, _, at in letters}) == POISON_PER_TOPIC
        kinds: dict[tuple, list[str]] = defaultdict(list)
        for poison in run.poison[name]:
            kinds[_fingerprint(poison.key, poison.value, poison.headers)].append(poison.kind)
        sent = Counter({fp: len(k) for fp, k in kinds.items()})
        got = Counter(_fingerprint(r.key(), r.value(), r.headers()) for r, _, _ in letters)
        assert got == sent, (group_id, name)
        for record, reason, _ in letters:
            fingerprint = _fingerprint(record.key(), record.value(), record.headers())
            assert reason.startswith(f"{name}"), reason
            assert any(re.search(REASONS[kind], reason) for kind in kinds[fingerprint]), (
                kinds[fingerprint],
                reason,
            )
    metrics = run.metrics[group_id]
    assert metrics.dead_lettered == POISON_PER_TOPIC * len(reading)


@pytest.mark.parametrize("group_id", [g.group_id for g in CONSUMER_GROUPS])
def test_no_worker_died_and_each_consumed_its_whole_input(run: Run, inputs, group_id):
    metrics = run.metrics[group_id]  # the worker returned: it ran to its idle stop
    subscribed = [n for n in READS[group_id] if n not in _broadcast(group_id)]
    assert metrics.consumed == sum(len(inputs[n]) for n in subscribed)
    assert metrics.lag and all(lag == 0 for lag in metrics.lag.values())


def _refused(run: Run, dead: list) -> dict[str, set[tuple[int, int]]]:
    """(partition, offset) of the records dead-lettered in ``dead``, by catalog topic."""
    refused: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for record in dead:
        headers = record.headers()
        name = dead_letter.header(headers, dead_letter.SOURCE_TOPIC).removeprefix(run.namespace)
        refused[name].add(
            (
                int(dead_letter.header(headers, dead_letter.SOURCE_PARTITION)),
                int(dead_letter.header(headers, dead_letter.SOURCE_OFFSET)),
            )
        )
    return refused


def _outputs(run: Run, inputs, name: str) -> list:
    """The processors' records on ``name``: those after the test's own."""
    return [r for (p, o), r in inputs[name].items() if o >= run.ends[(name, p)]]


def test_price_aggregation_emits_exactly_the_windows_of_the_valid_ticks(run: Run, inputs, letters):
    refused = _refused(run, letters["price-aggregation-processor"])["market.prices"]
    expected = []
    valid_ticks = 0
    for partition in range(PARTITIONS):
        records = sorted(
            (r for at, r in inputs["market.prices"].items() if at[0] == partition),
            key=lambda r: r.offset(),
        )
        ticks = [
            decode("market.prices", r.value())
            for r in records
            if (r.partition(), r.offset()) not in refused
        ]
        valid_ticks += len(ticks)
        windows, ingest = SlidingWindowState().process(ticks_of(ticks))
        assert ingest.too_late.size == 0
        expected += [to_message(w) for w in windows]
    assert valid_ticks == len(run.valid["market.prices"])
    outputs = [
        decode("market.analytics", r.value()) for r in _outputs(run, inputs, "market.analytics")
    ]
    key = lambda m: (m.symbol, m.window_end)  # noqa: E731
    assert len(outputs) == run.metrics["price-aggregation-processor"].produced > 0
    assert sorted(outputs, key=key) == sorted(expected, key=key)


def test_the_other_processors_commit_what_they_produced(run: Run, inputs):
    arbitrage = _outputs(run, inputs, "crosschain.arbitrage")
    assert run.metrics["crosschain-arbitrage-processor"].produced == len(arbitrage)
    alerts = read_topic(run.connection, f"{run.namespace}risk.alerts", idle_s=0.2)
    risk = [*_outputs(run, inputs, "risk.assessments"), *alerts]
    assert run.metrics[RISK].produced == len(risk) > 0
    for record in [*arbitrage, *risk]:
        decode(record.topic().removeprefix(run.namespace), record.value())


def test_the_clickhouse_sink_stores_every_valid_record_once(run: Run, inputs, letters):
    group = consumer_group("clickhouse-sink")
    refused = _refused(run, letters[group.group_id])
    with open_clickhouse(run.clickhouse_dsn) as client:
        for name in group.inputs:
            rows = client.query(
                f"SELECT _partition, _offset FROM `{run.clickhouse.table(name)}`"
            ).result_rows
            stored = {(int(p), int(o)) for p, o in rows}
            assert len(stored) == len(rows), f"{name}: a row stored twice"
            # Every record is a row or a dead letter, never both; the rows are the valid ones:
            # those the test produced and the processors' outputs.
            assert stored.isdisjoint(refused[name])
            assert stored | refused[name] == set(inputs[name]), name
            expected = len(run.valid[name]) + len(_outputs(run, inputs, name))
            assert len(stored) == expected, name
    assert run.metrics[group.group_id].produced == sum(
        len(run.valid[n]) + len(_outputs(run, inputs, n)) for n in group.inputs
    )


def test_the_vector_sink_holds_a_point_per_valid_entity(run: Run):
    sink = VectorSink(
        qdrant_factory(path=run.qdrant_path), vector_mapping(), shared_embedder(), run.namespace
    )
    with sink:
        assert sink._client is not None
        for name, collection in sink.collections().items():
            expected = {point_id(name, key_of(m)) for m in run.valid[name]}
            got = sink._client.scroll(collection, limit=10_000, with_payload=False)[0]
            assert {str(p.id) for p in got} == expected, name
