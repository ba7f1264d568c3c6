"""Health of every component the platform runs on, as typed results, and their Prometheus gauges.

One check per component — the Kafka cluster (brokers alive against expected, the active
controller, under-replicated, under-min-ISR and offline partitions), the catalog's topics, Kafka
Connect with each connector and task, PostgreSQL and the connectors' replication slots,
ClickHouse, Qdrant, and each catalog consumer group — each bounded in time and each returning a
result instead of raising, so one component that is down never hides the others.
:meth:`HealthReport.components` flattens them into one ``(name, ok, detail)`` line per component:
what ``ys-platform health`` prints, and what :class:`HealthCollector` and the alert tracker
(:mod:`ys_platform.monitoring.alerts`) read.

The embedded stores (chDB, Qdrant local mode) admit one process per directory. While a sink
holds one, a check here does not wait for it: the store is reported ``busy`` with the holder's
process (read from ``/proc/locks``), which is healthy — a working sink holds its store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from prometheus_client.core import GaugeMetricFamily
from pydantic import SecretStr

from ys_platform.catalog.topics import ALL_TOPICS, CONSUMER_GROUPS, TopicSpec
from ys_platform.clients.kafka import KafkaConnection, KafkaUnreachableError, check_reachable
from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
from ys_platform.clients.locks import StoreLockedError, flock_held
from ys_platform.connectors import (
    ConnectorFile,
    ConnectorStatus,
    DesiredState,
    connector_files,
    status,
)
from ys_platform.monitoring import names
from ys_platform.monitoring.lag import GroupFilter, LagReader, LagReadError, offset_lag
from ys_platform.monitoring.report_collector import DEFAULT_CLUSTER_NAME, ReportCollector
from ys_platform.settings import Settings

# A local broker answers metadata and describe requests in milliseconds; 5 s bounds a hung one
# so the whole check (one request per kind) stays well under a Prometheus scrape timeout (10 s).
ADMIN_TIMEOUT_S = 5.0
# Connect's REST answers status in milliseconds; the same bound.
CONNECT_TIMEOUT_S = 5.0
POSTGRES_CONNECT_TIMEOUT_S = 5

Kind = Literal[
    "kafka", "topic", "connect", "connector", "task", "postgres", "slot", "store", "group"
]


@dataclass(frozen=True)
class ComponentHealth:
    """One line of the health report: a component, whether it is healthy, and why."""

    name: str
    kind: Kind
    ok: bool
    detail: str
    warn: bool = False
    """Healthy, but worth a look (a catalog group far behind on a one-shot read)."""


@dataclass(frozen=True)
class PartitionRef:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


# --- Kafka ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaHealth:
    bootstrap: str
    error: str | None = None
    """Why the cluster could not be read; None when it answered."""
    brokers_alive: tuple[int, ...] = ()
    brokers_expected: int | None = None
    """From YS_KAFKA_EXPECTED_BROKERS or the local stack's broker count; None when unknown."""
    controller_id: int | None = None
    partitions: int = 0
    under_replicated: tuple[PartitionRef, ...] = ()
    under_min_isr: tuple[PartitionRef, ...] = ()
    offline: tuple[PartitionRef, ...] = ()

    @property
    def reachable(self) -> bool:
        return self.error is None

    def components(self) -> list[ComponentHealth]:
        if not self.reachable:
            return [ComponentHealth("kafka", "kafka", False, str(self.error))]
        alive = len(self.brokers_alive)
        ids = ",".join(str(b) for b in self.brokers_alive)
        if self.brokers_expected is None:
            brokers = ComponentHealth("kafka brokers", "kafka", alive > 0, f"{alive} alive ({ids})")
        else:
            brokers = ComponentHealth(
                "kafka brokers",
                "kafka",
                alive >= self.brokers_expected,
                f"{alive} of {self.brokers_expected} alive ({ids})",
            )
        controller = ComponentHealth(
            "kafka controller",
            "kafka",
            self.controller_id is not None,
            f"node {self.controller_id}" if self.controller_id is not None else "no controller",
        )
        problems = {
            "under-replicated": self.under_replicated,
            "under min ISR": self.under_min_isr,
            "offline": self.offline,
        }
        bad = [f"{len(refs)} {what} ({_first(refs)})" for what, refs in problems.items() if refs]
        partitions = ComponentHealth(
            "kafka partitions",
            "kafka",
            not bad,
            "; ".join(bad) if bad else f"{self.partitions} partitions fully replicated",
        )
        return [brokers, controller, partitions]


