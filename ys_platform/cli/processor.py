"""``ys-platform processor run NAME``: a stream processor as a standalone service."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, log_to_stderr, print_summary, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from ys_platform.streaming.metrics import WorkerMetrics


def register(commands: argparse._SubParsersAction) -> None:
    processor = commands.add_parser("processor", help="run a stream processor in this process")
    sub = processor.add_subparsers(dest="processor_command", required=True)
    run = sub.add_parser("run", help="consume, process and produce exactly once")
    run.add_argument("name", help="e.g. price-aggregation (or its group id)")
    run.add_argument(
        "--instance",
        default=None,
        help="stable replica id (transactional id, static membership); default: a standalone "
        "id no Dagster-run replica uses",
    )
    run.add_argument(
        "--batch-size", type=int, default=None, help="records per transaction (default 20,000)"
    )
    run.add_argument("--namespace", default="", help="prefix of topics and group (isolation)")
    run.add_argument("--max-idle", type=float, default=None, help="stop after S idle seconds")
    run.add_argument(
        "--no-restart",
        action="store_true",
        help="exit when the processor stops on an error (default: start it again after a "
        "backoff, 15 s doubling up to 10 min)",
    )
    run.set_defaults(func=with_settings(_run))


def _run(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.processors.registry import resolve
    from ys_platform.processors.runner import run_processor
    from ys_platform.streaming.worker import WorkerConfig

    try:
        group_id = resolve(args.name)
    except KeyError as exc:
        raise CommandError(str(exc.args[0]), ExitCode.CONFIG) from None
    log_to_stderr()
    config = WorkerConfig(
        batch_size=args.batch_size or WorkerConfig.batch_size,
        instance_id=args.instance,
        namespace=args.namespace,
    )

    def report(metrics: WorkerMetrics) -> None:
        print_summary({"group": metrics.group_id, **metrics.summary()}, progress=True)

    metrics = run_processor(
        settings,
        group_id,
        config=config,
        max_idle_s=args.max_idle,
        on_progress=report,
        restart=not args.no_restart,
    )
    print_summary({"group": metrics.group_id, **metrics.summary()})
    return ExitCode.OK
