"""``python -m ys_platform.sinks.runtime clickhouse ...``: a sink in this process.

The loop itself is :mod:`ys_platform.streaming.sink_worker`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.sink_worker import SinkConfig, SinkWorker, WorkerStopped, run_sink

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ys_platform.sinks.runtime", description="Run a sink in this process."
    )
    parser.add_argument("sink", choices=["clickhouse"], help="which sink")
    parser.add_argument("--namespace", default="", help="prefix of topics, group and tables")
    parser.add_argument("--max-idle", type=float, default=None, help="exit after S idle seconds")
    parser.add_argument("--dsn", default=None, help="ClickHouse DSN (default: from settings)")
    parser.add_argument("--mapping", default=None, help="mapping file (default: connectors/)")
    parser.add_argument("--batch-size", type=int, default=None, help="records per flush")
    parser.add_argument("--instance", default=None, help="stable replica id (static membership)")
    parser.add_argument("--flush-interval", type=float, default=None, help="seconds per flush")
    parser.add_argument(
        "--share-every",
        type=float,
        default=30.0,
        help="chDB only: release the path after a flush once held this many seconds, so other "
        "processes (Dagster assets) can read it; 0 holds it for good",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ys_platform.sinks.runtime clickhouse ...``; prints a JSON summary."""
    from ys_platform.clients.clickhouse import client_factory, is_exclusive
    from ys_platform.settings import SettingsError, load_settings
    from ys_platform.sinks.clickhouse import (
        MAPPING_FILE,
        ClickHouseSink,
        SinkConfigError,
        SinkRangeError,
        SinkTableError,
        load_mapping,
    )

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = load_settings()
        mapping = load_mapping(args.mapping or settings.connectors_dir / MAPPING_FILE)
    except (SettingsError, SinkConfigError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    dsn = args.dsn or settings.clickhouse_dsn
    sink = ClickHouseSink(
        client_factory(dsn, settings.clickhouse_password),
        mapping,
        args.namespace,
        share_every_s=(args.share_every or None) if is_exclusive(dsn) else None,
    )
    config = replace(
        SinkConfig(
            batch_size=mapping.batch_size, flush_interval_s=mapping.flush_interval_ms / 1000
        ),
        namespace=args.namespace,
        instance_id=args.instance,
    )
    if args.batch_size is not None:
        config = replace(config, batch_size=args.batch_size)
    if args.flush_interval is not None:
        config = replace(config, flush_interval_s=args.flush_interval)

    def report(metrics: WorkerMetrics) -> None:
        print(json.dumps({"group": metrics.group_id, **metrics.summary()}), file=sys.stderr)

    worker = SinkWorker(settings.kafka, sink, config, report)
    try:
        metrics = run_sink(worker, max_idle_s=args.max_idle)
    except (WorkerStopped, SinkRangeError, SinkTableError) as exc:
        print(f"{worker.group_id} stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    summary = {
        "group": metrics.group_id,
        **metrics.summary(),
        "inserts": sink.inserts,
        "replayed_batches": sink.replayed_batches,
        "seeks": worker.seeks,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
