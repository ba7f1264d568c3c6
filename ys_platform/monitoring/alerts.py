"""Alerts inside the platform: state changes to ``system.alerts``, snapshots to ``system.metrics``.

Each poll of the monitor yields a set of *conditions* — a component that is not healthy, a CDC
source that went silent — named by a stable key. :class:`AlertTracker` turns the sequence of
those sets into records: a condition seen for the first time is *raised* once, however many polls
it lasts; when it is gone it is *resolved* once. Raise and resolve of one episode share an
``alert_id`` (the key and the time it was raised), so a consumer of ``system.alerts`` pairs them
and drops a re-sent copy; ``labels["state"]`` says which of the two a record is.

:class:`AlertPublisher` feeds the tracker and produces its records, plus a snapshot of every
gauge (the same families Prometheus scrapes) to ``system.metrics`` at most every
``snapshot_every_s``. A record that cannot be delivered (the cluster is down: likely the very
alert) is kept and sent with the next poll's, so nothing raised is lost.

The tracker keeps its state in memory: a monitor that restarts raises a condition that is still
there once more, under a new ``alert_id``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import Producer
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ys_platform.catalog.models import SystemAlert, SystemMetric
from ys_platform.clients.kafka import DeliveryError, produce_messages
from ys_platform.monitoring import names
from ys_platform.monitoring.exporter import lag_metrics
from ys_platform.monitoring.freshness import (
    SILENT_AFTER_INTERVALS,
    CdcSource,
    FreshnessCollector,
    FreshnessReport,
    cdc_sources,
    check_freshness,
    freshness_metrics,
)
from ys_platform.monitoring.health import (
    DEFAULT_CLUSTER_NAME,
    HealthCollector,
    HealthReport,
    HealthScope,
    Kind,
    check_health,
    health_metrics,
)
from ys_platform.monitoring.snapshot import LagSnapshot
from ys_platform.monitoring.status import Status
from ys_platform.settings import Settings

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["raised", "resolved"]

SOURCE = "ys-monitor"

# Catalog drift and a group's describe error need a look, not a page; everything else that
# is down stops data from flowing.
_SEVERITY: Mapping[Kind, Severity] = {"topic": "warning", "group": "warning"}

# A minute between snapshots: the Prometheus endpoint carries the fine-grained series; the
# topic is for consumers inside the platform (Dagster, ClickHouse) that want the trend.
SNAPSHOT_EVERY_S = 60.0


@dataclass(frozen=True)
class Condition:
    """Something wrong right now; ``key`` names it across polls (its message may change)."""

    key: str
    severity: Severity
    message: str
    labels: Mapping[str, str] = field(default_factory=dict)


def health_conditions(report: HealthReport) -> list[Condition]:
    """One condition per component of the report that is not healthy."""
    return [
        Condition(
            key=f"health:{line.name}",
            severity=_SEVERITY.get(line.kind, "critical"),
            message=f"{line.name}: {line.detail}",
            labels={"component": line.name, "kind": line.kind},
        )
        for line in report.failures()
    ]


def freshness_conditions(report: FreshnessReport) -> list[Condition]:
    """A condition per silent CDC source; one when the CDC topics cannot be read at all."""
    if report.error is not None:
        return [Condition("freshness", "warning", report.error, {"kind": "freshness"})]
    conditions = []
    for beat in report.heartbeats:
        if not beat.silent:
            continue
        since = (
            f"no Debezium heartbeat for {beat.age_s:.0f} s"
            if beat.age_s is not None
            else "no Debezium heartbeat yet"
        )
        conditions.append(
            Condition(
                key=f"cdc-silent:{beat.connector}",
                severity="critical",
                message=f"CDC source {beat.connector} is silent: {since} (more than "
                f"{SILENT_AFTER_INTERVALS} x its {beat.interval_s:.0f} s interval, on "
                f"{beat.topic}). Its database may be down or unreachable.",
                labels={"connector": beat.connector, "kind": "cdc-silent"},
            )
        )
    return conditions


# Burrow's statuses that mean a catalog group does not keep up. WARN (lag growing while the group
# commits) is a trend, not an outage: the lag-seconds bound calls it out once it matters.
_STATUS_SEVERITY: Mapping[Status, Severity] = {
    Status.STOP: "critical",
    Status.STALL: "critical",
    Status.REWIND: "warning",
}
_STATUS_MEANING: Mapping[Status, str] = {
    Status.STOP: "no commit for longer than the status window while records wait, and no member "
    "owns the partitions (its worker is not running)",
    Status.STALL: "members own the partitions but the committed offset has not moved over the "
    "status window while records wait",
    Status.REWIND: "its committed offset went back (an offsets reset or a replay)",
}


def lag_conditions(snapshot: LagSnapshot) -> list[Condition]:
    """The catalog groups' lag as conditions: a STOP, STALL or REWIND status, and a time lag
    over the group's ``lag_bound_s``.

    Only catalog groups (those with a bound) alert. Every other group the monitor admits — a
    ``<group>.dlq-replay`` group, which commits once per replay and then sits behind its
    dead-letter topic as new dead letters arrive (STOP by Burrow's rules), a test's or an
    operator's tool — is served as metrics and never raised.
    """
    conditions = []
    for group in snapshot.groups:
        if group.lag_bound_s is None:
            continue
        labels = {"group": group.group_id, "cluster_name": snapshot.cluster_name}
        severity = _STATUS_SEVERITY.get(group.status)
        if severity is not None:
            worst = [p for p in group.partitions if p.status == group.status]
            where = ", ".join(f"{p.topic}[{p.partition}]" for p in worst[:3])
            more = f", +{len(worst) - 3} more" if len(worst) > 3 else ""
            conditions.append(
                Condition(
                    key=f"group-status:{group.group_id}:{group.status.name}",
                    severity=severity,
                    message=f"consumer group {group.group_id} is {group.status.name}: "
                    f"{_STATUS_MEANING[group.status]}; {group.sum_lag} records behind "
                    f"({where}{more})",
                    labels={**labels, "kind": "group-status", "status": group.status.name},
                )
            )
        if group.within_bound is False:
            assert group.max_lag_seconds is not None  # within_bound is None without it
            conditions.append(
                Condition(
                    key=f"group-lag:{group.group_id}",
                    severity="warning",
                    message=f"consumer group {group.group_id} is {group.max_lag_seconds:.0f} s "
                    f"behind its inputs (bound {group.lag_bound_s:g} s), "
                    f"{group.sum_lag} records",
                    labels={**labels, "kind": "group-lag"},
                )
            )
    return conditions


# The lag families a system.metrics snapshot carries: one series per group. The per-partition
# ones (hundreds of series on a busy cluster) stay on the Prometheus endpoint.
SNAPSHOT_LAG_FAMILIES = frozenset(
    {
        names.KAFKA_CONSUMERGROUP_GROUP_MAX_LAG,
        names.KAFKA_CONSUMERGROUP_GROUP_MAX_LAG_SECONDS,
        names.KAFKA_CONSUMERGROUP_GROUP_SUM_LAG,
        names.YS_CONSUMERGROUP_STATUS,
        names.KAFKA_CONSUMERGROUP_GROUP_WITHIN_BOUND,
    }
)


def lag_snapshot_families(snapshot: LagSnapshot) -> list[Metric]:
    return [f for f in lag_metrics(snapshot) if f.name in SNAPSHOT_LAG_FAMILIES]


@dataclass(frozen=True)
class ActiveAlert:
    condition: Condition
    alert_id: str
    raised_at: float


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


class AlertTracker:
    """The state machine: conditions in, raise and resolve records out, each exactly once."""

    def __init__(self, source: str = SOURCE) -> None:
        self.source = source
        self._active: dict[str, ActiveAlert] = {}

    @property
    def active(self) -> Mapping[str, ActiveAlert]:
        return dict(self._active)

    def update(self, conditions: Iterable[Condition], now: float) -> list[SystemAlert]:
        """The records for this poll: raises of new conditions, resolves of those gone."""
        current: dict[str, Condition] = {}
        for condition in conditions:
            current.setdefault(condition.key, condition)
        records = []
        for key, condition in current.items():
            if key in self._active:
                continue
            alert_id = f"{_ID_UNSAFE.sub('-', key)}@{int(now * 1000)}"
            self._active[key] = ActiveAlert(condition, alert_id, now)
            records.append(self._record(condition, alert_id, "raised", condition.message, now))
        for key in [k for k in self._active if k not in current]:
            active = self._active.pop(key)
            message = f"Resolved after {now - active.raised_at:.0f} s: {active.condition.message}"
            records.append(
                self._record(active.condition, active.alert_id, "resolved", message, now)
            )
        return records

    def _record(
        self, condition: Condition, alert_id: str, state: AlertState, message: str, now: float
    ) -> SystemAlert:
        return SystemAlert(
            alert_id=alert_id,
            source=self.source,
            # A resolve keeps its raise's severity, so a consumer filtering on it sees both.
            severity=condition.severity,
            message=message,
            labels={**condition.labels, "condition": condition.key, "state": state},
            ts=datetime.fromtimestamp(now, UTC),
        )


def metric_records(families: Iterable[Metric], now: float) -> list[SystemMetric]:
    """Every sample of ``families`` as a ``system.metrics`` record (non-finite values skipped:
    the catalog model refuses NaN, and an absent figure is not a sample)."""
    stamp = datetime.fromtimestamp(now, UTC)
    return [
        SystemMetric(name=sample.name, value=sample.value, labels=dict(sample.labels), ts=stamp)
        for family in families
        for sample in family.samples
        if math.isfinite(sample.value)
    ]


@dataclass(frozen=True)
class Published:
    alerts: tuple[SystemAlert, ...]
    metrics: int
    """How many system.metrics records this poll sent (0 between snapshots)."""
    pending: int = 0
    """Records kept for the next poll because the cluster did not take them."""


class AlertPublisher:
    """Feeds each poll's reports to an :class:`AlertTracker` and produces what it says.

    The monitor loop calls :meth:`observe` once per poll (a listener of the lag monitor); the
    lag status (``extra_families`` / ``extra_conditions``) joins the same two topics.
    """

    def __init__(
        self,
        producer: Producer,
        *,
        tracker: AlertTracker | None = None,
        snapshot_every_s: float = SNAPSHOT_EVERY_S,
        namespace: str = "",
        flush_timeout_s: float = 10.0,
        cluster_name: str = DEFAULT_CLUSTER_NAME,
    ) -> None:
        self.producer = producer
        self.cluster_name = cluster_name
        self.tracker = tracker or AlertTracker()
        self.snapshot_every_s = snapshot_every_s
        self.namespace = namespace
        self.flush_timeout_s = flush_timeout_s
        self._last_snapshot: float | None = None
        self._pending: list[SystemAlert | SystemMetric] = []

    def observe(
        self,
        health: HealthReport | None,
        freshness: FreshnessReport | None,
        *,
        now: float | None = None,
        extra_conditions: Sequence[Condition] = (),
        extra_families: Sequence[Metric] = (),
    ) -> Published:
        now = time.time() if now is None else now
        conditions = list(extra_conditions)
        families: list[Metric] = list(extra_families)
        if health is not None:
            conditions += health_conditions(health)
            families += health_metrics(health, self.cluster_name)
        if freshness is not None:
            conditions += freshness_conditions(freshness)
            families += freshness_metrics(freshness, self.cluster_name)
        alerts = self.tracker.update(conditions, now)
        metrics: list[SystemMetric] = []
        due = self._last_snapshot is None or now - self._last_snapshot >= self.snapshot_every_s
        if due:
            metrics = metric_records(families, now)
            self._last_snapshot = now
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.labels["state"], alert.alert_id, alert.message)
        batch = [*self._pending, *alerts, *metrics]
        if not batch:
            return Published((), 0)
        try:
            produce_messages(
                self.producer, batch, namespace=self.namespace, flush_timeout_s=self.flush_timeout_s
            )
        except DeliveryError as exc:
            # Alerts are kept for the next poll; a missed snapshot is not (the next one comes).
            self._pending = [r for r in batch if isinstance(r, SystemAlert)]
            log.warning("system.alerts/system.metrics not delivered, retried next poll: %s", exc)
            return Published(tuple(alerts), 0, pending=len(self._pending))
        self._pending = []
        return Published(tuple(alerts), len(metrics))

    def close(self) -> None:
        """Send what is still pending (alerts a failed delivery kept) and flush the producer:
        the monitor's last act on a normal stop. What the cluster does not take in
        ``flush_timeout_s`` is logged, not raised (the process is stopping either way)."""
        if self._pending:
            try:
                produce_messages(
                    self.producer,
                    self._pending,
                    namespace=self.namespace,
                    flush_timeout_s=self.flush_timeout_s,
                )
            except DeliveryError as exc:
                log.warning("%d alert(s) not delivered at stop: %s", len(self._pending), exc)
            self._pending = []
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining:
            log.warning(
                "%d system.alerts/system.metrics record(s) not delivered at stop", remaining
            )


# A monitor beside `make dev` leaves the embedded stores out: its probe would open chDB and Qdrant
# between the sinks' flushes and hold them up. `ys-platform health` checks them. The groups are
# left out too: the monitor's own lag snapshot carries them (lag_conditions), read once a poll.
MONITOR_SCOPE = HealthScope(groups=(), stores=False)


class HealthWatch:
    """One poll step of the monitor for health and freshness: check, keep, publish.

    A listener of the lag monitor's loop (:meth:`on_snapshot`), or called directly
    (:meth:`poll`, with the lag status as ``extra_conditions`` / ``extra_families``); its
    :meth:`collectors` join the monitor's Prometheus registry and serve the last poll's figures.
    """

    def __init__(
        self,
        settings: Settings,
        publisher: AlertPublisher | None = None,
        *,
        scope: HealthScope = MONITOR_SCOPE,
        sources: Sequence[CdcSource] | None = None,
        cluster_name: str = DEFAULT_CLUSTER_NAME,
    ) -> None:
        from ys_platform.connectors import connector_files

        self.settings = settings
        self.publisher = publisher
        self.scope = scope
        self.cluster_name = cluster_name
        self.sources = (
            list(sources)
            if sources is not None
            else cdc_sources(connector_files(settings.connectors_dir))
        )
        self.health: HealthReport | None = None
        self.freshness: FreshnessReport | None = None

    def on_snapshot(self, snapshot: LagSnapshot) -> None:
        """The lag monitor's listener hook: one health and freshness poll per lag poll, with
        the catalog groups' lag status as conditions (:func:`lag_conditions`) and their group
        figures in the system.metrics snapshot."""
        self.poll(
            extra_conditions=lag_conditions(snapshot),
            extra_families=lag_snapshot_families(snapshot),
        )

    def poll(
        self,
        *,
        extra_conditions: Sequence[Condition] = (),
        extra_families: Sequence[Metric] = (),
    ) -> Published | None:
        """Check both, keep them for the collectors, publish; None without a publisher."""
        self.health = check_health(self.settings, self.scope)
        self.freshness = check_freshness(self.settings.kafka, self.sources)
        if self.publisher is None:
            return None
        return self.publisher.observe(
            self.health,
            self.freshness,
            extra_conditions=extra_conditions,
            extra_families=extra_families,
        )

    def collectors(self) -> list[Collector]:
        return [
            HealthCollector(lambda: self.health, self.cluster_name),
            FreshnessCollector(lambda: self.freshness, self.cluster_name),
        ]

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
