"""The Prometheus metric names of the platform, written once: exporters and alert rules use these.

``deployments/prometheus/alerts.yml`` may name only metrics listed here (a unit test parses its
expressions), so a metric renamed in code and not in the rules fails a test instead of an alert
that silently never fires.

Three families:

* the lag monitor's (``ys-platform monitor``, :data:`LAG_MONITOR_PORT`): consumer lag under
  kafka-lag-exporter's names and labels, which existing dashboards read, plus the ``ys_*`` gauges
  of group status, source freshness, cluster health and connectors;
* each processor's and sink's worker (``ys_platform.streaming.exporter``): ``ys_worker_*``;
* the brokers' and Connect's JMX exporter agents: ``kafka_server_*``, ``kafka_controller_*`` and
  ``kafka_connect_*``, from the rules in ``deployments/local/jmx-exporter-*.yml``.

Names are the exposed ones: a counter's ends in ``_total`` (prometheus-client accepts the suffix
and exposes the same name), a histogram's base name gets ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

from typing import Final

# --- endpoints -----------------------------------------------------------------------------------
LAG_MONITOR_PORT: Final = 9308
"""``ys-platform monitor`` serves /metrics here (kafka_exporter's port); YS_MONITOR_PORT moves
it."""

WORKER_METRICS_FIRST_PORT: Final = 9400
"""Workers take the first free port from here (``YS_WORKER_METRICS_PORT``) and announce it in
``$YS_HOME/run/metrics/<group>-<replica>.json`` (file_sd): no port is fixed per worker, since a
group may run several replicas (issue 11)."""


# --- lag monitor: kafka-lag-exporter's names (labels cluster_name, group, topic, partition) ----
KAFKA_CONSUMERGROUP_GROUP_LAG: Final = "kafka_consumergroup_group_lag"
"""Offset lag of a group on one partition: high watermark − committed offset (markers excluded)."""
KAFKA_CONSUMERGROUP_GROUP_LAG_SECONDS: Final = "kafka_consumergroup_group_lag_seconds"
"""Time lag of a group on one partition, interpolated; absent until two offset samples exist."""
KAFKA_CONSUMERGROUP_GROUP_OFFSET: Final = "kafka_consumergroup_group_offset"
"""Committed offset of a group on one partition."""
KAFKA_CONSUMERGROUP_GROUP_MAX_LAG: Final = "kafka_consumergroup_group_max_lag"
"""Largest offset lag of a group over its partitions (labels cluster_name, group)."""
KAFKA_CONSUMERGROUP_GROUP_MAX_LAG_SECONDS: Final = "kafka_consumergroup_group_max_lag_seconds"
"""Largest time lag of a group over its partitions (labels cluster_name, group)."""
KAFKA_CONSUMERGROUP_GROUP_SUM_LAG: Final = "kafka_consumergroup_group_sum_lag"
"""Offset lag of a group summed over its partitions (labels cluster_name, group)."""
KAFKA_CONSUMERGROUP_GROUP_TOPIC_SUM_LAG: Final = "kafka_consumergroup_group_topic_sum_lag"
"""Offset lag of a group summed over its partitions of one topic (labels cluster_name, group,
topic)."""
KAFKA_PARTITION_LATEST_OFFSET: Final = "kafka_partition_latest_offset"
"""High watermark of a partition (labels cluster_name, topic, partition)."""
KAFKA_PARTITION_EARLIEST_OFFSET: Final = "kafka_partition_earliest_offset"
"""Earliest offset still in a partition (labels cluster_name, topic, partition)."""
KAFKA_CONSUMERGROUP_POLL_TIME_MS: Final = "kafka_consumergroup_poll_time_ms"
"""How long the monitor's last poll of the cluster took (label cluster_name)."""
KAFKA_CONSUMERGROUP_POLL_TIMESTAMP_SECONDS: Final = "kafka_consumergroup_poll_timestamp_seconds"
"""When the served snapshot was read, Unix seconds (label cluster_name): a stale endpoint shows."""
KAFKA_CONSUMERGROUP_GROUP_LAG_BOUND_SECONDS: Final = "kafka_consumergroup_group_lag_bound_seconds"
"""The catalog's bound on a catalog group's time lag (labels cluster_name, group)."""
KAFKA_CONSUMERGROUP_GROUP_WITHIN_BOUND: Final = "kafka_consumergroup_group_within_bound"
"""1 if a catalog group's largest time lag is within its bound, else 0 (cluster_name, group)."""

# --- lag monitor: the platform's own gauges ------------------------------------------------------
YS_CONSUMERGROUP_STATUS: Final = "ys_consumergroup_status"
"""Burrow status of a group (labels cluster_name, group, status): one series per status of
NOTFOUND, OK, WARN, STOP, STALL, REWIND, 1 for the group's current (worst partition's) status,
else 0."""
YS_CONSUMERGROUP_PARTITION_STATUS: Final = "ys_consumergroup_partition_status"
"""Burrow status of a group on one partition (labels cluster_name, group, topic, partition,
status), encoded as ys_consumergroup_status."""
YS_SOURCE_FRESHNESS_SECONDS: Final = "ys_source_freshness_seconds"
"""Age of the newest record of a CDC-fed topic (labels cluster_name, topic)."""
YS_CDC_HEARTBEAT_AGE_SECONDS: Final = "ys_cdc_heartbeat_age_seconds"
"""Age of the newest Debezium heartbeat of a source connector (labels cluster_name, connector)."""
YS_CDC_HEARTBEAT_INTERVAL_SECONDS: Final = "ys_cdc_heartbeat_interval_seconds"
"""The connector's heartbeat.interval.ms in seconds (labels cluster_name, connector); silence
beyond 3 intervals is the CdcSourceSilent alert."""
YS_CDC_SOURCE_SILENT: Final = "ys_cdc_source_silent"
"""1 when the connector wrote no heartbeat for 3 intervals, else 0 (labels cluster_name,
connector): the monitor's own verdict, which system.alerts carries."""
YS_KAFKA_BROKERS_ALIVE: Final = "ys_kafka_brokers_alive"
"""Brokers in the cluster's metadata (label cluster_name)."""
YS_KAFKA_BROKERS_EXPECTED: Final = "ys_kafka_brokers_expected"
"""Brokers the cluster should have (label cluster_name): the local stack's count, or configured."""
YS_KAFKA_PARTITIONS_UNDER_REPLICATED: Final = "ys_kafka_partitions_under_replicated"
"""Partitions whose ISR is smaller than their replica set (label cluster_name)."""
YS_KAFKA_PARTITIONS_UNDER_MIN_ISR: Final = "ys_kafka_partitions_under_min_isr"
"""Partitions whose ISR is below the topic's min.insync.replicas (label cluster_name)."""
YS_KAFKA_PARTITIONS_OFFLINE: Final = "ys_kafka_partitions_offline"
"""Partitions without a leader (label cluster_name)."""
YS_KAFKA_CONTROLLER_ACTIVE: Final = "ys_kafka_controller_active"
"""1 when the metadata names an active controller, else 0 (label cluster_name)."""
YS_CONNECTOR_STATE: Final = "ys_connector_state"
"""State of a Connect connector (labels cluster_name, connector, state): one series per state
of :data:`CONNECT_STATES`, 1 for the current one, else 0."""
YS_CONNECTOR_TASK_STATE: Final = "ys_connector_task_state"
"""State of a connector's task (labels cluster_name, connector, task, state), encoded as
ys_connector_state."""
YS_COMPONENT_UP: Final = "ys_component_up"
"""1 when a component of the health report is healthy, else 0 (labels cluster_name,
component)."""
YS_POSTGRES_REPLICATION_SLOT_LAG_BYTES: Final = "ys_postgres_replication_slot_lag_bytes"
"""WAL bytes written since a slot's consumer last confirmed (labels cluster_name, slot)."""
YS_POSTGRES_REPLICATION_SLOT_ACTIVE: Final = "ys_postgres_replication_slot_active"
"""1 when a consumer streams from the replication slot, else 0 (labels cluster_name, slot)."""

CONNECT_STATES: Final = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "UNASSIGNED", "RESTARTING")
"""Connect's connector and task states, the values of the ``state`` label."""

