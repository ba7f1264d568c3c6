"""Throughput of the exactly-once ClickHouse sink against the plain Arrow path into the same engine.

    .venv/bin/python bench/clickhouse_sink.py [--ticks N] [--repeats R] [--batch-size B]

One ``market.prices`` topic (12 partitions, as in the catalog) is filled once with the
simulator's encoded ticks; then, ``--repeats`` times and alternating, two consumers read all of
it into a chDB database (one path, in a temporary directory), each under a fresh consumer group
and into freshly created tables:

* **sink** — :class:`SinkWorker` + :class:`ClickHouseSink` as deployed: batches of
  ``--batch-size`` records, decoded and validated per partition in one call into columns
  (``catalog/columnar.py``), one insert per partition with its de-duplication token,
  BEFORE/AFTER progress rows, offsets committed: exactly once, bad records dead-lettered.
* **plain** — what a Python user would write for the fastest path from Kafka into ClickHouse:
  a consumer with large fetches, each batch's values joined as newline-delimited JSON and parsed
  by pyarrow's C++ JSON reader with an explicit schema straight into an Arrow table, one
  ``insert_arrow`` per batch into a MergeTree of the same columns, engine and order (without
  the Kafka coordinates it does not keep): at-least-once, no validation.

Each rate is rows over the time from the first record in hand to the last insert done (group
join and client start-up are one-off and not counted). Prints one line to stdout (medians);
everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj

# `make bench` runs `python bench/<name>.py`, which puts bench/ on sys.path: _kafka is importable.
from _kafka import (
    LARGE_FETCHES,
    create_catalog_topics,
    delete_namespace,
    log,
    new_namespace,
    prefill,
)
from confluent_kafka import KafkaError

from ys_platform.catalog.topics import consumer_group
from ys_platform.clients.clickhouse import client_factory, open_clickhouse
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.settings import load_settings
from ys_platform.sinks.clickhouse import ClickHouseSink, ClickHouseSinkMapping
from ys_platform.sources.simulator import MarketSimulator
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

TOPIC = "market.prices"
TABLE = "market_data"
GROUP = consumer_group("clickhouse-sink")
SEED = 11
# Idle seconds after which a run is over: the topic is pre-filled, so any pause this long means
# everything was read (well above a consume round trip and a flush).
IDLE_S = 3.0


class _TimedWorker(SinkWorker):
    """The sink worker, noting when the first record arrived and when the last flush ended."""

    first: float | None = None
    last: float | None = None

    def _take(self, slices, now):  # type: ignore[no-untyped-def]
        if self.first is None:
            self.first = time.perf_counter()
        super()._take(slices, now)

    def _flush(self) -> None:
        had = self._buffered
        super()._flush()
        if had:
            self.last = time.perf_counter()


def _fresh_tables(dsn: str, prefix: str) -> None:
    """Drop what an earlier repeat made: ``SYNC`` also removes the de-duplication log, which
    would otherwise recognise the same ranges' tokens and store nothing."""
    with open_clickhouse(dsn) as client:
        for name in (TABLE, "_ys_sink_offsets"):
            client.command(f"DROP TABLE IF EXISTS `{prefix}{name}` SYNC")


def run_sink(
    connection: KafkaConnection, namespace: str, dsn: str, batch_size: int, run: int
) -> tuple[int, float]:
    # A run-specific suffix of the group, through the sink's namespace: fresh group, and fresh
    # tables under the same prefix, so every repeat starts from nothing.
    mapping = ClickHouseSinkMapping(topics={TOPIC: TABLE}, batch_size=batch_size)
    sink = ClickHouseSink(client_factory(dsn), mapping, namespace)
    _fresh_tables(dsn, sink.table_prefix)
    config = SinkConfig(batch_size=batch_size, flush_interval_s=5.0, namespace=namespace)
    worker = _TimedWorker(connection, sink, config)
    # Only the one topic, under a fresh group per repeat.
    worker.group = replace(GROUP, group_id=f"{GROUP.group_id}-bench{run}", inputs=(TOPIC,))
    metrics = worker.run(threading.Event(), max_idle_s=IDLE_S)
    assert worker.first is not None and worker.last is not None
    return metrics.produced, worker.last - worker.first


