"""``ys-platform monitor``: the lag monitor's Prometheus endpoint, in the foreground.

Serves ``http://127.0.0.1:YS_MONITOR_PORT/metrics`` (9308, kafka-lag-exporter's port) and polls
the cluster every ``YS_MONITOR_INTERVAL_S``. SIGINT (Ctrl-C) or SIGTERM stops it cleanly: exit 0,
no traceback. ``ys-platform dev`` runs it beside Dagster.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, log_to_stderr, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ys_platform.monitoring.monitor import Monitor


def register(commands: argparse._SubParsersAction) -> None:
    monitor = commands.add_parser(
        "monitor", help="serve consumer-group lag (offsets, seconds, status) for Prometheus"
    )
    monitor.add_argument(
        "--port", type=int, default=None, help="port on 127.0.0.1 (default: YS_MONITOR_PORT)"
    )
    monitor.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between polls (default: YS_MONITOR_INTERVAL_S)",
    )
    monitor.set_defaults(func=with_settings(_monitor))


def build_monitor(settings: Settings) -> tuple[Monitor, CollectorRegistry]:
    """The monitor and the registry its endpoint serves: the one place the parts are wired.

    Cluster health, source freshness and alert publishing register here, beside the lag
    collector (see ``ys_platform.monitoring``'s docstring for the seam).
    """
    from ys_platform.monitoring.exporter import LagCollector, build_registry
    from ys_platform.monitoring.monitor import Monitor

    lag = LagCollector()
    monitor = Monitor.from_settings(settings, [lag])
    return monitor, build_registry([lag])


def _monitor(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.monitoring.exporter import serve_metrics
    from ys_platform.streaming.signals import stop_on_signals

    if args.port is not None or args.interval is not None:
        overrides = {"monitor_port": args.port, "monitor_interval_s": args.interval}
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if not 0 < settings.monitor_interval_s <= 3600:
        raise CommandError("--interval must be above 0 and at most 3600 s", ExitCode.CONFIG)
    log_to_stderr()
    check_reachable(settings.kafka)
    monitor, registry = build_monitor(settings)
    try:
        server = serve_metrics(registry, settings.monitor_port)
    except OSError as exc:
        monitor.close()
        raise CommandError(
            f"cannot serve metrics on 127.0.0.1:{settings.monitor_port}: {exc.strerror}; "
            "set YS_MONITOR_PORT (or --port) to a free port"
        ) from exc
    print(
        f"lag monitor: {server.url}, polling every {settings.monitor_interval_s:g} s "
        "(Ctrl-C stops it)",
        file=sys.stderr,
    )
    stop = threading.Event()
    try:
        with stop_on_signals(stop, "monitor"):
            monitor.run(stop)
    finally:
        server.close()
        monitor.close()
    print("lag monitor stopped", file=sys.stderr)
    return ExitCode.OK
