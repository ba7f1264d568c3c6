"""Source freshness of CDC-fed topics: the age of their newest record and of Debezium's heartbeat.

Lag says whether consumers keep up with a topic; freshness says whether the topic itself is
still being fed. A Debezium connector whose database is gone keeps its task RUNNING while it
retries (issue 9: PostgreSQL stopped for 60 s, Connect reported RUNNING throughout), so its
health is read from what it writes instead. With ``heartbeat.interval.ms`` set (10 s in
``connectors/postgres-source.json``) the connector writes a heartbeat record to
``__debezium-heartbeat.<topic.prefix>`` every interval while it streams, changes or not
(measured on the local stack with quiet tables: consecutive heartbeats 10.2 s apart).
No heartbeat for more than :data:`SILENT_AFTER_INTERVALS` intervals means the source is
silent: the ``CDC source silent`` alert. The age of the newest record of each CDC topic is
reported beside it; it is not an alert by itself, since a quiet table legitimately writes
nothing.

The newest record of a partition is read, not guessed: one consumer (no group membership, no
commits) is assigned every partition at its last offset and reads that record's timestamp.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client.core import GaugeMetricFamily

from ys_platform.clients.kafka import KafkaConnection, read_to_end
from ys_platform.connectors import ConnectorFile, heartbeat_topic, output_topics
from ys_platform.monitoring import names
from ys_platform.monitoring.report_collector import DEFAULT_CLUSTER_NAME, ReportCollector

# Each read takes a group id of its own under this prefix (librdkafka needs one even to assign;
# the ACLs grant the monitor Describe on the prefix for the coordinator lookup).
GROUP_PREFIX = "ys-monitor-freshness-"

# Three missed heartbeats: one late heartbeat (a GC pause, a busy Connect worker) is not an
# outage, three in a row are. With the connector's 10 s that is 30 s, inside the 60 s within
# which issue 9 asks the PostgreSQL outage to alert.
SILENT_AFTER_INTERVALS = 3

# Reading the last record of the 73 partitions of the six CDC topics and the heartbeat topic
# took 0.9-1.4 s on the local broker at a load average of 16 on 2 cores; 5 s for the whole read
# bounds a slow cluster without stalling a monitor poll.
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CdcSource:
    """A Debezium connector as freshness sees it: what it writes and how often it heartbeats."""

    connector: str
    topics: tuple[str, ...]
    heartbeat_topic: str | None
    heartbeat_interval_s: float | None

    @classmethod
    def of(cls, file: ConnectorFile) -> CdcSource:
        topic = heartbeat_topic(file)
        interval = int(file.config["heartbeat.interval.ms"]) / 1000 if topic else None
        return cls(file.name, tuple(output_topics(file)), topic, interval)


def cdc_sources(files: Sequence[ConnectorFile]) -> list[CdcSource]:
    """The Debezium connectors among ``files`` that are meant to run."""
    return [
        CdcSource.of(f)
        for f in files
        if f.config.get("connector.class", "").startswith("io.debezium.")
        and f.desired_state == "RUNNING"
    ]


@dataclass(frozen=True)
class TopicFreshness:
    topic: str
    newest_ms: int | None
    """Timestamp of the newest record over all partitions; None for an empty or missing topic."""
    age_s: float | None


@dataclass(frozen=True)
class HeartbeatFreshness:
    connector: str
    topic: str | None
    interval_s: float | None
    last_ms: int | None
    age_s: float | None

    @property
    def silent(self) -> bool:
        return is_silent(self.age_s, self.interval_s)


def is_silent(age_s: float | None, interval_s: float | None) -> bool:
    """No heartbeat for more than :data:`SILENT_AFTER_INTERVALS` intervals, or none at all.

    A connector without heartbeats (``interval_s`` None) cannot be judged and is never silent.
    """
    if interval_s is None:
        return False
    return age_s is None or age_s > SILENT_AFTER_INTERVALS * interval_s


@dataclass(frozen=True)
class FreshnessReport:
    checked_at: float
    topics: tuple[TopicFreshness, ...]
    heartbeats: tuple[HeartbeatFreshness, ...]
    error: str | None = None
    """Why the topics could not be read; the figures are then absent, not zero."""


def newest_timestamps(
    connection: KafkaConnection, topics: Sequence[str], timeout_s: float = READ_TIMEOUT_S
) -> dict[str, int | None]:
    """The newest record timestamp (ms) of each topic over its partitions; None when empty."""
    newest: dict[str, int | None] = {t: None for t in topics}
    consumer = connection.consumer(
        f"{GROUP_PREFIX}{uuid.uuid4().hex[:8]}",
        # Assigned, never subscribed: no group is joined and nothing is committed.
        **{"enable.partition.eof": True},
    )
    deadline = time.monotonic() + timeout_s

    def remaining() -> float:
        return max(deadline - time.monotonic(), 0.1)

    try:
        metadata = consumer.list_topics(timeout=remaining())
        assignment = []
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                continue
            for partition in described.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=remaining()
                )
                if high > low:
                    # One back from the end, two where there are two: a transactional
                    # producer's commit marker takes the last offset and carries no record.
                    assignment.append(TopicPartition(topic, partition, max(low, high - 2)))
        if not assignment:
            return newest
        consumer.assign(assignment)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        for record in read_to_end(consumer, pending, deadline, poll_timeout_s=0.2):
            _, stamp = record.timestamp()
            if stamp > 0:
                current = newest[record.topic()]
                newest[record.topic()] = stamp if current is None else max(current, stamp)
        if pending:
            # A partial read would show an unread heartbeat as missing: a false "silent".
            raise TimeoutError(
                f"{len(pending)} partition(s) not read to their end in {timeout_s} s"
            )
        return newest
    finally:
        consumer.close()


def check_freshness(
    connection: KafkaConnection,
    sources: Sequence[CdcSource],
    *,
    now: float | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> FreshnessReport:
    """Ages of the newest record of each source topic and of each connector's heartbeat."""
    topics = sorted({t for s in sources for t in s.topics})
    beats = [s.heartbeat_topic for s in sources if s.heartbeat_topic]
    try:
        newest = newest_timestamps(connection, topics + beats, timeout_s)
    except (KafkaException, TimeoutError) as exc:
        error = exc.args[0] if exc.args else exc
        reason = error.str() if isinstance(error, KafkaError) else str(error)
        checked = time.time() if now is None else now
        return FreshnessReport(checked, (), (), error=f"cannot read the CDC topics: {reason}")
    checked = time.time() if now is None else now

    def age(stamp: int | None) -> float | None:
        return None if stamp is None else max(0.0, checked - stamp / 1000)

    return FreshnessReport(
        checked_at=checked,
        topics=tuple(TopicFreshness(t, newest[t], age(newest[t])) for t in topics),
        heartbeats=tuple(
            HeartbeatFreshness(
                s.connector,
                s.heartbeat_topic,
                s.heartbeat_interval_s,
                newest.get(s.heartbeat_topic) if s.heartbeat_topic else None,
                age(newest.get(s.heartbeat_topic)) if s.heartbeat_topic else None,
            )
            for s in sources
        ),
    )