# The plain path's schema, written by hand as a user would (no catalog code in the peer).
PLAIN_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("price", pa.float64()),
        ("volume", pa.float64()),
        ("source", pa.string()),
        ("chain", pa.string()),
        ("venue", pa.string()),
        ("reserve_base", pa.float64()),
        ("reserve_quote", pa.float64()),
        ("liquidity_usd", pa.float64()),
        ("ts", pa.timestamp("ms", tz="UTC")),
    ]
)
PLAIN_DDL = """CREATE TABLE `{table}` (
    symbol LowCardinality(String), base LowCardinality(String), quote LowCardinality(String),
    price Float64, volume Nullable(Float64), source LowCardinality(String),
    chain LowCardinality(String), venue LowCardinality(String),
    reserve_base Nullable(Float64), reserve_quote Nullable(Float64),
    liquidity_usd Nullable(Float64), ts DateTime64(3, 'UTC')
) ENGINE = MergeTree PARTITION BY toDate(ts) ORDER BY (symbol, ts)"""


def run_plain(
    connection: KafkaConnection, namespace: str, dsn: str, batch_size: int, run: int
) -> tuple[int, float]:
    table_name = f"plain{run}_{TABLE}"
    consumer = connection.consumer(
        f"{namespace}plain-bench{run}", enable_partition_eof=False, **LARGE_FETCHES
    )
    consumer.subscribe([f"{namespace}{TOPIC}"])
    parse = pj.ParseOptions(explicit_schema=PLAIN_SCHEMA, unexpected_field_behavior="ignore")
    rows = 0
    first = last = None
    with open_clickhouse(dsn) as client:
        client.command(f"DROP TABLE IF EXISTS `{table_name}` SYNC")
        client.command(PLAIN_DDL.format(table=table_name))
        idle_since = time.monotonic()
        pending: list[bytes] = []
        while True:
            batch = consumer.consume(num_messages=10_000, timeout=0.2)
            values = [r.value() for r in batch if r.error() is None or _fatal(r.error())]
            if values and first is None:
                first = time.perf_counter()
            pending += values
            quiet = not values and time.monotonic() - idle_since > IDLE_S
            if values:
                idle_since = time.monotonic()
            if pending and (len(pending) >= batch_size or not values):
                table = pj.read_json(io.BytesIO(b"\n".join(pending)), parse_options=parse)
                client.insert_arrow(table_name, table)
                rows += table.num_rows
                pending = []
                last = time.perf_counter()
            elif quiet:
                break
    consumer.close()
    assert first is not None and last is not None
    return rows, last - first


def _fatal(err: KafkaError) -> bool:
    if err.fatal():
        raise RuntimeError(err.str())
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100_000)
    args = parser.parse_args()

    settings = load_settings()
    connection = settings.kafka
    admin = connection.admin()
    namespace = new_namespace()
    log(f"namespace {namespace}: {args.ticks:,} ticks into {TOPIC}")
    create_catalog_topics(admin, namespace, [TOPIC, GROUP.dead_letter_topic])
    try:
        sim = MarketSimulator(SEED, symbols=40, start_ms=time.time_ns() // 1_000_000 - 3_600_000)
        prefill(connection, f"{namespace}{TOPIC}", sim.encoded_price_ticks(args.ticks))
        with tempfile.TemporaryDirectory(prefix="ys-bench-ch-") as home:
            dsn = f"chdb://{Path(home) / 'clickhouse'}"
            sink_rates, plain_rates = [], []
            for run in range(args.repeats):
                rows, seconds = run_sink(connection, namespace, dsn, args.batch_size, run)
                assert rows == args.ticks, f"sink stored {rows} of {args.ticks}"
                sink_rates.append(rows / seconds)
                log(f"  run {run}: sink   {rows / seconds:>10,.0f} rows/s ({seconds:.1f}s)")
                rows, seconds = run_plain(connection, namespace, dsn, args.batch_size, run)
                assert rows == args.ticks, f"plain stored {rows} of {args.ticks}"
                plain_rates.append(rows / seconds)
                log(f"  run {run}: plain  {rows / seconds:>10,.0f} rows/s ({seconds:.1f}s)")
    finally:
        delete_namespace(admin, namespace.rstrip("."))
    sink_rate, plain_rate = statistics.median(sink_rates), statistics.median(plain_rates)
    print(
        f"clickhouse_sink: {args.ticks:,} market.prices rows, batch {args.batch_size:,}: "
        f"exactly-once validated sink {sink_rate:,.0f} rows/s | plain Arrow path (pyarrow JSON "
        f"reader, at-least-once, no validation) {plain_rate:,.0f} rows/s | ratio "
        f"{sink_rate / plain_rate:.0%} (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