def _first(refs: Sequence[PartitionRef], count: int = 3) -> str:
    shown = ", ".join(str(r) for r in refs[:count])
    return shown + (f", +{len(refs) - count} more" if len(refs) > count else "")


def expected_brokers(settings: Settings) -> int | None:
    """How many brokers the cluster should have: YS_KAFKA_EXPECTED_BROKERS, else the broker
    count the local stack was formatted with (when the clients point at it), else unknown."""
    if settings.kafka.expected_brokers is not None:
        return settings.kafka.expected_brokers
    from ys_platform.local.state import Layout, read_cluster

    if settings.kafka_bootstrap_given:
        return None
    cluster = read_cluster(Layout(settings.home_dir))
    return cluster.brokers if cluster else None


def check_kafka(
    admin: AdminClient,
    connection: KafkaConnection,
    expected: int | None,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> KafkaHealth:
    """Brokers, controller and partition replication of the cluster behind ``admin``."""
    bootstrap = connection.bootstrap_servers
    try:
        # Fails in a sentence, and fast, when no bootstrap broker answers at all.
        check_reachable(connection, timeout_s)
        metadata = admin.list_topics(timeout=timeout_s)
        controller_id = _controller_id(admin, timeout_s)
        # Only a topic with a replica out of sync can be under its min ISR (a min.insync.replicas
        # above the replication factor is a misconfiguration the catalog check reports), so
        # only those topics' configs are read: all ~400 topics of a test-worn local broker
        # take 5 s to describe on a loaded 2-core machine, the healthy case then takes none.
        lagging = [
            name
            for name, described in metadata.topics.items()
            if any(len(p.isrs) < len(p.replicas) for p in described.partitions.values())
        ]
        min_isr = _min_insync_replicas(admin, lagging, timeout_s)
    except KafkaUnreachableError as exc:
        return KafkaHealth(bootstrap, error=str(exc), brokers_expected=expected)
    except KafkaException as exc:
        return KafkaHealth(
            bootstrap, error=f"Kafka at {bootstrap}: {_reason(exc)}", brokers_expected=expected
        )
    under_replicated, under_min_isr, offline = [], [], []
    count = 0
    for name, topic_metadata in sorted(metadata.topics.items()):
        for pid, partition in sorted(topic_metadata.partitions.items()):
            count += 1
            ref = PartitionRef(name, pid)
            # librdkafka reports a partition without a leader as leader -1.
            if partition.leader < 0:
                offline.append(ref)
            if len(partition.isrs) < len(partition.replicas):
                under_replicated.append(ref)
                if len(partition.isrs) < min_isr.get(name, 1):
                    under_min_isr.append(ref)
    return KafkaHealth(
        bootstrap,
        brokers_alive=tuple(sorted(metadata.brokers)),
        brokers_expected=expected,
        controller_id=controller_id,
        partitions=count,
        under_replicated=tuple(under_replicated),
        under_min_isr=tuple(under_min_isr),
        offline=tuple(offline),
    )


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


# A request librdkafka sends to a broker that just died waits out its timeout (measured: a
# DescribeCluster seconds after a broker's SIGKILL timed out); a second one may reach a live one.
_CONTROLLER_ATTEMPTS = 2


def _controller_id(admin: AdminClient, timeout_s: float) -> int | None:
    """The node the cluster names as controller; None when none is named or none answers.

    In KRaft a broker answers DescribeCluster with some live broker as "the controller" (the
    quorum is not reachable through it): this says that the cluster names one. Which controller
    is active is each node's JMX ActiveControllerCount.
    """
    for _ in range(_CONTROLLER_ATTEMPTS):
        # The client's own timeout first, so it fails as a KafkaException rather than a race.
        future = admin.describe_cluster(request_timeout=timeout_s / _CONTROLLER_ATTEMPTS)
        try:
            controller = future.result(timeout_s)
        except KafkaException:
            continue
        return controller.controller.id if controller.controller is not None else None
    return None


def _min_insync_replicas(
    admin: AdminClient, topics: Sequence[str], timeout_s: float
) -> dict[str, int]:
    """Each topic's effective ``min.insync.replicas`` (its override or the broker default)."""
    if not topics:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
    result: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = future.result(timeout=timeout_s)
        except (KafkaException, TimeoutError):
            continue  # deleted or just created between the two requests: no figure for it
        entry = entries.get("min.insync.replicas")
        if entry is not None and entry.value is not None:
            result[resource.name] = int(entry.value)
    return result


# --- topics against the catalog ------------------------------------------------------------------
@dataclass(frozen=True)
class TopicHealth:
    name: str
    ok: bool
    detail: str


def check_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    brokers: int,
    timeout_s: float = ADMIN_TIMEOUT_S,
) -> list[TopicHealth]:
    """Each catalog topic against the cluster: missing, misconfigured (what reconcile would
    change) or drifted (what it may not fix), judged for a cluster of ``brokers`` brokers."""
    from ys_platform.streaming.topics import TopicAdminError, describe_topics, plan_topic

    try:
        live = describe_topics(admin, [s.name for s in specs], timeout_s)
    except TopicAdminError as exc:
        return [TopicHealth("topics", False, str(exc))]
    except TimeoutError:
        return [TopicHealth("topics", False, f"no answer to describe configs in {timeout_s} s")]
    result = []
    for spec in specs:
        plan = plan_topic(spec, live.get(spec.name), max(brokers, 1))
        if plan.create:
            result.append(TopicHealth(spec.name, False, "missing (run the topics reconcile)"))
        elif not plan.in_sync:
            result.append(TopicHealth(spec.name, False, "; ".join(plan.drift + plan.changes)))
        else:
            result.append(TopicHealth(spec.name, True, f"{spec.partitions} partitions, in sync"))
    return result


