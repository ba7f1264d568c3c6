"""End-to-end latency of the price-aggregation processor under a steady input rate.

    .venv/bin/python bench/latency.py [--rate 20000] [--duration 60] [--repeats 3] [...]

Per run, in a fresh namespace (its own ``market.prices`` of 12 partitions, ``market.analytics``,
dead-letter topic and consumer groups):

* an **input** process produces the simulator's ``market.prices`` ticks at ``--rate`` msg/s for
  ``--duration`` s, each at the wall time of its event time (event time = wall time, so windows
  close in real time), with the platform's producer settings (``PRODUCER_DEFAULTS``: linger
  20 ms, unless ``--input-linger-ms``);
* the **processor** — ``TransactionalWorker`` + the ``price-aggregation-processor`` app, as
  deployed (``build_worker``) — runs in this process;
* a **reader** process consumes ``market.analytics`` with the platform's consumer settings
  (``read_committed``), noting the wall time each record arrives.

The latency of a window is measured from the input tick that closes it to its record reaching
the reader. The window state of a partition (``processing/windows.py``) emits window end ``E``
once the partition's watermark — its largest event time so far — reaches ``E + grace`` (5 s):
the closing tick of window ``E`` on partition ``p`` is the first tick produced to ``p`` with
``ts >= E + grace``. The input process notes, per symbol and per multiple of the emit interval,
when the symbol's first tick at or past it was produced (symbols map to partitions one to one:
records are keyed by symbol); a window's start is the earliest such time among the symbols of
its partition. Each ``market.analytics`` record (one per symbol and window end) is one sample.

The stages of each sample are shown on stderr: produce -> acknowledged (the input producer's
linger and the broker), -> handed to the app (the worker's consume, decode), -> committed (the
window kernel, the transaction), -> at the reader (the read_committed fetch).
Prints one summary line to stdout (medians over the repeats of each run's p50 and p99).
Percentiles are nearest-rank, :func:`ys_platform.operations.latency.percentile`; ``ys-platform
load`` measures every processor's outputs by the definition of that module (from the output's
event time plus its emit delay: here ``E + grace``, at most one partition's tick gap before the
closing tick measured here).
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing as mp
import statistics
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

# `make bench` runs `python bench/<name>.py`, which puts bench/ on sys.path: _kafka is importable.
from _kafka import (
    ADMIN_TIMEOUT_S,
    catalog_spec,
    create_topics,
    delete_namespace,
    log,
    new_namespace,
    wait_for_assignment,
)
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from ys_platform.catalog.codec import CONTENT_TYPE, decode, timestamp_ms
from ys_platform.catalog.models import MODELS
from ys_platform.clients.kafka import PRODUCER_DEFAULTS, KafkaConnection
from ys_platform.operations.latency import percentile
from ys_platform.processing.windows import DEFAULT_EMIT_INTERVAL_MS, DEFAULT_GRACE_MS
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.registry import build_processor
from ys_platform.settings import Settings
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

INPUT = "market.prices"
OUTPUT = "market.analytics"
SEED = 20_260_401
DEFAULT_RATE = 20_000.0
DEFAULT_DURATION_S = 60.0
DEFAULT_REPEATS = 3
DEFAULT_SYMBOLS = 200
DEFAULT_SOURCES = 5
TARGET_P99_MS = 250.0

STEP_MS = DEFAULT_EMIT_INTERVAL_MS
GRACE_MS = DEFAULT_GRACE_MS
# The closing tick of window end E (a multiple of the interval) is the first at E + grace: the
# input notes crossings of multiples of the interval, which E + grace is only if grace is one.
assert GRACE_MS % STEP_MS == 0, "the closing ticks are noted at multiples of the emit interval"
# The input is generated in slices of this much event time, each ahead of its due time: ~1,000
# ticks at 20k msg/s take a few ms to draw, well inside the idle time between due ticks.
SLICE_S = 0.05
# Sleep at most this long between due ticks: the pacing's granularity (at 20k msg/s a tick is
# due every 50 µs, so the loop wakes and sends the ~20 ticks that became due).
PACE_SLEEP_S = 0.001
# After the input stops the worker catches up within a batch or two (well under a second here):
# this long means it is stuck.
DRAIN_TIMEOUT_S = 30.0
# Then the reader gets this long to fetch the last commit's records (a fetch takes at most
# fetch.wait.max.ms, 500 ms).
READER_SLACK_S = 1.5
ASSIGN_TIMEOUT_S = 60.0
# The reader's poll timeout only bounds how long a poll waits when nothing arrives: a record is
# returned as soon as it is fetched.
READER_POLL_S = 0.1


# --- the processor under test -------------------------------------------------------------------


@dataclass
class Probes:
    """Wall times (epoch ms) the instrumented worker notes: when ``process`` was called for a
    partition and the partition's watermark after it, and when each loop iteration (batch and
    commit) ended."""

    calls: list[tuple[int, float, int | None]] = field(default_factory=list)
    loop_ends: list[float] = field(default_factory=list)
    emit_ms: list[tuple[int, float]] = field(default_factory=list)
    """(latest window end emitted, duration) of each ``process`` call that emitted windows:
    the window kernel's work."""
    other_ms: list[float] = field(default_factory=list)
    """... and of the calls that emitted nothing."""


