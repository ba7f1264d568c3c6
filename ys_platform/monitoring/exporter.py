"""The Prometheus endpoint of the lag monitor, with kafka-lag-exporter's metric names and labels.

:class:`LagCollector` is a prometheus-client custom collector: it keeps the last snapshot the
monitor handed it (it is a :class:`~ys_platform.monitoring.monitor.SnapshotListener`) and renders
it at each scrape, so a scrape never waits on Kafka and a group or partition that disappears
disappears from the endpoint at the next poll. Names and labels are kafka-lag-exporter's
(README, "Metrics"), so its Grafana dashboards and alert rules read this endpoint unchanged
(every name is a constant of :mod:`ys_platform.monitoring.names`):

- per partition, labels ``cluster_name, group, topic, partition, member_host, consumer_id,
  client_id`` (the member labels empty for an unowned partition):
  ``kafka_consumergroup_group_offset``, ``kafka_consumergroup_group_lag``,
  ``kafka_consumergroup_group_lag_seconds`` (absent while the estimate is unknown, rather than
  kafka-lag-exporter's NaN);
- per group: ``kafka_consumergroup_group_max_lag`` and ``..._max_lag_seconds`` (labels
  ``cluster_name, group, is_simple_consumer``), ``kafka_consumergroup_group_sum_lag``
  (``cluster_name, group``), ``kafka_consumergroup_group_topic_sum_lag`` (``+ topic``);
- per partition of the cluster: ``kafka_partition_latest_offset`` and
  ``kafka_partition_earliest_offset`` (``cluster_name, topic, partition``);
- ``kafka_consumergroup_poll_time_ms`` (``cluster_name``).

Beside them, this monitor's own figures: ``ys_consumergroup_status`` and
``ys_consumergroup_partition_status`` (Burrow's status as an enum: one series per status
value, 1 for the current one, as the alert rules read it),
``kafka_consumergroup_group_lag_bound_seconds`` and
``kafka_consumergroup_group_within_bound`` for the catalog's groups, and
``kafka_consumergroup_poll_timestamp_seconds`` (when the snapshot served was taken: a stale
endpoint shows).

Other collectors (cluster health, source freshness) are registered beside this one in the same
registry (:func:`build_registry`) and served by the same :func:`serve_metrics`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ys_platform.clients.kafka import LOOPBACK
from ys_platform.monitoring import names
from ys_platform.monitoring.snapshot import LagSnapshot
from ys_platform.monitoring.status import Status

PARTITION_LABELS = (
    "cluster_name",
    "group",
    "topic",
    "partition",
    "member_host",
    "consumer_id",
    "client_id",
)
_STATUSES = tuple(s.name for s in Status)


class LagCollector:
    """Renders the last :class:`LagSnapshot` as Prometheus metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: LagSnapshot | None = None

    def on_snapshot(self, snapshot: LagSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._snapshot
        if snapshot is None:  # before the first poll: nothing rather than zeros
            return
        yield from lag_metrics(snapshot)


def lag_metrics(snapshot: LagSnapshot) -> Iterator[Metric]:
    """The families of one snapshot (also what the alert publisher snapshots to system.metrics)."""
    cluster = snapshot.cluster_name

    def gauge(name: str, doc: str, labels: Iterable[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(labels))

    offset = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_OFFSET,
        "The committed offset of the group on the partition.",
        PARTITION_LABELS,
    )
    lag = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_LAG,
        "Records the group has still to read on the partition (transaction markers excluded).",
        PARTITION_LABELS,
    )
    lag_seconds = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_LAG_SECONDS,
        "Estimated age of the next record the group reads (interpolated; 0 when caught up).",
        PARTITION_LABELS,
    )
    partition_status = gauge(
        names.YS_CONSUMERGROUP_PARTITION_STATUS,
        "Burrow status of the group on the partition: 1 for the current status.",
        (*PARTITION_LABELS[:4], "status"),
    )
    max_lag = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_MAX_LAG,
        "The largest offset lag of the group's partitions.",
        ("cluster_name", "group", "is_simple_consumer"),
    )
    max_lag_seconds = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_MAX_LAG_SECONDS,
        "The largest time lag of the group's partitions.",
        ("cluster_name", "group", "is_simple_consumer"),
    )
    sum_lag = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_SUM_LAG,
        "The sum of the offset lags of the group's partitions.",
        ("cluster_name", "group"),
    )
    topic_sum_lag = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_TOPIC_SUM_LAG,
        "The sum of the offset lags of the group's partitions of one topic.",
        ("cluster_name", "group", "topic"),
    )
    group_status = gauge(
        names.YS_CONSUMERGROUP_STATUS,
        "Burrow status of the group (its worst partition's): 1 for the current status.",
        ("cluster_name", "group", "status"),
    )
    bound = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_LAG_BOUND_SECONDS,
        "The catalog's bound on the group's time lag.",
        ("cluster_name", "group"),
    )
    within = gauge(
        names.KAFKA_CONSUMERGROUP_GROUP_WITHIN_BOUND,
        "1 if the group's largest time lag is within the catalog's bound, else 0.",
        ("cluster_name", "group"),
    )

    for group in snapshot.groups:
        simple = str(group.simple).lower()
        topic_sums: dict[str, int] = {}
        for p in group.partitions:
            member = p.owner
            labels = [
                cluster,
                group.group_id,
                p.topic,
                str(p.partition),
                member.host if member else "",
                member.consumer_id if member else "",
                member.client_id if member else "",
            ]
            offset.add_metric(labels, p.committed)
            lag.add_metric(labels, p.lag)
            if p.lag_seconds is not None:
                lag_seconds.add_metric(labels, p.lag_seconds)
            for name in _STATUSES:
                partition_status.add_metric([*labels[:4], name], float(p.status.name == name))
            topic_sums[p.topic] = topic_sums.get(p.topic, 0) + p.lag
        if group.partitions:
            max_lag.add_metric([cluster, group.group_id, simple], group.max_lag)
            sum_lag.add_metric([cluster, group.group_id], group.sum_lag)
        if group.max_lag_seconds is not None:
            max_lag_seconds.add_metric([cluster, group.group_id, simple], group.max_lag_seconds)
        for topic, total in sorted(topic_sums.items()):
            topic_sum_lag.add_metric([cluster, group.group_id, topic], total)
        for name in _STATUSES:
            group_status.add_metric(
                [cluster, group.group_id, name], float(group.status.name == name)
            )
        if group.lag_bound_s is not None:
            bound.add_metric([cluster, group.group_id], group.lag_bound_s)
        if group.within_bound is not None:
            within.add_metric([cluster, group.group_id], float(group.within_bound))

    latest = gauge(
        names.KAFKA_PARTITION_LATEST_OFFSET,
        "The high watermark of the partition (the next offset written).",
        ("cluster_name", "topic", "partition"),
    )
    earliest = gauge(
        names.KAFKA_PARTITION_EARLIEST_OFFSET,
        "The earliest offset still in the partition.",
        ("cluster_name", "topic", "partition"),
    )
    for (topic, partition), offsets in sorted(snapshot.offsets.items()):
        latest.add_metric([cluster, topic, str(partition)], offsets.latest)
        earliest.add_metric([cluster, topic, str(partition)], offsets.earliest)

    poll_ms = gauge(
        names.KAFKA_CONSUMERGROUP_POLL_TIME_MS,
        "How long the last poll of the cluster took.",
        ("cluster_name",),
    )
    poll_ms.add_metric([cluster], snapshot.poll_seconds * 1000.0)
    polled_at = gauge(
        names.KAFKA_CONSUMERGROUP_POLL_TIMESTAMP_SECONDS,
        "When the served snapshot was read (Unix seconds).",
        ("cluster_name",),
    )
    polled_at.add_metric([cluster], snapshot.at)
    yield from (offset, lag, lag_seconds, partition_status, max_lag, max_lag_seconds, sum_lag)
    yield from (topic_sum_lag, group_status, bound, within, latest, earliest, poll_ms, polled_at)


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one, which carries the process
    collectors): the endpoint serves exactly the monitor's collectors."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


@dataclass
class MetricsServer:
    """The HTTP endpoint serving a registry on ``http://host:port/metrics``."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = LOOPBACK) -> MetricsServer:
    """Serve ``registry`` in a background thread; an OSError (port taken) propagates."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, port, server, thread)