# --- Kafka Connect -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectorHealth:
    status: ConnectorStatus
    desired_state: DesiredState | None
    """The file's desired state; None for a connector on the cluster that no file declares."""

    @property
    def ok(self) -> bool:
        if self.desired_state is None:
            return self.status.exists and not self.status.failed
        return self.status.is_(self.desired_state)


@dataclass(frozen=True)
class ConnectHealth:
    url: str
    error: str | None = None
    connectors: tuple[ConnectorHealth, ...] = ()

    def components(self) -> list[ComponentHealth]:
        if self.error is not None:
            return [ComponentHealth("connect", "connect", False, self.error)]
        lines = [ComponentHealth("connect", "connect", True, f"{self.url} ready")]
        for connector in self.connectors:
            current = connector.status
            name = f"connector {current.name}"
            if not current.exists:
                lines.append(ComponentHealth(name, "connector", False, "not on the cluster"))
                continue
            wanted = connector.desired_state or "not FAILED"
            detail = f"{current.state} (desired {wanted})" + _error(current.trace)
            if not current.tasks:
                detail += ", no tasks"
            lines.append(ComponentHealth(name, "connector", connector.ok, detail))
            for task in current.tasks:
                if connector.desired_state is not None:
                    task_ok = task.state == connector.desired_state
                else:
                    task_ok = task.state != "FAILED"
                lines.append(
                    ComponentHealth(
                        f"{name} task {task.id}", "task", task_ok, task.state + _error(task.trace)
                    )
                )
        return lines


def _error(trace: str | None) -> str:
    """The first line of a Connect stack trace (the exception and its message), bounded."""
    return f": {trace.strip().splitlines()[0][:300]}" if trace and trace.strip() else ""


def check_connect(
    client: KafkaConnectClient, files: Sequence[ConnectorFile], *, include_undeclared: bool = True
) -> ConnectHealth:
    """The worker, each connector of ``files`` against its desired state, and (by default) any
    other connector on the cluster, which is healthy unless it or a task FAILED."""
    if not client.is_ready():
        return ConnectHealth(
            client.base_url,
            error=f"Kafka Connect at {client.base_url} is not ready (not running, or still "
            "joining its group). Start it with `ys-platform local up`.",
        )
    try:
        declared = {f.name: f.desired_state for f in files}
        names = list(declared)
        if include_undeclared:
            names += sorted(set(client.list_connectors()) - set(declared))
        connectors = tuple(
            ConnectorHealth(status(client, name), declared.get(name)) for name in names
        )
    except ConnectError as exc:
        return ConnectHealth(client.base_url, error=str(exc))
    return ConnectHealth(client.base_url, connectors=connectors)