# --- workers (labels worker: the catalog group, group: the physical group, replica) ---------
WORKER_LABELS: Final = ("worker", "group", "replica")
"""The labels of every ``ys_worker_*`` series; the file_sd target adds ``kind`` to ``up``."""
YS_WORKER_RECORDS_CONSUMED_TOTAL: Final = "ys_worker_records_consumed_total"
"""Records a worker consumed and committed."""
YS_WORKER_RECORDS_PRODUCED_TOTAL: Final = "ys_worker_records_produced_total"
"""Records a processor produced to its outputs, or a sink wrote to its store."""
YS_WORKER_RECORDS_DEAD_LETTERED_TOTAL: Final = "ys_worker_records_dead_lettered_total"
"""Records a worker sent to its dead-letter topic (also counted as consumed)."""
YS_WORKER_RECORDS_RESTORED_TOTAL: Final = "ys_worker_records_restored_total"
"""Input records a worker replayed to rebuild its state."""
YS_WORKER_TRANSACTIONS_ABORTED_TOTAL: Final = "ys_worker_transactions_aborted_total"
"""Transactions a worker aborted, each batch then rewound and replayed."""
YS_WORKER_BATCH_SECONDS: Final = "ys_worker_batch_seconds"
"""Histogram: time to handle and commit one batch (a sink: one flush)."""
YS_WORKER_COMMIT_SECONDS: Final = "ys_worker_commit_seconds"
"""Histogram: time of a batch's commit alone (the transaction, or the store write)."""
YS_WORKER_RESTORE_SECONDS: Final = "ys_worker_restore_seconds"
"""Histogram: time to restore on an assignment (state, or the sink's resume offsets)."""
YS_WORKER_CONSUMER_LAG: Final = "ys_worker_consumer_lag"
"""Offset lag per owned partition, as the worker sees it (WORKER_LABELS + topic, partition)."""
YS_WORKER_START_TIME_SECONDS: Final = "ys_worker_start_time_seconds"
"""When the worker started (Unix time)."""

