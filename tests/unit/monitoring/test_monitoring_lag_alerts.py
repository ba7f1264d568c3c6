"""The lag snapshot as alert conditions: catalog groups' STOP/STALL/REWIND and lag over their
bound raise once and resolve once; other groups (a dead-letter replay's) never alert."""

from ys_platform.monitoring.alerts import AlertTracker, lag_conditions, lag_snapshot_families
from ys_platform.monitoring.snapshot import GroupLag, LagSnapshot, PartitionLag
from ys_platform.monitoring.status import Status


def group(group_id, status, *, bound=30.0, lag=7, seconds=4.0):
    partitions = (
        PartitionLag("market.prices", 0, 100, lag, seconds, status, None),
        PartitionLag("market.prices", 1, 50, 0, 0.0, Status.OK, None),
    )
    return GroupLag(group_id, "EMPTY", False, partitions, status, bound)


def snapshot(*groups, at=1000.0):
    return LagSnapshot("ys-test", at, tuple(groups))


def test_a_stopped_catalog_group_is_a_critical_condition_naming_its_partitions():
    [condition] = lag_conditions(snapshot(group("risk-assessment-processor", Status.STOP)))
    assert condition.key == "group-status:risk-assessment-processor:STOP"
    assert condition.severity == "critical"
    assert condition.labels == {
        "group": "risk-assessment-processor",
        "cluster_name": "ys-test",
        "kind": "group-status",
        "status": "STOP",
    }
    assert condition.message.startswith("consumer group risk-assessment-processor is STOP: ")
    assert condition.message.endswith("; 7 records behind (market.prices[0])")


def test_stall_is_critical_rewind_a_warning_ok_warn_and_notfound_nothing():
    statuses = [Status.STALL, Status.REWIND, Status.OK, Status.WARN, Status.NOTFOUND]
    found = lag_conditions(snapshot(*(group(f"g-{s.name}", s, seconds=1.0) for s in statuses)))
    assert [(c.key, c.severity) for c in found] == [
        ("group-status:g-STALL:STALL", "critical"),
        ("group-status:g-REWIND:REWIND", "warning"),
    ]


def test_lag_seconds_over_the_bound_is_a_warning_and_none_without_an_estimate():
    over = group("clickhouse-sink", Status.OK, bound=60.0, seconds=61.5)
    unknown = group("vector-sink", Status.OK, bound=60.0, seconds=None)
    at_bound = group("price-aggregation-processor", Status.OK, bound=30.0, seconds=30.0)
    [condition] = lag_conditions(snapshot(over, unknown, at_bound))
    assert condition.key == "group-lag:clickhouse-sink"
    assert condition.severity == "warning"
    assert condition.message == (
        "consumer group clickhouse-sink is 62 s behind its inputs (bound 60 s), 7 records"
    )


def test_groups_outside_the_catalog_never_alert():
    # A dead-letter replay group commits once per replay, then sits behind its topic: STOP.
    replay = group("price-aggregation-processor.dlq-replay", Status.STOP, bound=None, seconds=900)
    assert lag_conditions(snapshot(replay)) == []


def test_a_stop_raises_once_and_resolves_once():
    tracker = AlertTracker()
    stopped = snapshot(group("vector-sink", Status.STOP, bound=60.0))
    raised = tracker.update(lag_conditions(stopped), 1000.0)
    assert [a.labels["state"] for a in raised] == ["raised"]
    assert tracker.update(lag_conditions(stopped), 1005.0) == []
    resolved = tracker.update(lag_conditions(snapshot(group("vector-sink", Status.OK))), 1010.0)
    assert [(a.alert_id, a.labels["state"]) for a in resolved] == [(raised[0].alert_id, "resolved")]


def test_the_metrics_snapshot_carries_group_figures_only():
    families = lag_snapshot_families(snapshot(group("vector-sink", Status.STOP, bound=60.0)))
    assert sorted(f.name for f in families) == [
        "kafka_consumergroup_group_max_lag",
        "kafka_consumergroup_group_max_lag_seconds",
        "kafka_consumergroup_group_sum_lag",
        "kafka_consumergroup_group_within_bound",
        "ys_consumergroup_status",
    ]
    [sum_lag] = [f for f in families if f.name == "kafka_consumergroup_group_sum_lag"]
    assert [(s.labels, s.value) for s in sum_lag.samples] == [
        ({"cluster_name": "ys-test", "group": "vector-sink"}, 7.0)
    ]
