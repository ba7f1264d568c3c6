"""Each worker serves its figures on a Prometheus endpoint while it runs: a processor and a sink,
side by side in one process (each on its own registry and port), over known input with invalid
records; scraped over HTTP, announced in $YS_HOME/run/metrics for file_sd and by `ys-platform
local status`, gone (file and port) once they stop."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kafka_helpers import create_namespaced_topics, eth_ticks, read_topic, recent_minute
from prometheus_client.parser import text_string_to_metric_families
from test_clickhouse_sink import GROUP as SINK_GROUP
from test_clickhouse_sink import PARTITIONS as SINK_PARTITIONS
from test_clickhouse_sink import POISON as SINK_POISON
from test_clickhouse_sink import create_sink_topics, produce, sink_input

from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.clickhouse import client_factory
from ys_platform.processors.registry import build_processor
from ys_platform.sinks.clickhouse import ClickHouseSink, load_mapping
from ys_platform.streaming.member import GroupMember
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

pytestmark = pytest.mark.timeout(180)

PROCESSOR = consumer_group("price-aggregation-processor")
TICKS = 600
PROCESSOR_BATCH = 100
INVALID = [b"{not json", b'{"symbol": "ETH/USD"}', b"[]"]
REPLICA = "metrics-test"
CLI = Path(sys.executable).parent / "ys-platform"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, worker: GroupMember, **extra: str) -> float:
    labels = {"worker": worker.group.group_id, "group": worker.group_id, "replica": REPLICA}
    return samples[(name, frozenset({**labels, **extra}.items()))]


def _lags(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (labels["topic"], labels["partition"]): value
        for (name, frozen), value in samples.items()
        if name == "ys_worker_consumer_lag"
        for labels in [dict(frozen)]
    }


def _registry_file(registry: Path, worker: GroupMember) -> Path:
    return registry / f"{worker.group_id}-{REPLICA}.json"


def _wait_for_port(path: Path, failures: list[BaseException]) -> int:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert not failures, failures
        assert time.monotonic() < deadline, f"{path} not written within 30 s"
        time.sleep(0.05)
    (entry,) = json.loads(path.read_text())
    (target,) = entry["targets"]
    return int(target.rpartition(":")[2])


def _settled(port: int, worker: GroupMember, consumed: int, failures: list) -> Samples:
    """The scrape once every record is committed and the lag read as 0 (a partition that never
    had a record has no position yet, so no lag)."""
    deadline = time.monotonic() + 90
    while True:
        assert not failures, failures  # a worker that failed has closed its endpoint
        samples = _scrape(port)
        done = _value(samples, "ys_worker_records_consumed_total", worker) == consumed
        lags = _lags(samples)
        if done and lags and not any(lags.values()):
            # Counters move before the histograms in the same batch: scrape again, now at rest.
            return _scrape(port)
        got = _value(samples, "ys_worker_records_consumed_total", worker)
        assert time.monotonic() < deadline, f"consumed {got} of {consumed}, lag {lags}"
        time.sleep(0.2)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_processor_and_sink_serve_exact_counts_then_close(local_stack, tmp_path):
    # One namespace each: market.prices is an input of both.
    namespace, sink_namespace = (f"t{uuid.uuid4().hex[:8]}." for _ in range(2))
    connection = local_stack.kafka
    registry = local_stack.worker_metrics_dir

    # The processor's input: ticks and, among them, records that do not decode.
    create_namespaced_topics(
        connection.admin(),
        namespace,
        ["market.prices", "market.analytics", PROCESSOR.dead_letter_topic],
        1,
    )
    producer = connection.producer()
    for i, tick in enumerate(eth_ticks(TICKS, recent_minute(), 3000.0)):
        key, value, headers = encode(tick)
        producer.produce(
            f"{namespace}market.prices", value, key, headers=headers, timestamp=timestamp_ms(tick)
        )
        if i % 200 == 100:
            for bad in INVALID:
                producer.produce(f"{namespace}market.prices", bad, b"ETH/USD")
    assert producer.flush(30) == 0
    processor_invalid = len(INVALID) * 3
    processor_input = TICKS + processor_invalid

    # The sink's input: six topics, invalid records in each.
    create_sink_topics(connection, sink_namespace)
    sink_records = sink_input(17, prices=2_000, others=150)
    produce(connection, sink_namespace, sink_records)
    sink_invalid = len(SINK_POISON) * len(SINK_GROUP.inputs)

    processor = TransactionalWorker(
        connection,
        build_processor(PROCESSOR.group_id),
        WorkerConfig(
            batch_size=PROCESSOR_BATCH,
            namespace=namespace,
            instance_id=REPLICA,
            progress_interval_s=0.2,
        ),
    )
    sink = SinkWorker(
        connection,
        ClickHouseSink(
            client_factory(f"chdb://{tmp_path / 'clickhouse'}"), load_mapping(), sink_namespace
        ),
        SinkConfig(
            batch_size=1_000,
            flush_interval_s=0.5,
            namespace=sink_namespace,
            instance_id=REPLICA,
            progress_interval_s=0.2,
        ),
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def run(worker: GroupMember) -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in (processor, sink)]
    for thread in threads:
        thread.start()
    try:
        processor_port = _wait_for_port(_registry_file(registry, processor), failures)
        sink_port = _wait_for_port(_registry_file(registry, sink), failures)
        assert processor_port != sink_port

        # The file_sd files, as Prometheus reads them.
        for worker, port, kind in (
            (processor, processor_port, "processor"),
            (sink, sink_port, "sink"),
        ):
            assert json.loads(_registry_file(registry, worker).read_text()) == [
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {
                        "worker": worker.group.group_id,
                        "group": worker.group_id,
                        "replica": REPLICA,
                        "kind": kind,
                    },
                }
            ]

        p = _settled(processor_port, processor, processor_input, failures)
        s = _settled(sink_port, sink, len(sink_records), failures)

        # `local status` lists both endpoints as serving.
        status = subprocess.run(
            [str(CLI), "local", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
            check=False,
        )
        listed = {
            line.split()[0]: line.split()
            for line in status.stdout.split("\n\n", 1)[1].splitlines()[1:]
        }
        assert listed[processor.group_id][1:] == [
            "processor",
            REPLICA,
            f"http://127.0.0.1:{processor_port}/metrics",
            "serving",
        ], status.stdout
        assert listed[sink.group_id][1:] == [
            "sink",
            REPLICA,
            f"http://127.0.0.1:{sink_port}/metrics",
            "serving",
        ], status.stdout
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures

    # The processor: every record consumed, the invalid ones dead-lettered, the outputs counted
    # as the output topic holds them; a histogram observation per committed transaction.
    outputs = read_topic(connection, f"{namespace}market.analytics", idle_s=1.0)
    dead = read_topic(connection, f"{namespace}{PROCESSOR.dead_letter_topic}", idle_s=1.0)
    assert len(dead) == processor_invalid
    assert outputs
    assert _value(p, "ys_worker_records_consumed_total", processor) == processor_input
    assert _value(p, "ys_worker_records_dead_lettered_total", processor) == processor_invalid
    assert _value(p, "ys_worker_records_produced_total", processor) == len(outputs)
    assert _value(p, "ys_worker_transactions_aborted_total", processor) == 0
    batches = processor.metrics.batches
    assert batches >= math.ceil(processor_input / PROCESSOR_BATCH)
    assert _value(p, "ys_worker_batch_seconds_count", processor) == batches
    assert _value(p, "ys_worker_batch_seconds_bucket", processor, le="+Inf") == batches
    assert _value(p, "ys_worker_batch_seconds_sum", processor) > 0
    assert _value(p, "ys_worker_commit_seconds_count", processor) == batches
    assert _value(p, "ys_worker_commit_seconds_sum", processor) > 0
    assert _value(p, "ys_worker_commit_seconds_sum", processor) < _value(
        p, "ys_worker_batch_seconds_sum", processor
    )
    assert _value(p, "ys_worker_restore_seconds_count", processor) == 1  # one assignment
    assert _lags(p) == {(f"{namespace}market.prices", "0"): 0}

    # The sink: rows written are the valid records; one flush, one store commit.
    assert _value(s, "ys_worker_records_consumed_total", sink) == len(sink_records)
    assert _value(s, "ys_worker_records_dead_lettered_total", sink) == sink_invalid
    assert _value(s, "ys_worker_records_produced_total", sink) == len(sink_records) - sink_invalid
    flushes = sink.metrics.batches
    assert flushes >= math.ceil(len(sink_records) / 1_000)
    assert _value(s, "ys_worker_batch_seconds_count", sink) == flushes
    assert _value(s, "ys_worker_commit_seconds_count", sink) == flushes
    assert _value(s, "ys_worker_restore_seconds_count", sink) == 1
    assert _value(s, "ys_worker_transactions_aborted_total", sink) == 0
    owned = {
        (f"{sink_namespace}{t}", str(partition))
        for t in SINK_GROUP.inputs
        for partition in range(SINK_PARTITIONS)
    }
    prices = {(f"{sink_namespace}market.prices", str(partition)) for partition in range(3)}
    assert prices <= set(_lags(s)) <= owned

    # Stopped: the files are gone and the ports closed.
    for worker, port in ((processor, processor_port), (sink, sink_port)):
        assert not _registry_file(registry, worker).exists()
        assert _refused(port)


def test_a_processor_in_a_dagster_run_serves_its_metrics(local_stack):
    import dagster as dg

    from ys_platform.assets.processors import processor_assets, processor_jobs
    from ys_platform.assets.workers import worker_job_name
    from ys_platform.clients.kafka import produce_messages
    from ys_platform.resources.kafka import KafkaResource

    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(),
        namespace,
        ["market.prices", "market.analytics", PROCESSOR.dead_letter_topic],
        1,
    )
    ticks = eth_ticks(120, recent_minute(), 3000.0)
    with kafka.get_producer() as producer:
        produce_messages(producer, ticks, namespace=namespace)
    # The keep-alive run is replica 0 (ProcessorRunConfig.instance_id).
    path = local_stack.worker_metrics_dir / f"{namespace}{PROCESSOR.group_id}-0.json"
    seen: list[tuple[int, float]] = []
    failures: list[BaseException] = []

    def scrape_until_consumed() -> None:
        try:
            port = _wait_for_port(path, failures)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                samples = _scrape(port)
                consumed = next(
                    v for (n, _), v in samples.items() if n == "ys_worker_records_consumed_total"
                )
                if consumed == len(ticks):
                    seen.append((port, consumed))
                    return
                time.sleep(0.1)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    scraper = threading.Thread(target=scrape_until_consumed)
    scraper.start()
    defs = dg.Definitions(assets=processor_assets, jobs=processor_jobs, resources={"kafka": kafka})
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def(worker_job_name(PROCESSOR.group_id)).execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "processors__price_aggregation_processor": {
                        "config": {"namespace": namespace, "max_idle_s": 3.0, "batch_size": 50}
                    }
                }
            },
        )
    scraper.join(30)
    assert run.success
    assert not failures, failures
    ((port, consumed),) = seen
    assert consumed == len(ticks)
    assert not path.exists()
    assert _refused(port)