def build_worker(
    connection: KafkaConnection, namespace: str, config: dict[str, Any], probes: Probes
) -> TransactionalWorker:
    """The processor as deployed (the app from the registry, the transactional worker), under
    ``namespace``, with ``config`` as ``WorkerConfig`` overrides; its ``process`` calls and loop
    iterations are noted in ``probes``. The only place that knows how the runtime is built."""
    app = build_processor(GROUP.group_id)

    def noted(process: Any) -> Any:
        def noted_process(partition: Any, slice_: Any, timestamps_ms: Any) -> Any:
            called = time.time() * 1000
            result = process(partition, slice_, timestamps_ms)
            took = time.time() * 1000 - called
            if result.outputs:
                probes.emit_ms.append((timestamp_ms(result.outputs[-1]), took))
            else:
                probes.other_ms.append(took)
            probes.calls.append((partition[1], called, app.watermark_ms(partition)))
            return result

        return noted_process

    # The hot path hands the app columns; a batch that fell back to the models, models.
    app.process = noted(app.process)  # type: ignore[method-assign]
    app.process_columns = noted(app.process_columns)  # type: ignore[attr-defined]

    def on_progress(metrics: WorkerMetrics) -> None:
        # progress_interval_s=0: called after every loop iteration, i.e. after each commit.
        probes.loop_ends.append(time.time() * 1000)

    worker_config = WorkerConfig(namespace=namespace, progress_interval_s=0.0, **config)
    return TransactionalWorker(connection, app, worker_config, on_progress)


def run_replica(
    connection: KafkaConnection,
    namespace: str,
    config: dict[str, Any],
    stop: Any,
) -> None:
    """Another replica of the processor (``--replicas``; the child process's body): the same
    worker under another ``instance_id``, sharing the group's partitions, until ``stop``."""
    worker = build_worker(connection, namespace, config, Probes())
    stopping = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), stopping.set()), daemon=True).start()
    worker.run(stopping)


# --- the input process ---------------------------------------------------------------------------


