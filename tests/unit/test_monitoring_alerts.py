"""The alert state machine, the silent-source rule and the health report's lines: pure logic."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily

from ys_platform.catalog.codec import encode
from ys_platform.connectors import ConnectorStatus, TaskStatus
from ys_platform.monitoring.alerts import (
    AlertTracker,
    Condition,
    freshness_conditions,
    health_conditions,
    metric_records,
)
from ys_platform.monitoring.freshness import (
    FreshnessReport,
    HeartbeatFreshness,
    TopicFreshness,
    freshness_metrics,
    is_silent,
)
from ys_platform.monitoring.health import (
    ConnectHealth,
    ConnectorHealth,
    HealthReport,
    KafkaHealth,
    PartitionRef,
    StoreHealth,
    health_metrics,
)

DOWN = Condition("health:kafka brokers", "critical", "kafka brokers: 2 of 3 alive")
SILENT = Condition("cdc-silent:pg", "critical", "CDC source pg is silent")


def test_a_condition_is_raised_once_and_resolved_once():
    tracker = AlertTracker()
    raised = tracker.update([DOWN], now=100.0)
    again = tracker.update([DOWN], now=105.0)
    still = tracker.update([DOWN], now=110.0)
    resolved = tracker.update([], now=130.0)
    after = tracker.update([], now=135.0)

    assert [(a.labels["state"], a.alert_id) for a in raised] == [
        ("raised", "health:kafka-brokers@100000")
    ]
    assert again == still == after == []
    assert [(a.labels["state"], a.alert_id, a.severity) for a in resolved] == [
        ("resolved", "health:kafka-brokers@100000", "critical")
    ]
    assert resolved[0].message == "Resolved after 30 s: kafka brokers: 2 of 3 alive"
    assert resolved[0].ts == datetime.fromtimestamp(130.0, UTC)
    assert tracker.active == {}


def test_a_new_episode_after_a_resolve_gets_a_new_id():
    tracker = AlertTracker()
    first = tracker.update([SILENT], now=10.0)
    tracker.update([], now=20.0)
    second = tracker.update([SILENT], now=30.0)
    assert first[0].alert_id == "cdc-silent:pg@10000"
    assert second[0].alert_id == "cdc-silent:pg@30000"
    assert second[0].labels == {"condition": "cdc-silent:pg", "state": "raised"}


def test_conditions_are_tracked_independently_and_a_changed_message_does_not_re_raise():
    tracker = AlertTracker()
    assert len(tracker.update([DOWN, SILENT], now=1.0)) == 2
    worse = Condition(DOWN.key, "critical", "kafka brokers: 1 of 3 alive")
    records = tracker.update([worse], now=2.0)
    assert [(r.labels["condition"], r.labels["state"]) for r in records] == [
        ("cdc-silent:pg", "resolved")
    ]
    assert list(tracker.active) == ["health:kafka brokers"]
    # The same key twice in one poll is one condition.
    (again,) = tracker.update([worse, SILENT, SILENT], now=3.0)
    assert (again.labels["condition"], again.labels["state"]) == ("cdc-silent:pg", "raised")
    assert tracker.update([DOWN, SILENT, SILENT], now=4.0) == []


def test_alert_records_are_valid_catalog_messages():
    record = AlertTracker(source="test").update([DOWN], now=1_700_000_000.5)[0]
    key, value, _ = encode(record)
    assert key == b"health:kafka-brokers@1700000000500"
    assert b'"state":"raised"' in value
    assert record.source == "test"


def test_silent_after_three_missed_heartbeats():
    assert not is_silent(30.0, 10.0)
    assert is_silent(30.1, 10.0)
    assert is_silent(None, 10.0)  # never seen a heartbeat
    assert not is_silent(None, None)  # heartbeats off: cannot judge


def _freshness(age_s: float | None) -> FreshnessReport:
    return FreshnessReport(
        checked_at=1000.0,
        topics=(
            TopicFreshness("defi.tokens", 990_000, 10.0),
            TopicFreshness("defi.yields", None, None),
        ),
        heartbeats=(HeartbeatFreshness("pg", "__debezium-heartbeat.ys", 10.0, None, age_s),),
    )


def test_freshness_conditions_and_gauges():
    assert freshness_conditions(_freshness(12.0)) == []
    (silent,) = freshness_conditions(_freshness(45.0))
    assert silent.key == "cdc-silent:pg"
    assert "no Debezium heartbeat for 45 s" in silent.message

    samples = _samples(freshness_metrics(_freshness(45.0), "c1"))
    assert samples == {
        ("ys_source_freshness_seconds", (("cluster_name", "c1"), ("topic", "defi.tokens"))): 10.0,
        ("ys_cdc_heartbeat_age_seconds", (("cluster_name", "c1"), ("connector", "pg"))): 45.0,
        ("ys_cdc_heartbeat_interval_seconds", (("cluster_name", "c1"), ("connector", "pg"))): 10.0,
        ("ys_cdc_source_silent", (("cluster_name", "c1"), ("connector", "pg"))): 1.0,
    }


def _samples(families) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }


def _report() -> HealthReport:
    kafka = KafkaHealth(
        "127.0.0.1:9092",
        brokers_alive=(1, 3),
        brokers_expected=3,
        controller_id=3,
        partitions=10,
        under_replicated=(PartitionRef("t", 0), PartitionRef("t", 1)),
    )
    failed = ConnectorStatus(
        "pg", True, "RUNNING", (TaskStatus(0, "FAILED", "org.x.Boom: no\n\tat y"),)
    )
    return HealthReport(
        checked_at=0.0,
        kafka=kafka,
        connect=ConnectHealth("http://c", connectors=(ConnectorHealth(failed, "RUNNING"),)),
        stores=(StoreHealth("clickhouse", "busy", "held by pid 1"),),
    )


def test_health_lines_and_their_conditions():
    lines = {line.name: (line.ok, line.detail) for line in _report().components()}
    assert lines == {
        "kafka brokers": (False, "2 of 3 alive (1,3)"),
        "kafka controller": (True, "node 3"),
        "kafka partitions": (False, "2 under-replicated (t[0], t[1])"),
        "connect": (True, "http://c ready"),
        "connector pg": (False, "RUNNING (desired RUNNING)"),
        "connector pg task 0": (False, "FAILED: org.x.Boom: no"),
        "clickhouse": (True, "busy: held by pid 1"),
    }
    assert [c.key for c in health_conditions(_report())] == [
        "health:kafka brokers",
        "health:kafka partitions",
        "health:connector pg",
        "health:connector pg task 0",
    ]


def test_health_gauges():
    samples = _samples(health_metrics(_report(), "c1"))
    cluster = (("cluster_name", "c1"),)
    connector = (*cluster, ("connector", "pg"))
    expected = {
        ("ys_kafka_brokers_alive", cluster): 2.0,
        ("ys_kafka_brokers_expected", cluster): 3.0,
        ("ys_kafka_partitions_under_replicated", cluster): 2.0,
        ("ys_kafka_partitions_under_min_isr", cluster): 0.0,
        ("ys_kafka_partitions_offline", cluster): 0.0,
        ("ys_kafka_controller_active", cluster): 1.0,
        ("ys_component_up", (*cluster, ("component", "kafka"))): 1.0,
        ("ys_component_up", (*cluster, ("component", "connect"))): 1.0,
        ("ys_component_up", (*cluster, ("component", "clickhouse"))): 1.0,
    }
    for state in ("RUNNING", "PAUSED", "STOPPED", "FAILED", "UNASSIGNED", "RESTARTING"):
        expected["ys_connector_state", (*connector, ("state", state))] = float(state == "RUNNING")
        task = (*connector, ("state", state), ("task", "0"))
        expected["ys_connector_task_state", task] = float(state == "FAILED")
    assert samples == expected


def test_unreachable_kafka_is_one_failing_line_and_no_broker_gauges():
    report = HealthReport(
        0.0, KafkaHealth("127.0.0.1:1", error="Cannot reach Kafka", brokers_expected=1)
    )
    assert [(c.name, c.ok) for c in report.components()] == [("kafka", False)]
    assert _samples(health_metrics(report, "c1")) == {
        ("ys_kafka_brokers_expected", (("cluster_name", "c1"),)): 1.0,
        ("ys_component_up", (("cluster_name", "c1"), ("component", "kafka"))): 0.0,
    }


def test_metric_records_skip_non_finite_samples():
    family = GaugeMetricFamily("g", "doc", labels=["x"])
    family.add_metric(["a"], 1.5)
    family.add_metric(["b"], math.nan)
    (record,) = metric_records([family], now=5.0)
    assert (record.name, record.value, record.labels) == ("g", 1.5, {"x": "a"})
