"""``ys-platform sink run clickhouse``: the exactly-once ClickHouse sink as a standalone service.

SIGTERM/SIGINT finish the batch in hand, then exit; the final summary is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

from ys_platform.cli.core import ExitCode, log_to_stderr, print_summary, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from ys_platform.sinks.clickhouse import ClickHouseSink
    from ys_platform.streaming.metrics import WorkerMetrics
    from ys_platform.streaming.sink_worker import SinkWorker


def register(commands: argparse._SubParsersAction) -> None:
    sink = commands.add_parser("sink", help="run a sink (ClickHouse) in this process")
    sub = sink.add_subparsers(dest="sink_command", required=True)
    run = sub.add_parser("run", help="consume topics into the store exactly once")
    run.add_argument("sink", choices=["clickhouse"], help="which sink")
    run.add_argument("--namespace", default="", help="prefix of topics, group and tables")
    run.add_argument("--max-idle", type=float, default=None, help="exit after S idle seconds")
    run.add_argument("--dsn", default=None, help="ClickHouse DSN (default: from settings)")
    run.add_argument("--mapping", default=None, help="mapping file (default: the shipped one)")
    run.add_argument(
        "--batch-size", type=int, default=None, help="records per flush (default: the mapping's)"
    )
    run.add_argument(
        "--flush-interval",
        type=float,
        default=None,
        help="seconds between flushes (default: the mapping's)",
    )
    run.add_argument(
        "--instance",
        default=None,
        help="stable replica id (static membership); default: a standalone id no Dagster-run "
        "replica uses",
    )
    run.add_argument(
        "--no-restart",
        action="store_true",
        help="exit when the sink stops on an error (default: start it again after a backoff, "
        "15 s doubling up to 10 min)",
    )
    run.set_defaults(func=with_settings(_run))


def _run(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.streaming.signals import stop_on_signals
    from ys_platform.streaming.supervisor import supervise

    log_to_stderr()
    stop = threading.Event()
    running: list[tuple[SinkWorker, ClickHouseSink]] = []

    def run_once() -> WorkerMetrics:
        running[:] = [_clickhouse_worker(args, settings)]  # new clients and store each time
        worker, _ = running[0]
        return worker.run(stop, max_idle_s=args.max_idle)

    with stop_on_signals(stop, "clickhouse-sink"):
        metrics = supervise(run_once, "clickhouse-sink", stop, restart=not args.no_restart)
    worker, sink = running[0]
    print_summary(
        {
            "group": metrics.group_id,
            **metrics.summary(),
            "inserts": sink.inserts,
            "replayed_batches": sink.replayed_batches,
            "reader_turns": sink.reader_turns,
            "seeks": worker.seeks,
        }
    )
    return ExitCode.OK


def _clickhouse_worker(
    args: argparse.Namespace, settings: Settings
) -> tuple[SinkWorker, ClickHouseSink]:
    """The ClickHouse sink and its worker from the options; the mapping's batching by default."""
    from ys_platform.clients.clickhouse import client_factory, waiting_readers
    from ys_platform.sinks.clickhouse import MAPPING_FILE, ClickHouseSink, load_mapping
    from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker

    mapping = load_mapping(args.mapping or settings.connectors_dir / MAPPING_FILE)
    dsn = args.dsn or settings.clickhouse_dsn
    sink = ClickHouseSink(
        client_factory(dsn, settings.clickhouse_password),
        mapping,
        args.namespace,
        # chDB: other processes that wait for the path get it between two flushes.
        readers=waiting_readers(dsn),
    )
    config = SinkConfig(
        batch_size=args.batch_size if args.batch_size is not None else mapping.batch_size,
        flush_interval_s=(
            args.flush_interval
            if args.flush_interval is not None
            else mapping.flush_interval_ms / 1000
        ),
        namespace=args.namespace,
        instance_id=args.instance,
    )

    def report(metrics: WorkerMetrics) -> None:
        print_summary({"group": metrics.group_id, **metrics.summary()}, progress=True)

    return SinkWorker(settings.kafka, sink, config, report), sink