def run_input(
    connection: KafkaConnection,
    topic: str,
    rate: float,
    duration_s: float,
    symbols: int,
    sources: int,
    overrides: dict[str, Any],
    start: Any,
    out: Connection,
) -> None:
    """Produce ticks paced by their event time (the child process's body); sends a report
    through ``out`` (plain data: the classes of a spawned ``__main__`` do not unpickle here):

    * ``produced``, ``seconds``;
    * ``partition_of``: each symbol key's partition, from the delivery reports;
    * ``crossings``: ``(key, T) -> (produced, acknowledged)`` wall ms of the key's first tick
      with ``ts >= T``, for every multiple ``T`` of the emit interval;
    * ``late_ms``: p50, p99 and max of how late ticks were produced after their event time;
    * ``cpu_s``: the process's CPU time.
    """
    start.wait()
    started_ms = time.time() * 1000
    simulator = MarketSimulator(SEED, symbols=symbols, sources=sources, start_ms=int(started_ms))
    headers = [
        ("schema-version", str(MODELS[INPUT].SCHEMA_VERSION).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    producer = connection.producer(**overrides)
    partition_of: dict[bytes, int] = {}
    crossings: dict[tuple[bytes, int], tuple[float, float]] = {}
    last_step: dict[bytes, int] = {}
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    def on_crossing(key: bytes, thresholds: list[int], sent: float) -> Any:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(err.str())
                return
            acked = time.time() * 1000
            partition_of[key] = msg.partition()
            for threshold in thresholds:
                crossings[(key, threshold)] = (sent, acked)

        return delivered

    total = int(rate * duration_s)
    per_slice = max(1, int(rate * SLICE_S))
    produced = 0
    late = array("d")
    produce = producer.produce
    while produced < total:
        # Drawn while ahead of schedule: the previous slice ended at its last tick's due time.
        ticks = list(simulator.encoded_price_ticks(min(per_slice, total - produced), rate=rate))
        for key, value, ts in ticks:
            now = time.time() * 1000
            if now < ts:
                # Ahead of schedule: serve delivery reports (they time the acknowledgements,
                # so at most one wait late), then wait for the tick's time.
                producer.poll(0)
                while now < ts:
                    time.sleep(min((ts - now) / 1000, PACE_SLEEP_S))
                    now = time.time() * 1000
            late.append(now - ts)
            step = ts // STEP_MS
            previous = last_step.get(key)
            callback = on_delivery
            if previous is None or step > previous:
                # This key's first tick at or past one (or several) multiples of the interval.
                first = step if previous is None else previous + 1
                last_step[key] = step
                callback = on_crossing(key, [k * STEP_MS for k in range(first, step + 1)], now)
            while True:
                try:
                    produce(topic, value, key, headers=headers, timestamp=ts, on_delivery=callback)
                    break
                except BufferError:
                    producer.poll(0.05)
        produced += len(ticks)
    remaining = producer.flush(60)
    seconds = (time.time() * 1000 - started_ms) / 1000
    if remaining or failures:
        raise RuntimeError(f"input: {remaining} undelivered, {len(failures)} failed")
    lateness = np.percentile(np.frombuffer(late), [50, 99, 100]).tolist()
    out.send(
        {
            "produced": produced,
            "seconds": seconds,
            "partition_of": partition_of,
            "crossings": crossings,
            "late_ms": lateness,
            "cpu_s": time.process_time(),
        }
    )


# --- the reader process --------------------------------------------------------------------------


def run_reader(
    connection: KafkaConnection,
    topic: str,
    group_id: str,
    overrides: dict[str, Any],
    assigned: Any,
    stop: Any,
    out: Connection,
) -> None:
    """Read ``market.analytics`` read_committed until ``stop``; sends
    ``[(symbol key, window end ms, received wall ms), ...]`` through ``out``."""
    consumer = connection.consumer(group_id, **overrides)
    consumer.subscribe([topic], on_assign=lambda _c, _p: assigned.set())
    seen: list[tuple[bytes, int, float]] = []
    try:
        while not stop.is_set():
            record = consumer.poll(READER_POLL_S)
            if record is None:
                continue
            received = time.time() * 1000
            if record.error() is not None:
                if record.error().fatal():
                    raise RuntimeError(f"reader: {record.error().str()}")
                continue
            window = decode(OUTPUT, record.value())
            seen.append((record.key(), timestamp_ms(window), received))
    finally:
        consumer.close()
    out.send(seen)


def _lag(admin: Any, group_id: str) -> int:
    """Records of the input the group has not committed yet (its offsets are committed in the
    transactions, so 0 means every batch, and the windows it emitted, is committed)."""
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)])
    committed = listed[group_id].result(ADMIN_TIMEOUT_S).topic_partitions
    lag = 0
    consumer_ends = admin.list_offsets(
        {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in committed},
        isolation_level=IsolationLevel.READ_COMMITTED,
    )
    for tp in committed:
        end = consumer_ends[TopicPartition(tp.topic, tp.partition)].result(ADMIN_TIMEOUT_S).offset
        lag += max(end - max(tp.offset, 0), 0)
    return lag if committed else 1