class FreshnessCollector(ReportCollector[FreshnessReport]):
    """The latest :class:`FreshnessReport` as gauges; None before the first poll exports nothing."""

    def render(self, report: FreshnessReport) -> list[GaugeMetricFamily]:
        return freshness_metrics(report, self.cluster_name)


def freshness_metrics(
    report: FreshnessReport, cluster_name: str = DEFAULT_CLUSTER_NAME
) -> list[GaugeMetricFamily]:
    if report.error is not None:
        return []

    def family(name: str, doc: str, label: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["cluster_name", label])

    freshness = family(
        names.YS_SOURCE_FRESHNESS_SECONDS, "Age of the newest record of a CDC-fed topic.", "topic"
    )
    for topic in report.topics:
        if topic.age_s is not None:  # an empty topic has no age: absent, not 0
            freshness.add_metric([cluster_name, topic.topic], topic.age_s)
    age = family(
        names.YS_CDC_HEARTBEAT_AGE_SECONDS,
        "Age of the connector's last Debezium heartbeat.",
        "connector",
    )
    interval = family(
        names.YS_CDC_HEARTBEAT_INTERVAL_SECONDS,
        "The connector's heartbeat.interval.ms, in seconds.",
        "connector",
    )
    silent = family(
        names.YS_CDC_SOURCE_SILENT,
        f"1 when the connector wrote no heartbeat for {SILENT_AFTER_INTERVALS} intervals.",
        "connector",
    )
    for beat in report.heartbeats:
        if beat.interval_s is None:
            continue
        labels = [cluster_name, beat.connector]
        if beat.age_s is not None:
            age.add_metric(labels, beat.age_s)
        interval.add_metric(labels, beat.interval_s)
        silent.add_metric(labels, float(beat.silent))
    return [freshness, age, interval, silent]