# --- PostgreSQL ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotHealth:
    name: str
    exists: bool
    active: bool = False
    lag_bytes: int | None = None
    """WAL written since the slot's consumer last confirmed (pg_current_wal_lsn − confirmed)."""

    @property
    def ok(self) -> bool:
        return self.exists and self.active


@dataclass(frozen=True)
class PostgresHealth:
    target: str
    error: str | None = None
    version: str = ""
    slots: tuple[SlotHealth, ...] = ()

    def components(self) -> list[ComponentHealth]:
        if self.error is not None:
            return [ComponentHealth("postgres", "postgres", False, self.error)]
        lines = [ComponentHealth("postgres", "postgres", True, f"{self.target}, {self.version}")]
        for slot in self.slots:
            if not slot.exists:
                detail = "missing (created by the connector's first start)"
            else:
                state = "active" if slot.active else "inactive (no connector streams from it)"
                detail = f"{state}, {slot.lag_bytes} bytes behind the WAL"
            lines.append(ComponentHealth(f"replication slot {slot.name}", "slot", slot.ok, detail))
        return lines


def slot_names(files: Iterable[ConnectorFile]) -> list[str]:
    """The replication slots of the Debezium PostgreSQL connectors among ``files``."""
    return [
        f.config["slot.name"]
        for f in files
        if f.config.get("connector.class", "").endswith("PostgresConnector")
        and "slot.name" in f.config
        and f.desired_state == "RUNNING"
    ]


_SLOTS_SQL = """
SELECT slot_name, active,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = ANY(%s)
"""


def check_postgres(conninfo: str, slots: Sequence[str]) -> PostgresHealth:
    import psycopg

    from ys_platform.clients.postgres import (
        PostgresUnavailableError,
        describe_target,
        open_postgres,
    )

    target = describe_target(conninfo)
    try:
        with open_postgres(
            conninfo, connect_timeout_s=POSTGRES_CONNECT_TIMEOUT_S, autocommit=True
        ) as conn:
            (version,) = conn.execute("SHOW server_version").fetchone() or ("unknown",)
            rows = conn.execute(_SLOTS_SQL, (list(slots),)).fetchall()
    except PostgresUnavailableError as exc:
        return PostgresHealth(target, error=str(exc))
    except psycopg.Error as exc:
        # Connected, then lost or refused (a server shutting down, a missing privilege): the
        # server's message, which never holds the client's password.
        reason = " ".join(str(exc).split())
        return PostgresHealth(target, error=f"PostgreSQL at {target}: {reason}")
    found = {name: (bool(active), lag) for name, active, lag in rows}
    return PostgresHealth(
        target,
        version=f"PostgreSQL {str(version).split()[0]}",
        slots=tuple(
            SlotHealth(name, True, *found[name]) if name in found else SlotHealth(name, False)
            for name in slots
        ),
    )


# --- ClickHouse and Qdrant -----------------------------------------------------------------------
StoreState = Literal["up", "busy", "down"]


@dataclass(frozen=True)
class StoreHealth:
    name: str
    state: StoreState
    detail: str

    @property
    def ok(self) -> bool:
        # Busy is healthy: a running sink holds its embedded store between and during flushes.
        return self.state != "down"

    def component(self) -> ComponentHealth:
        return ComponentHealth(self.name, "store", self.ok, f"{self.state}: {self.detail}")


def lock_holder(lock_file: Path) -> str | None:
    """``pid N (command)`` of the process holding an ``flock`` on ``lock_file``, from
    ``/proc/locks``; None when nobody holds it or Linux does not say."""
    from ys_platform.local.procs import cmdline

    try:
        inode = os.stat(lock_file).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a blocked waiter has "->" first).
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5].rsplit(":", 1)[-1] == str(inode):
            pid = int(parts[4])
            command = " ".join(
                os.path.basename(a) if i == 0 else a for i, a in enumerate(cmdline(pid))
            )
            return f"pid {pid} ({command[:120] or 'unknown'})"
    return None