def _receive(pipe: Connection, process: Any, timeout_s: float, name: str) -> Any:
    """What ``process`` sends through ``pipe``; fails early if the process died instead."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(1.0):
        if not process.is_alive():
            raise RuntimeError(f"the {name} process exited with code {process.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {name} process sent nothing in {timeout_s:.0f}s")
    return pipe.recv()


# --- one run -------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One window record's latency (ms) and its stages."""

    total: float
    acked: float
    handed: float | None
    committed: float | None
    read: float | None


def measure(
    report: dict[str, Any], seen: list[tuple[bytes, int, float]], probes: Probes
) -> list[Sample]:
    partition_of: dict[bytes, int] = report["partition_of"]
    # The closing tick of (partition, threshold): the earliest crossing among its keys.
    closing: dict[tuple[int, int], tuple[float, float]] = {}
    for (key, threshold), times in report["crossings"].items():
        slot = (partition_of[key], threshold)
        if slot not in closing or times[0] < closing[slot][0]:
            closing[slot] = times
    # Per partition, its process calls in call order (watermarks never decrease).
    called: dict[int, list[float]] = {}
    watermarks: dict[int, list[int]] = {}
    for partition, at, watermark in probes.calls:
        if watermark is not None:
            called.setdefault(partition, []).append(at)
            watermarks.setdefault(partition, []).append(watermark)
    samples = []
    for key, window_end, received in seen:
        partition = partition_of.get(key)
        times = closing.get((partition, window_end + GRACE_MS)) if partition is not None else None
        if times is None:
            continue  # a window no measured tick closed (none while the input runs)
        sent, acked = times
        handed = committed = None
        # The process call that emitted it: the partition's first whose watermark passed.
        i = bisect.bisect_left(watermarks.get(partition, []), window_end + GRACE_MS)
        if i < len(called.get(partition, [])):
            handed = called[partition][i]
            j = bisect.bisect_left(probes.loop_ends, handed)
            committed = probes.loop_ends[j] if j < len(probes.loop_ends) else None
        samples.append(
            Sample(
                total=received - sent,
                acked=acked - sent,
                handed=None if handed is None else handed - acked,
                committed=None if committed is None or handed is None else committed - handed,
                read=None if committed is None else received - committed,
            )
        )
    return samples


@dataclass
class Result:
    p50: float
    p99: float
    windows: int
    input_rate: float


