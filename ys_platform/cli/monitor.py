"""``ys-platform monitor``: the lag monitor's Prometheus endpoint, in the foreground.

Serves ``http://127.0.0.1:YS_MONITOR_PORT/metrics`` (9308, kafka-lag-exporter's port) and polls
the cluster every ``YS_MONITOR_INTERVAL_S``. SIGINT (Ctrl-C) or SIGTERM stops it cleanly: exit 0,
no traceback. ``ys-platform dev`` runs it beside Dagster.
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, log_to_stderr, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ys_platform.monitoring.alerts import HealthWatch
    from ys_platform.monitoring.monitor import Monitor

# Burrow's default (ys_platform.monitoring.status.DEFAULT_WINDOW), spelled here so the command
# line parses without loading the monitor.
DEFAULT_WINDOW = 10


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
    monitor.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"polls in a group's status window: STOP/STALL show after about this many "
        f"intervals (default: {DEFAULT_WINDOW}, Burrow's)",
    )
    monitor.add_argument(
        "--namespace",
        default="",
        help="the workers' --namespace: the catalog's groups are <namespace><group> (alerts "
        "still go to the cluster's system.alerts and system.metrics)",
    )
    monitor.set_defaults(func=with_settings(_monitor))


@dataclass
class MonitorParts:
    """What ``ys-platform monitor`` runs: the poll loop, the registry it serves, the watch."""

    monitor: Monitor
    registry: CollectorRegistry
    watch: HealthWatch

    def close(self) -> None:
        """Flush the alerts' producer, then close the lag reader (a normal stop's last step)."""
        try:
            self.watch.close()
        finally:
            self.monitor.close()


def build_monitor(
    settings: Settings, *, namespace: str = "", window: int = DEFAULT_WINDOW
) -> MonitorParts:
    """The monitor and the registry its endpoint serves: the one place the parts are wired.

    Each poll, in order: the lag collector keeps the snapshot; the health watch checks the
    cluster, Connect, PostgreSQL and the CDC sources' freshness, and publishes state changes
    (its own and the catalog groups' lag status, :func:`~ys_platform.monitoring.alerts.
    lag_conditions`) to ``system.alerts`` and snapshots to ``system.metrics``. The registry
    serves the lag, health and freshness gauges, all labelled ``YS_MONITOR_CLUSTER_NAME``.
    """
    from ys_platform.monitoring.alerts import AlertPublisher, HealthWatch
    from ys_platform.monitoring.exporter import LagCollector, build_registry
    from ys_platform.monitoring.monitor import Monitor
    from ys_platform.security.principals import MONITOR_NAME

    settings = settings.as_principal(f"{namespace}{MONITOR_NAME}")
    cluster = settings.monitor_cluster_name
    lag = LagCollector()
    publisher = AlertPublisher(settings.kafka.producer(), cluster_name=cluster)
    watch = HealthWatch(settings, publisher, cluster_name=cluster)
    monitor = Monitor.from_settings(settings, [lag, watch], window=window, namespace=namespace)
    return MonitorParts(monitor, build_registry([lag, *watch.collectors()]), watch)


def _monitor(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.monitoring.exporter import serve_metrics
    from ys_platform.streaming.signals import stop_on_signals

    if args.port is not None or args.interval is not None:
        overrides = {"monitor_port": args.port, "monitor_interval_s": args.interval}
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if not 0 < settings.monitor_interval_s <= 3600:
        raise CommandError("--interval must be above 0 and at most 3600 s", ExitCode.CONFIG)
    if args.window < 2:
        raise CommandError("--window must be at least 2 polls", ExitCode.CONFIG)
    log_to_stderr()
    check_reachable(settings.kafka)
    parts = build_monitor(settings, namespace=args.namespace, window=args.window)
    try:
        server = serve_metrics(parts.registry, settings.monitor_port)
    except OSError as exc:
        parts.close()
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
            parts.monitor.run(stop)
    finally:
        server.close()
        parts.close()
    print("lag monitor stopped", file=sys.stderr)
    return ExitCode.OK
