"""LagTracker and LagCollector on hand-made readings: lag, time lag, status, bounds, metrics."""

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ys_platform.monitoring.exporter import LagCollector, build_registry
from ys_platform.monitoring.lag import (
    CommittedPartition,
    GroupOffsets,
    Member,
    OffsetReading,
    PartitionOffsets,
)
from ys_platform.monitoring.snapshot import LagTracker
from ys_platform.monitoring.status import Status

OWNER = Member("m-1", "client-1", "/127.0.0.1")


def reading(at, latest, committed, *, next_record=None, readable=None, stable=None):
    """One group "g" on partition t[0]; ``next_record``/``readable``: the probe's verdict."""
    offsets = {("t", 0): PartitionOffsets(0, latest, latest if stable is None else stable)}
    next_record = committed if next_record is None else next_record
    partition = CommittedPartition("t", 0, committed, next_record, readable, OWNER)
    return OffsetReading(
        at,
        (
            GroupOffsets("g", "STABLE", False, (partition,)),
            GroupOffsets("catalog-group", "DEAD", False, ()),
        ),
        offsets,
        0.012,
    )


def tracker(window: int = 3) -> LagTracker:
    return LagTracker("c", {"g": 5.0, "catalog-group": 30.0}, window=window)


def test_lag_seconds_absent_on_the_first_poll_then_interpolated():
    t = tracker()
    first = t.update(reading(10.0, latest=100, committed=40)).group("g")
    assert first.partitions[0].lag == 60
    assert first.partitions[0].lag_seconds is None
    assert first.max_lag_seconds is None
    assert first.within_bound is None
    second = t.update(reading(20.0, latest=200, committed=40)).group("g")
    # 10 offsets a second through (100, 10 s) and (200, 20 s): offset 40 was written at 4 s.
    assert second.partitions[0].lag == 160
    assert second.partitions[0].lag_seconds == 16.0
    assert second.max_lag_seconds == 16.0
    assert second.within_bound is False


def test_markers_are_not_lag():
    # Committed at 50, the probe found nothing readable before the end 51: lag 0, 0 s.
    t = tracker()
    t.update(reading(10.0, latest=51, committed=50, next_record=51, readable=0))
    group = t.update(reading(20.0, latest=51, committed=50, next_record=51, readable=0)).group("g")
    assert group.partitions[0].lag == 0
    assert group.partitions[0].lag_seconds == 0.0
    assert group.within_bound is True


def test_the_probe_count_is_the_lag_and_its_first_record_the_age():
    # Committed at 40 of 200: records 40-49 aborted, 50 a marker, 51.. readable (149 of them).
    t = tracker()
    t.update(reading(10.0, latest=100, committed=40, next_record=51, readable=149 - 100))
    group = t.update(reading(20.0, latest=200, committed=40, next_record=51, readable=149))
    p = group.group("g").partitions[0]
    assert p.lag == 149
    assert p.lag_seconds == pytest.approx(14.9)  # offset 51 written at 5.1 s (10 offsets a second)


def test_open_transaction_is_not_lag():
    group = tracker().update(reading(10.0, latest=80, committed=50, stable=50)).group("g")
    assert group.partitions[0].lag == 0


def test_catalog_group_absent_from_the_cluster_is_notfound():
    group = tracker().update(reading(10.0, latest=10, committed=10)).group("catalog-group")
    assert group.status is Status.NOTFOUND
    assert group.partitions == ()
    assert group.lag_bound_s == 30.0


def test_collector_renders_kafka_lag_exporter_names():
    collector = LagCollector()
    registry = build_registry([collector])
    assert generate_latest(registry) == b""  # nothing before the first poll
    t = tracker()
    collector.on_snapshot(t.update(reading(10.0, latest=100, committed=40)))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    labels = {
        "cluster_name": "c",
        "group": "g",
        "topic": "t",
        "partition": "0",
        "member_host": "/127.0.0.1",
        "consumer_id": "m-1",
        "client_id": "client-1",
    }
    [lag] = families["kafka_consumergroup_group_lag"].samples
    assert (lag.labels, lag.value) == (labels, 60.0)
    # No estimate yet: no sample at all (not NaN, not 0).
    assert families["kafka_consumergroup_group_lag_seconds"].samples == []
    [max_lag] = families["kafka_consumergroup_group_max_lag"].samples
    assert max_lag.labels == {"cluster_name": "c", "group": "g", "is_simple_consumer": "false"}
    assert max_lag.value == 60.0
    [latest] = families["kafka_partition_latest_offset"].samples
    assert (latest.labels, latest.value) == (
        {"cluster_name": "c", "topic": "t", "partition": "0"},
        100.0,
    )
    status = {
        (s.labels["group"], s.labels["status"]): s.value
        for s in families["ys_consumergroup_status"].samples
    }
    assert status[("g", "OK")] == 1.0 and status[("g", "STOP")] == 0.0
    assert status[("catalog-group", "NOTFOUND")] == 1.0

    collector.on_snapshot(t.update(reading(20.0, latest=200, committed=40)))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    [seconds] = families["kafka_consumergroup_group_lag_seconds"].samples
    assert (seconds.labels, seconds.value) == (labels, 16.0)
    [within] = families["kafka_consumergroup_group_within_bound"].samples
    assert (within.labels["group"], within.value) == ("g", 0.0)


def test_max_lag_seconds_is_not_zero_while_a_lagging_partition_has_no_estimate():
    from ys_platform.monitoring.snapshot import GroupLag, PartitionLag

    def group(*partitions):
        return GroupLag("g", "EMPTY", False, tuple(partitions), Status.OK, 10.0)

    caught_up = PartitionLag("t", 0, 5, 0, 0.0, Status.OK, None)
    unknown = PartitionLag("t", 1, 5, 20, None, Status.OK, None)
    known = PartitionLag("t", 2, 5, 20, 12.5, Status.OK, None)
    assert group(caught_up, unknown).max_lag_seconds is None
    assert group(caught_up, unknown).within_bound is None
    assert group(caught_up, unknown, known).max_lag_seconds == 12.5
    assert group(caught_up).max_lag_seconds == 0.0


def test_a_group_before_its_first_commit():
    """Input partitions a group never committed (``started=False``) count from the start; with
    no member they are NOTFOUND (the group has not run), with one they are judged as any."""
    t = tracker(window=2)

    def fresh(at: float, latest: int, owner: Member | None) -> OffsetReading:
        offsets = {("t", 0): PartitionOffsets(5, latest, latest)}
        partition = CommittedPartition("t", 0, 5, 5, None, owner, started=False)
        state = "DEAD" if owner is None else "STABLE"
        return OffsetReading(
            at, (GroupOffsets("catalog-group", state, False, (partition,)),), offsets, 0.01
        )

    group = t.update(fresh(10.0, 50, None)).group("catalog-group")
    assert (group.sum_lag, group.status) == (45, Status.NOTFOUND)
    assert group.partitions[0].status is Status.NOTFOUND
    group = t.update(fresh(20.0, 60, OWNER)).group("catalog-group")
    assert group.sum_lag == 55
    # Owned, the offset did not move over a full window while records wait: STALL.
    assert group.status is Status.STALL