def run_once(settings: Settings, namespace: str, args: argparse.Namespace, repeat: int) -> Result:
    connection = settings.kafka
    admin = connection.admin()
    context = mp.get_context("spawn")  # no fork of a process that runs librdkafka threads
    probes = Probes()
    worker_config: dict[str, Any] = {}
    if args.batch_size is not None:
        worker_config["batch_size"] = args.batch_size
    if args.poll_timeout is not None:
        worker_config["poll_timeout_s"] = args.poll_timeout
    worker = build_worker(connection, namespace, worker_config, probes)
    stop_replicas = context.Event()
    replicas = [
        context.Process(
            target=run_replica,
            args=(
                connection,
                namespace,
                {**worker_config, "instance_id": str(instance)},
                stop_replicas,
            ),
            daemon=True,
        )
        for instance in range(1, args.replicas)
    ]
    for replica in replicas:
        replica.start()
    stop_worker = threading.Event()
    failed: list[BaseException] = []

    def run_worker() -> None:
        try:
            worker.run(stop_worker)
        except BaseException as exc:  # reported by the main thread, which stops the run
            failed.append(exc)

    worker_thread = threading.Thread(target=run_worker, daemon=True)
    cpu_started = time.process_time()
    worker_thread.start()

    reader_overrides = {}
    if args.reader_fetch_wait_ms is not None:
        reader_overrides["fetch.wait.max.ms"] = args.reader_fetch_wait_ms
    assigned, stop_reader = context.Event(), context.Event()
    reader_results, reader_out = context.Pipe(duplex=False)
    reader = context.Process(
        target=run_reader,
        args=(
            connection,
            f"{namespace}{OUTPUT}",
            f"{namespace}latency-reader",
            reader_overrides,
            assigned,
            stop_reader,
            reader_out,
        ),
        daemon=True,
    )
    reader.start()
    # The input times each window's closing tick from its acknowledgement: every delivery.
    input_overrides: dict[str, Any] = {"delivery.report.only.error": False}
    if args.input_linger_ms is not None:
        input_overrides["linger.ms"] = args.input_linger_ms
    start_input = context.Event()
    input_results, input_out = context.Pipe(duplex=False)
    producer = context.Process(
        target=run_input,
        args=(
            connection,
            f"{namespace}{INPUT}",
            args.rate,
            args.duration,
            args.symbols,
            args.sources,
            input_overrides,
            start_input,
            input_out,
        ),
        daemon=True,
    )
    producer.start()
    try:
        # Everything joined before the first tick: a group join is a one-off cost, not latency.
        wait_for_assignment(admin, worker.group_id, ASSIGN_TIMEOUT_S, members=args.replicas)
        if not assigned.wait(ASSIGN_TIMEOUT_S):
            raise RuntimeError(f"the reader got no partitions in {ASSIGN_TIMEOUT_S:.0f}s")
        start_input.set()
        report: dict[str, Any] = _receive(input_results, producer, args.duration + 60, "input")
        # Drain: the windows the last ticks closed are emitted after them. The worker counts a
        # batch as consumed once its transaction committed.
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while _lag(admin, worker.group_id) and not failed:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not catch up in {DRAIN_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
        time.sleep(READER_SLACK_S)
        stop_reader.set()
        seen: list[tuple[bytes, int, float]] = _receive(reader_results, reader, 60, "reader")
    finally:
        stop_worker.set()
        stop_reader.set()
        stop_replicas.set()
        worker_thread.join(60)
        for child in (reader, producer, *replicas):
            child.join(10)
            if child.is_alive():
                child.terminate()
    # This process's CPU: the worker and its clients' threads (the input, the reader and other
    # replicas run apart).
    cpu_us = 1e6 * (time.process_time() - cpu_started) / max(worker.metrics.consumed, 1)
    if failed:
        raise RuntimeError(f"the worker stopped: {failed[0]}") from failed[0]
    metrics = worker.metrics
    samples = measure(report, seen, probes)
    if not samples:
        raise RuntimeError(f"no window measured ({len(seen)} records read)")
    totals = [s.total for s in samples]
    input_rate = report["produced"] / report["seconds"]
    late_p50, late_p99, late_max = report["late_ms"]
    log(
        f"  [{repeat + 1}/{args.repeats}] {len(samples):,} windows of {len(seen):,} records read; "
        f"input {report['produced']:,} ticks at {input_rate:,.0f} msg/s (produced after their "
        f"event time: p50 {late_p50:.1f}, p99 {late_p99:.1f}, max {late_max:.0f} ms; "
        f"{1e6 * report['cpu_s'] / report['produced']:.1f} CPU-us/tick); worker "
        f"{metrics.consumed:,} consumed, {metrics.batches:,} transactions, {cpu_us:.1f} "
        f"CPU-us/record"
    )
    batch = [1e3 * (metrics.latency_percentile(q) or 0) for q in (0.5, 0.99, 1.0)]
    log(
        f"    batch (decode to commit) p50 {batch[0]:.0f}, p99 {batch[1]:.0f}, "
        f"max {batch[2]:.0f} ms"
    )
    if probes.emit_ms:
        emits = [ms for _, ms in probes.emit_ms]
        per_end: dict[int, float] = {}
        for window_end, ms in probes.emit_ms:
            per_end[window_end] = per_end.get(window_end, 0.0) + ms
        log(
            f"    process() of a partition: emitting p50 {percentile(emits, 0.5):.1f} ms (max "
            f"{max(emits):.1f}, {len(emits)} calls), other p50 "
            f"{percentile(probes.other_ms or [0.0], 0.5):.1f} ms; emitting summed over this "
            f"worker's partitions per window end p50 {percentile(list(per_end.values()), 0.5):.0f}"
            f" ms, max {max(per_end.values()):.0f} ms"
        )
    for name in ("total", "acked", "handed", "committed", "read"):
        values = [v for s in samples if (v := getattr(s, name)) is not None]
        if values:
            log(
                f"    {STAGES[name]:<34} p50 {percentile(values, 0.5):7.1f}  p90 "
                f"{percentile(values, 0.9):7.1f}  p99 {percentile(values, 0.99):7.1f}  max "
                f"{max(values):7.1f} ms"
            )
    return Result(percentile(totals, 0.5), percentile(totals, 0.99), len(samples), input_rate)


STAGES = {
    "total": "closing tick produced -> read",
    "acked": "  produced -> acknowledged",
    "handed": "  acknowledged -> handed to the app",
    "committed": "  handed -> transaction committed",
    "read": "  committed -> read (read_committed)",
}


# --- driver --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="input msg/s")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="input s")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--symbols", type=int, default=DEFAULT_SYMBOLS)
    parser.add_argument("--sources", type=int, default=DEFAULT_SOURCES)
    parser.add_argument("--batch-size", type=int, help="WorkerConfig.batch_size override")
    parser.add_argument("--poll-timeout", type=float, help="WorkerConfig.poll_timeout_s override")
    parser.add_argument("--input-linger-ms", type=int, help="the input producer's linger.ms")
    parser.add_argument(
        "--replicas", type=int, default=1, help="processor replicas (one process each)"
    )
    parser.add_argument("--reader-fetch-wait-ms", type=int, help="the reader's fetch.wait.max.ms")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.repeats < 1 or args.replicas < 1:
        parser.error("--rate, --repeats and --replicas must be positive")
    # The first window end may come one interval after the start, and closes a grace later.
    if args.duration <= (STEP_MS + GRACE_MS) / 1000:
        parser.error(
            f"--duration must exceed {(STEP_MS + GRACE_MS) / 1000:.0f} s to close a window"
        )
    return args


def settings_text(args: argparse.Namespace) -> str:
    defaults = WorkerConfig()
    batch = args.batch_size if args.batch_size is not None else defaults.batch_size
    poll = args.poll_timeout if args.poll_timeout is not None else defaults.poll_timeout_s
    parts = [f"worker batch {batch:,}, poll {poll * 1000:.0f} ms"]
    if args.replicas > 1:
        parts.append(f"{args.replicas} replicas")
    linger = args.input_linger_ms
    default_linger = PRODUCER_DEFAULTS["linger.ms"]
    parts.append(f"input linger {f'{default_linger} (default)' if linger is None else linger} ms")
    if args.reader_fetch_wait_ms is not None:
        parts.append(f"reader fetch.wait.max.ms {args.reader_fetch_wait_ms}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    connection = settings.kafka
    admin = connection.admin()
    namespace = new_namespace()
    log(
        f"latency: namespace {namespace} on {settings.kafka_bootstrap_servers}; "
        f"{settings_text(args)}"
    )
    prefixes = [f"{namespace}r{repeat}." for repeat in range(args.repeats)]
    results: list[Result] = []
    try:
        create_topics(
            admin,
            [
                catalog_spec(name, f"{prefix}{name}")
                for prefix in prefixes
                for name in (INPUT, OUTPUT, GROUP.dead_letter_topic)
            ],
        )
        for repeat, prefix in enumerate(prefixes):
            results.append(run_once(settings, prefix, args, repeat))
    finally:
        deleted = delete_namespace(admin, namespace.rstrip("."))
        log(f"  deleted {len(deleted)} topics")
    p50 = statistics.median(r.p50 for r in results)
    p99 = statistics.median(r.p99 for r in results)
    windows = statistics.median(r.windows for r in results)
    verdict = "meets" if p99 <= TARGET_P99_MS else "above"
    print(
        f"latency: p50 {p50:,.0f} ms | p99 {p99:,.0f} ms ({verdict} the {TARGET_P99_MS:.0f} ms "
        f"target) | {windows:,.0f} windows, {args.rate:,.0f} msg/s input for "
        f"{args.duration:.0f} s, {args.symbols} symbols, {settings_text(args)}, "
        f"median of {args.repeats}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