def _busy(name: str, lock_file: Path) -> StoreHealth:
    holder = lock_holder(lock_file) or "another process"
    return StoreHealth(name, "busy", f"held by {holder}, as by a running sink")


def _server(url: str) -> str:
    """scheme://host:port of a server URL: no credentials, path or query in a health line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check_clickhouse(dsn: str, password: SecretStr | None = None) -> StoreHealth:
    """The version and table count of the configured ClickHouse; busy when a process holds
    the chDB path (the check never waits for it)."""
    from ys_platform.clients.clickhouse import chdb_path, is_exclusive, open_clickhouse

    path = chdb_path(dsn) if is_exclusive(dsn) else None
    if path is not None:
        if not path.exists():
            return StoreHealth("clickhouse", "up", f"chDB at {path} not created yet")
        if flock_held(path / "status"):
            return _busy("clickhouse", path / "status")
    try:
        with open_clickhouse(dsn, password, lock_timeout_s=0) as client:
            version = client.server_version
            tables = client.command(
                "SELECT count() FROM system.tables WHERE database = currentDatabase()"
            )
    except StoreLockedError:
        assert path is not None  # only chDB paths are locked
        return _busy("clickhouse", path / "status")
    except Exception as exc:  # any failure of the store is its health, reported in a sentence
        return StoreHealth("clickhouse", "down", f"{type(exc).__name__}: {exc}"[:500])
    where = f"chDB at {path}" if path is not None else _server(dsn)
    return StoreHealth("clickhouse", "up", f"{where}, version {version}, {tables} table(s)")


def check_qdrant(url: str | None, path: Path, api_key: SecretStr | None = None) -> StoreHealth:
    """The collections of the configured Qdrant; busy when a process holds the local store
    (the check never waits for it)."""
    from ys_platform.clients.qdrant import open_qdrant

    if url is None:
        if not path.exists():
            return StoreHealth("qdrant", "up", f"local store at {path} not created yet")
        if flock_held(path / ".lock"):
            return _busy("qdrant", path / ".lock")
    try:
        if url is not None:
            opened = open_qdrant(url=url, api_key=api_key)
        else:
            opened = open_qdrant(path=path, lock_timeout_s=0)
        with opened as client:
            collections = [c.name for c in client.get_collections().collections]
    except StoreLockedError:
        return _busy("qdrant", path / ".lock")
    except Exception as exc:  # any failure of the store is its health, reported in a sentence
        return StoreHealth("qdrant", "down", f"{type(exc).__name__}: {exc}"[:500])
    where = _server(url) if url is not None else f"local store at {path}"
    return StoreHealth("qdrant", "up", f"{where}, {len(collections)} collection(s)")


# --- consumer groups -----------------------------------------------------------------------------
# A one-shot read above this many records calls a catalog group out (WARN, not a failure): twice
# the largest batch a worker takes at once (the sinks' 100,000 records, sink_worker.batch_size),
# since a running worker sits up to a batch behind the end between its commits. One read tells
# neither the lag in seconds nor whether it shrinks: that takes `ys-platform monitor`'s polls.
GROUP_LAG_WARN_RECORDS = 200_000


@dataclass(frozen=True)
class GroupHealth:
    group_id: str
    state: str
    """The coordinator's state: STABLE, EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, DEAD."""
    members: int = 0
    """Members owning at least one of the group's committed partitions."""
    lag: int | None = None
    """Records still to read over the committed partitions, as the lag monitor counts them
    (transaction markers are not lag); None when the group committed nothing."""
    partitions: int = 0
    warn_above: int = GROUP_LAG_WARN_RECORDS
    error: str | None = None

    @property
    def ok(self) -> bool:
        # A group's state alone says nothing wrong: EMPTY is a stopped worker, DEAD one that
        # never ran, and a large lag on one read may be a backlog being worked off.
        return self.error is None

    @property
    def warn(self) -> bool:
        return self.lag is not None and self.lag > self.warn_above

    def component(self) -> ComponentHealth:
        name = f"group {self.group_id}"
        if self.error is not None:
            return ComponentHealth(name, "group", False, self.error)
        if self.lag is None:
            return ComponentHealth(name, "group", True, "no committed offsets (never ran)")
        detail = (
            f"{self.state}, {self.members} member(s), lag {self.lag} on "
            f"{self.partitions} partition(s)"
        )
        if self.warn:
            detail += (
                f": over {self.warn_above} records, behind or stopped "
                "(`ys-platform monitor` tells which, in seconds)"
            )
        return ComponentHealth(name, "group", True, detail, warn=self.warn)