# --- Prometheus itself ---------------------------------------------------------------------------
UP: Final = "up"
"""Set by Prometheus per target: 0 when the scrape failed (a worker, broker or exporter down)."""

# --- JMX exporter (deployments/local/jmx-exporter-kafka.yml; label instance per broker) ---------
KAFKA_UNDER_REPLICATED_PARTITIONS: Final = "kafka_server_replicamanager_underreplicatedpartitions"
"""Partitions this broker leads whose ISR is short of the replica set."""
KAFKA_UNDER_MIN_ISR_PARTITIONS: Final = "kafka_server_replicamanager_underminisrpartitioncount"
"""Partitions this broker leads whose ISR is below min.insync.replicas."""
KAFKA_PARTITION_COUNT: Final = "kafka_server_replicamanager_partitioncount"
"""Partition replicas on this broker."""
KAFKA_LEADER_COUNT: Final = "kafka_server_replicamanager_leadercount"
"""Partitions this broker leads."""
KAFKA_ACTIVE_CONTROLLER_COUNT: Final = "kafka_controller_kafkacontroller_activecontrollercount"
"""1 on the active KRaft controller, 0 on the others: the cluster's sum must be 1."""
KAFKA_OFFLINE_PARTITIONS_COUNT: Final = "kafka_controller_kafkacontroller_offlinepartitionscount"
"""Partitions without a leader, as the active controller sees them."""
KAFKA_BYTES_IN_TOTAL: Final = "kafka_server_brokertopicmetrics_bytesin_total"
"""Bytes produced to this broker (all topics; with a topic label per topic)."""
KAFKA_BYTES_OUT_TOTAL: Final = "kafka_server_brokertopicmetrics_bytesout_total"
"""Bytes fetched from this broker by consumers (all topics; with a topic label per topic)."""
KAFKA_MESSAGES_IN_TOTAL: Final = "kafka_server_brokertopicmetrics_messagesin_total"
"""Records produced to this broker (all topics; with a topic label per topic)."""
KAFKA_CONNECT_WORKER_CONNECTOR_COUNT: Final = "kafka_connect_worker_connector_count"
"""Connectors on the Connect worker (its JMX exporter)."""
KAFKA_CONNECT_WORKER_TASK_COUNT: Final = "kafka_connect_worker_task_count"
"""Tasks on the Connect worker (its JMX exporter)."""
KAFKA_CONNECT_CONNECTOR_STATUS: Final = "kafka_connect_connector_status"
"""1 for a connector's task's current status (labels connector, task, status), JMX exporter."""


def all_names() -> frozenset[str]:
    """Every metric name above, for checking the alert rules against."""
    return frozenset(
        value for name, value in globals().items() if name.isupper() and isinstance(value, str)
    )
