"""The lag monitor: offset and time lag per group and partition, Burrow-style status, Prometheus.

Dagster-free, and no I/O at import. The layers, each its own module:

- :mod:`~ys_platform.monitoring.lag` — reads the cluster (admin API, a read_committed probe for
  transaction markers) into an :class:`OffsetReading`; the allow/deny :class:`GroupFilter`;
- :mod:`~ys_platform.monitoring.timelag` — time lag by interpolation (pure);
- :mod:`~ys_platform.monitoring.status` — Burrow's rules (pure);
- :mod:`~ys_platform.monitoring.snapshot` — :class:`LagTracker` folds readings into the
  :class:`LagSnapshot` every consumer of the monitor reads (pure);
- :mod:`~ys_platform.monitoring.monitor` — the :class:`Monitor` loop;
- :mod:`~ys_platform.monitoring.exporter` — :class:`LagCollector`, the registry and the endpoint.

How to add to the monitor (cluster health, source freshness, alerts to ``system.alerts``):

1. To act on each poll's lag, implement :class:`SnapshotListener` — one method,
   ``on_snapshot(snapshot: LagSnapshot) -> None`` — and register it with
   ``Monitor.add_listener`` (or pass it to ``Monitor.from_settings``). Listeners run in the
   monitor's thread, in order, after each successful poll; one that raises is logged and the
   others still run. Keep them short: the next poll waits for them.
2. To serve gauges, write a prometheus-client custom collector (``collect()`` yielding metric
   families) and pass it to :func:`build_registry` beside the :class:`LagCollector`; the one
   endpoint (:func:`serve_metrics`, ``YS_MONITOR_PORT``) serves them all. A collector that needs
   its own I/O (the admin API for cluster health) should do it in ``on_snapshot`` — on the
   monitor's interval — and render the result at scrape time, as ``LagCollector`` does.

``ys_platform.cli.monitor`` wires these together (``build_monitor``), so a new part registers
in one place there.
"""

from ys_platform.monitoring.exporter import (
    LagCollector,
    MetricsServer,
    build_registry,
    serve_metrics,
)
from ys_platform.monitoring.lag import GroupFilter, LagReader, LagReadError, OffsetReading
from ys_platform.monitoring.monitor import Monitor, OffsetSource, SnapshotListener
from ys_platform.monitoring.snapshot import GroupLag, LagSnapshot, LagTracker, PartitionLag
from ys_platform.monitoring.status import Status
from ys_platform.monitoring.timelag import OffsetTimeTable, time_lag

__all__ = [
    "GroupFilter",
    "GroupLag",
    "LagCollector",
    "LagReadError",
    "LagReader",
    "LagSnapshot",
    "LagTracker",
    "MetricsServer",
    "Monitor",
    "OffsetReading",
    "OffsetSource",
    "OffsetTimeTable",
    "PartitionLag",
    "SnapshotListener",
    "Status",
    "build_registry",
    "serve_metrics",
    "time_lag",
]