def check_groups(
    connection: KafkaConnection,
    group_ids: Sequence[str],
    timeout_s: float = ADMIN_TIMEOUT_S,
    *,
    warn_above: int = GROUP_LAG_WARN_RECORDS,
) -> list[GroupHealth]:
    """Each group's state and offset lag, read once by the lag monitor's reader."""
    if not group_ids:
        return []
    reader = LagReader(connection, GroupFilter.exactly(group_ids), timeout_s=timeout_s)
    try:
        reading = reader.read()
    except LagReadError as exc:
        return [GroupHealth(g, "UNKNOWN", warn_above=warn_above, error=str(exc)) for g in group_ids]
    finally:
        reader.close()
    found = {g.group_id: g for g in reading.groups}
    result = []
    for group_id in group_ids:
        group = found[group_id]
        if not group.partitions:
            result.append(GroupHealth(group_id, group.state, warn_above=warn_above))
            continue
        owners = {p.owner.consumer_id for p in group.partitions if p.owner is not None}
        lag = sum(offset_lag(p, reading.offsets[p.topic, p.partition]) for p in group.partitions)
        result.append(
            GroupHealth(group_id, group.state, len(owners), lag, len(group.partitions), warn_above)
        )
    return result


# --- the whole report ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HealthReport:
    checked_at: float
    kafka: KafkaHealth
    topics: tuple[TopicHealth, ...] = ()
    connect: ConnectHealth | None = None
    postgres: PostgresHealth | None = None
    stores: tuple[StoreHealth, ...] = ()
    groups: tuple[GroupHealth, ...] = ()
    took_s: float = 0.0

    def components(self) -> list[ComponentHealth]:
        lines = self.kafka.components()
        lines += [ComponentHealth(f"topic {t.name}", "topic", t.ok, t.detail) for t in self.topics]
        if self.connect is not None:
            lines += self.connect.components()
        if self.postgres is not None:
            lines += self.postgres.components()
        lines += [store.component() for store in self.stores]
        lines += [group.component() for group in self.groups]
        return lines

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.components())

    def failures(self) -> list[ComponentHealth]:
        return [line for line in self.components() if not line.ok]


@dataclass(frozen=True)
class HealthScope:
    """What :func:`check_health` looks at; the defaults are the whole platform."""

    topics: Sequence[TopicSpec] = ALL_TOPICS
    groups: Sequence[str] = tuple(g.group_id for g in CONSUMER_GROUPS)
    connect: bool = True
    postgres: bool = True
    stores: bool = True
    """ClickHouse and Qdrant. A long-running monitor beside embedded stores may leave them out:
    its probe would take the store's lock for a moment between a sink's flushes."""


def check_health(settings: Settings, scope: HealthScope | None = None) -> HealthReport:
    """Every component of ``scope`` (the whole platform by default), each check bounded."""
    scope = scope or HealthScope()
    started = time.monotonic()
    admin = settings.kafka.admin()
    kafka = check_kafka(admin, settings.kafka, expected_brokers(settings))
    topics: list[TopicHealth] = []
    groups: list[GroupHealth] = []
    if kafka.reachable:
        # Judge the catalog against the cluster's intended size: with a broker down the topics
        # are still meant to have RF 3 (the broker count is its own line).
        brokers = kafka.brokers_expected or len(kafka.brokers_alive)
        topics = check_topics(admin, scope.topics, brokers)
        groups = check_groups(settings.kafka, scope.groups)
    connect = postgres = None
    files = connector_files(settings.connectors_dir) if scope.connect or scope.postgres else []
    if scope.connect:
        with KafkaConnectClient(settings.connect_url, timeout_s=CONNECT_TIMEOUT_S) as client:
            connect = check_connect(client, files)
    if scope.postgres:
        postgres = check_postgres(settings.postgres_conninfo(), slot_names(files))
    stores: list[StoreHealth] = []
    if scope.stores:
        stores.append(check_clickhouse(settings.clickhouse_dsn, settings.clickhouse_password))
        stores.append(
            check_qdrant(settings.qdrant_url, settings.qdrant_path, settings.qdrant_api_key)
        )
    return HealthReport(
        checked_at=time.time(),
        kafka=kafka,
        topics=tuple(topics),
        connect=connect,
        postgres=postgres,
        stores=tuple(stores),
        groups=tuple(groups),
        took_s=time.monotonic() - started,
    )


