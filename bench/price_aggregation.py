"""Throughput of the price-aggregation processor against two peers on one pre-filled topic.

    .venv/bin/python bench/price_aggregation.py [--ticks N] [--repeats R] [...]

One topic (12 partitions, like ``market.prices``) is filled once with the simulator's encoded
ticks; then, ``--repeats`` times and alternating, three consumers read it from offset 0, each
under a fresh consumer group (all of it, except quixstreams: see ``QUIX_TICKS``):

* **ours** — :class:`TransactionalWorker` running the ``price-aggregation-processor`` exactly as
  deployed: exactly-once (transactions, offsets committed inside them), pydantic decoding, the
  vectorised window kernel (TWAP, VWAP, volatility, consolidated price), ``market.analytics``.
* **quixstreams** — the same TWAP job written idiomatically with quixstreams: an Application
  with ``processing_guarantee="exactly-once"``, the JSON deserializer, a one-minute window per
  symbol key with a TWAP ``reduce``, ``.final()``, ``to_topic``. By default a *hopping* window of
  60 s every 5 s, which is our job's semantics (windows ending every 5 s); ``--quix-window
  sliding`` uses its per-millisecond ``sliding_window`` instead (see bench/README.md: its cost
  grows with the ticks per symbol in a window, so it is measured on a time budget).
* **raw** — a plain confluent-kafka Consumer, ``consume(num_messages=...)`` and ``json.loads`` of
  every value, no commits, nothing else: what a Python consumer of this topic costs at least
  (``--raw-decoder orjson`` for a faster decoder than the standard library's).

Each rate is messages over the time from the first record in hand to the last one done (ours: its
transaction committed), so group join and client start-up, which are one-off, do not count.
Prints one summary line to stdout (medians); everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# `make bench` runs `python bench/<name>.py`, which puts bench/ on sys.path: _kafka is importable.
from _kafka import (
    LARGE_FETCHES,
    catalog_spec,
    create_topics,
    delete_namespace,
    log,
    new_namespace,
    prefill,
)

from ys_platform.catalog.topics import ConsumerGroupSpec
from ys_platform.processors.price_aggregation import GROUP
from ys_platform.processors.registry import build_processor
from ys_platform.settings import Settings
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

INPUT = "market.prices"
OUTPUT = "market.analytics"

DEFAULT_TICKS = 1_000_000
DEFAULT_REPEATS = 3
DEFAULT_SYMBOLS = 200
DEFAULT_SOURCES = 5  # the simulator's default five: three CEXs, an oracle, a DEX on every chain
DEFAULT_EVENT_RATE = 10_000.0
"""Ticks per second of *event time* (the simulator's default): 1M ticks span 100 s, so every
symbol crosses a few one-minute windows and the stream emits ~20 window ends x 200 symbols."""
SEED = 20_260_101

WINDOW_MS = 60_000  # one-minute windows, as the processor's
STEP_MS = 5_000  # a window ends every 5 s of event time, as the processor's emit interval

QUIX_TICKS = 200_000
"""Records one quixstreams run reads (of the topic's first records): at its ~5k msg/s on this
machine all 1M would take over 3 minutes a run, 10 with the repeats. 200k ticks are 20 s of event
time, so windows close and emit (one ends every 5 s) as they do over the whole topic; a full
1M run measured the same rate (bench/README.md). ``--quix-ticks 0`` reads everything."""

RAW_BATCH = WorkerConfig.batch_size
"""Messages per consume call of the raw peer: WorkerConfig's default, so both read alike."""

QUIX_SLIDING_BUDGET_S = 60.0
"""Wall-time cap of one quixstreams sliding-window run: its cost per tick grows with the ticks
of the symbol in the last minute (hundreds to tens of thousands here), so 1M ticks would take
hours; the rate over the first minute is the *fastest* it gets (windows still filling)."""

QUIX_PROGRESS_EVERY = 100_000
"""Log quixstreams' running rate this often, to show whether a time-capped run is steady."""

# How long a peer may go without a record before the run is declared stuck.
STALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Run:
    """One measured pass: ``count`` records from the first in hand to the last done."""

    peer: str
    count: int
    seconds: float
    total_seconds: float
    """From starting the client to the last record done (start-up and group join included)."""
    cpu_seconds: float
    """Process CPU time (all threads, librdkafka's included) over ``total_seconds``: unlike
    wall time, barely inflated when other work shares the cores, so it shows our own cost."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_message(self) -> float:
        return 1e6 * self.cpu_seconds / self.count if self.count else 0.0


class _Stalled(RuntimeError):
    pass


# --- ours ------------------------------------------------------------------------------------


def ours_group(repeat: int) -> ConsumerGroupSpec:
    """The processor's group under a per-repeat id, so each repeat starts with no committed
    offsets. (Deleting the group between repeats does not work: the worker's consumer is a static
    member, which stays in the group for the session timeout after it closes.)"""
    return replace(GROUP, group_id=f"{GROUP.group_id}.run{repeat}")


def run_ours(
    settings: Settings,
    namespace: str,
    repeat: int,
    n: int,
    batch_size: int,
    profile: cProfile.Profile | None,
) -> Run:
    connection = settings.kafka
    app = build_processor(GROUP.group_id)
    app.group = ours_group(repeat)  # the logic as deployed, under this repeat's group id
    marks: dict[str, float] = {}

    def timed(process: Callable[..., Any]) -> Callable[..., Any]:
        def timed_process(*args: Any, **kwargs: Any) -> Any:
            # The first call is the first batch in hand (consumed and decoded): t0.
            marks.setdefault("first", time.perf_counter())
            return process(*args, **kwargs)

        return timed_process

    # Columns on the hot path, models for a batch that fell back: time whichever comes first.
    app.process = timed(app.process)  # type: ignore[method-assign]
    app.process_columns = timed(app.process_columns)  # type: ignore[attr-defined]
    stop = threading.Event()

    def on_progress(metrics: WorkerMetrics) -> None:
        # Called after every loop iteration (progress_interval_s=0), right after the commit.
        now = time.perf_counter()
        if metrics.consumed >= n and "last" not in marks:
            marks["last"], marks["cpu"] = now, time.process_time()
            stop.set()
        elif now - marks.get("seen", now) > STALL_TIMEOUT_S:
            stop.set()
        if metrics.consumed != marks.get("count"):
            marks["count"], marks["seen"] = metrics.consumed, now

    config = WorkerConfig(batch_size=batch_size, namespace=namespace, progress_interval_s=0.0)
    worker = TransactionalWorker(connection, app, config, on_progress)
    started, cpu_started = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    try:
        metrics = worker.run(stop)
    finally:
        if profile is not None:
            profile.disable()
    if "last" not in marks:
        raise _Stalled(f"ours: stopped at {metrics.consumed:,} of {n:,} records")
    log(
        f"  ours: {metrics.consumed:,} consumed, {metrics.produced:,} produced, "
        f"{metrics.dead_lettered:,} dead-lettered, {metrics.batches:,} transactions, "
        f"batch p50 {1e3 * (metrics.latency_percentile(0.5) or 0):.0f} ms"
    )
    return Run(
        "ours",
        n,
        marks["last"] - marks["first"],
        marks["last"] - started,
        marks["cpu"] - cpu_started,
    )


# --- quixstreams -----------------------------------------------------------------------------


def _tick(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> list[float]:
    """(event time, price): the record timestamp is the tick's event time (fill_topic sets it)."""
    return [timestamp, value["price"]]


def _twap_init(tick: list[float]) -> dict[str, float]:
    return {"first_ms": tick[0], "last_ms": tick[0], "last": tick[1], "area": 0.0, "ticks": 1}


def _twap_reduce(acc: dict[str, float], tick: list[float]) -> dict[str, float]:
    # Each price holds until the next tick: integrate price x time between ticks.
    return {
        "first_ms": acc["first_ms"],
        "last_ms": tick[0],
        "last": tick[1],
        "area": acc["area"] + acc["last"] * (tick[0] - acc["last_ms"]),
        "ticks": acc["ticks"] + 1,
    }


def _twap_result(window: dict[str, Any]) -> dict[str, Any]:
    acc = window["value"]
    held = acc["last_ms"] - acc["first_ms"]
    return {
        "window_start": window["start"],
        "window_end": window["end"],
        "twap": acc["area"] / held if held > 0 else acc["last"],
        "ticks": acc["ticks"],
    }


def run_quix(
    settings: Settings, namespace: str, repeat: int, n: int, window: str, budget_s: float | None
) -> Run:
    from quixstreams import Application

    input_topic = f"{namespace}{INPUT}"
    marks: dict[str, float] = {}
    count = 0
    with tempfile.TemporaryDirectory(prefix="quix-bench-") as state_dir:
        app = Application(
            broker_address=settings.kafka_bootstrap_servers,
            consumer_group=f"{namespace}quix.{repeat}",
            auto_offset_reset="earliest",
            processing_guarantee="exactly-once",
            state_dir=state_dir,
            loglevel="WARNING",
        )
        sdf = app.dataframe(app.topic(input_topic, value_deserializer="json"))

        def counted(value: Any) -> None:
            nonlocal count
            now = time.perf_counter()
            if count == 0:
                marks["first"] = now
            count += 1
            if not count % QUIX_PROGRESS_EVERY:
                log(f"    quixstreams: {count:,} at {count / (now - marks['first']):,.0f} msg/s")
            if count == n or (budget_s is not None and now - marks["first"] >= budget_s):
                marks["last"], marks["cpu"] = now, time.process_time()
                app.stop()

        sdf = sdf.update(counted).apply(_tick, metadata=True)
        if window == "sliding":
            windowed = sdf.sliding_window(duration_ms=WINDOW_MS)
        else:
            windowed = sdf.hopping_window(duration_ms=WINDOW_MS, step_ms=STEP_MS)
        sdf = windowed.reduce(reducer=_twap_reduce, initializer=_twap_init).final()
        sdf = sdf.apply(_twap_result)
        sdf.to_topic(app.topic(f"{namespace}quix.analytics", value_serializer="json"))

        watchdog = _Watchdog(lambda: count, app.stop)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            app.run()
        finally:
            watchdog.cancel()
    if "last" not in marks:
        raise _Stalled(f"quixstreams: stopped at {count:,} of {n:,} records")
    done = count if count < n else n
    log(f"  quixstreams ({window}): {done:,} consumed")
    return Run(
        "quix",
        done,
        marks["last"] - marks["first"],
        marks["last"] - started,
        marks["cpu"] - cpu_started,
    )


class _Watchdog:
    """Calls ``stop`` when ``progress()`` has not moved for STALL_TIMEOUT_S (a stuck peer)."""

    def __init__(self, progress: Callable[[], int], stop: Callable[[], None]) -> None:
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(progress, stop), daemon=True)
        self._thread.start()

    def _watch(self, progress: Callable[[], int], stop: Callable[[], None]) -> None:
        last = progress()
        # Checking every few seconds keeps this thread from competing for the GIL.
        while not self._cancelled.wait(5.0):
            now = progress()
            if now == last and (stalled := getattr(self, "_since", None)) is not None:
                if time.monotonic() - stalled > STALL_TIMEOUT_S:
                    stop()
                    return
            elif now == last:
                self._since = time.monotonic()
            else:
                last, self._since = now, None

    def cancel(self) -> None:
        self._cancelled.set()
        self._thread.join()


# --- raw -------------------------------------------------------------------------------------


def run_raw(
    settings: Settings, namespace: str, repeat: int, n: int, decoder: str, fetch: str = "large"
) -> Run:
    connection = settings.kafka
    started, cpu_started = time.perf_counter(), time.process_time()
    # read_committed like the worker; fetch sizes: the ceiling's, or (``--raw-fetch platform``)
    # the platform's own consumer defaults, to see what those cost.
    overrides = LARGE_FETCHES if fetch == "large" else {}
    consumer = connection.consumer(f"{namespace}raw.{repeat}", **overrides)
    consumer.subscribe([f"{namespace}{INPUT}"])
    loads: Callable[[bytes], Any] = json.loads
    if decoder == "orjson":
        import orjson  # installed with quixstreams (the bench extra), which decodes with it

        loads = orjson.loads
    count = 0
    first = last = cpu = 0.0
    last_seen = time.monotonic()
    try:
        while count < n:
            batch = consumer.consume(num_messages=RAW_BATCH, timeout=0.2)
            if not batch:
                if time.monotonic() - last_seen > STALL_TIMEOUT_S:
                    raise _Stalled(f"raw: stopped at {count:,} of {n:,} records")
                continue
            if not count:
                first = time.perf_counter()
            for record in batch:
                if record.error() is None:
                    loads(record.value())
                    count += 1
            last, cpu = time.perf_counter(), time.process_time()
            last_seen = time.monotonic()
    finally:
        consumer.close()
    return Run("raw", count, last - first, last - started, cpu - cpu_started)


# --- driver ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=DEFAULT_TICKS, help="records in the topic")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs per peer")
    parser.add_argument("--symbols", type=int, default=DEFAULT_SYMBOLS)
    parser.add_argument("--sources", type=int, default=DEFAULT_SOURCES)
    parser.add_argument(
        "--event-rate", type=float, default=DEFAULT_EVENT_RATE, help="ticks per event-time second"
    )
    parser.add_argument(
        "--batch-size", type=int, default=WorkerConfig.batch_size, help="our WorkerConfig"
    )
    parser.add_argument("--quix-window", choices=("hopping", "sliding"), default="hopping")
    parser.add_argument(
        "--quix-ticks", type=int, default=QUIX_TICKS, help="records per quixstreams run (0: all)"
    )
    parser.add_argument(
        "--raw-decoder",
        choices=("json", "orjson"),
        default="orjson",
        help="the raw peer's decoder: orjson (the fastest here: the ceiling) or stdlib json",
    )
    parser.add_argument(
        "--raw-fetch",
        choices=("large", "platform"),
        default="large",
        help="the raw peer's fetch settings: large fetches (the ceiling) or the platform's",
    )
    parser.add_argument(
        "--peers", default="ours,quix,raw", help="comma-separated subset of ours,quix,raw"
    )
    parser.add_argument(
        "--profile", type=Path, help="cProfile our runs into this file (top entries to stderr)"
    )
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := set(args.peers) - {"ours", "quix", "raw"}:
        parser.error(f"unknown peers {sorted(unknown)}")
    if args.ticks < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--ticks, --repeats and --batch-size must be positive")
    return args


def summary(args: argparse.Namespace, runs: dict[str, list[Run]]) -> str:
    rate = {peer: statistics.median(r.rate for r in rs) for peer, rs in runs.items()}
    parts = []
    if "ours" in rate:
        parts.append(f"ours {rate['ours']:,.0f} msg/s")
    if "quix" in rate:
        ratio = f" ({rate['ours'] / rate['quix']:.1f}x)" if "ours" in rate else ""
        parts.append(f"quixstreams {rate['quix']:,.0f} msg/s{ratio}")
    if "raw" in rate:
        ratio = f" ({rate['ours'] / rate['raw']:.0%})" if "ours" in rate else ""
        decoder = " (orjson)" if args.raw_decoder == "orjson" else ""
        parts.append(f"raw decode{decoder} {rate['raw']:,.0f} msg/s{ratio}")
    setup = (
        f"{args.ticks:,} ticks, {args.symbols} symbols, {args.sources} sources, "
        f"median of {args.repeats}"
    )
    if "quix" in runs:
        window = "sliding 60s" if args.quix_window == "sliding" else "hopping 60s/5s"
        quix_n = statistics.median(r.count for r in runs["quix"])
        setup += f" (quixstreams: {window} window, first {quix_n:,.0f} ticks)"
    return f"price_aggregation: {' | '.join(parts)} | {setup}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    connection = settings.kafka
    admin = connection.admin()
    namespace = new_namespace()
    log(f"price_aggregation: namespace {namespace} on {settings.kafka_bootstrap_servers}")
    profile = cProfile.Profile() if args.profile else None
    runs: dict[str, list[Run]] = {peer: [] for peer in args.peers}
    try:
        # Partitions as the catalog's (12 for market.prices): the parallelism the topic offers.
        dead_letters = [ours_group(r).dead_letter_topic for r in range(args.repeats)]
        create_topics(
            admin,
            [catalog_spec(name, f"{namespace}{name}") for name in (INPUT, OUTPUT)]
            + [
                catalog_spec(GROUP.dead_letter_topic, f"{namespace}{name}") for name in dead_letters
            ],
        )
        # Event time starts now: records stamped in the past could fall out of retention.
        simulator = MarketSimulator(
            SEED, symbols=args.symbols, sources=args.sources, start_ms=time.time_ns() // 10**6
        )
        encoded = simulator.encoded_price_ticks(args.ticks, rate=args.event_rate)
        prefill(connection, f"{namespace}{INPUT}", encoded)
        for repeat in range(args.repeats):
            for peer in args.peers:
                if peer == "ours":
                    run = run_ours(
                        settings, namespace, repeat, args.ticks, args.batch_size, profile
                    )
                elif peer == "quix":
                    budget = QUIX_SLIDING_BUDGET_S if args.quix_window == "sliding" else None
                    quix_n = min(args.quix_ticks or args.ticks, args.ticks)
                    run = run_quix(settings, namespace, repeat, quix_n, args.quix_window, budget)
                else:
                    run = run_raw(
                        settings, namespace, repeat, args.ticks, args.raw_decoder, args.raw_fetch
                    )
                runs[peer].append(run)
                log(
                    f"  [{repeat + 1}/{args.repeats}] {peer}: {run.rate:,.0f} msg/s "
                    f"({run.count:,} in {run.seconds:.2f}s; {run.total_seconds:.2f}s with "
                    f"start-up; {run.cpu_us_per_message:.1f} CPU-us/msg)"
                )
    finally:
        deleted = delete_namespace(admin, namespace.rstrip("."))
        log(f"  deleted {len(deleted)} topics")
    if profile is not None:
        profile.dump_stats(args.profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
        log(out.getvalue())
    print(summary(args, runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