# --- Prometheus ----------------------------------------------------------------------------------
class HealthCollector(ReportCollector[HealthReport]):
    """The latest :class:`HealthReport` as gauges, for a prometheus-client registry."""

    def render(self, report: HealthReport) -> list[GaugeMetricFamily]:
        return health_metrics(report, self.cluster_name)


def health_metrics(
    report: HealthReport, cluster_name: str = DEFAULT_CLUSTER_NAME
) -> list[GaugeMetricFamily]:
    """The gauges of one report (also what the alert tracker snapshots to system.metrics)."""
    kafka = report.kafka
    families: list[GaugeMetricFamily] = []

    def family(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        created = GaugeMetricFamily(name, doc, labels=["cluster_name", *labels])
        families.append(created)
        return created

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            family(name, doc).add_metric([cluster_name], value)

    if kafka.reachable:
        gauge(
            names.YS_KAFKA_BROKERS_ALIVE,
            "Brokers in the cluster metadata.",
            len(kafka.brokers_alive),
        )
        gauge(
            names.YS_KAFKA_PARTITIONS_UNDER_REPLICATED,
            "Partitions with fewer in-sync replicas than replicas.",
            len(kafka.under_replicated),
        )
        gauge(
            names.YS_KAFKA_PARTITIONS_UNDER_MIN_ISR,
            "Partitions with fewer in-sync replicas than their min.insync.replicas.",
            len(kafka.under_min_isr),
        )
        gauge(names.YS_KAFKA_PARTITIONS_OFFLINE, "Partitions without a leader.", len(kafka.offline))
        gauge(
            names.YS_KAFKA_CONTROLLER_ACTIVE,
            "1 when the cluster metadata names a controller, else 0.",
            float(kafka.controller_id is not None),
        )
    gauge(
        names.YS_KAFKA_BROKERS_EXPECTED,
        "Brokers the cluster should have (YS_KAFKA_EXPECTED_BROKERS or the local stack).",
        kafka.brokers_expected,
    )
    if report.connect is not None and report.connect.error is None:
        connectors = family(
            names.YS_CONNECTOR_STATE, "1 for the connector's current state.", "connector", "state"
        )
        tasks = family(
            names.YS_CONNECTOR_TASK_STATE,
            "1 for the task's current state.",
            "connector",
            "task",
            "state",
        )
        for connector in report.connect.connectors:
            current = connector.status
            if not current.exists:
                continue
            for state in names.CONNECT_STATES:
                connectors.add_metric(
                    [cluster_name, current.name, state], float(current.state == state)
                )
                for task in current.tasks:
                    tasks.add_metric(
                        [cluster_name, current.name, str(task.id), state],
                        float(task.state == state),
                    )
    if report.postgres is not None and report.postgres.error is None:
        lag = family(
            names.YS_POSTGRES_REPLICATION_SLOT_LAG_BYTES,
            "WAL bytes written since the slot's consumer last confirmed.",
            "slot",
        )
        active = family(
            names.YS_POSTGRES_REPLICATION_SLOT_ACTIVE,
            "1 when a consumer streams from the slot.",
            "slot",
        )
        for slot in report.postgres.slots:
            active.add_metric([cluster_name, slot.name], float(slot.active))
            if slot.lag_bytes is not None:
                lag.add_metric([cluster_name, slot.name], float(slot.lag_bytes))
    up = family(names.YS_COMPONENT_UP, "1 when the component is healthy.", "component")
    up.add_metric([cluster_name, "kafka"], float(kafka.reachable))
    for line in report.components():
        if line.kind in ("connect", "postgres", "store"):
            up.add_metric([cluster_name, line.name], float(line.ok))
    return families
