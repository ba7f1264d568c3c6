"""The pure reconcile plan: what reconcile does for each difference between catalog and cluster."""

import pytest

from ys_platform.catalog.topics import TopicSpec, topic
from ys_platform.streaming.topics import (
    LiveTopic,
    TopicAdminError,
    effective_replication_factor,
    plan_topic,
)

TRANSACTIONS = topic("defi.transactions")
TRANSACTIONS_CONFIGS = {
    "compression.type": "snappy",
    "segment.ms": "86400000",
    "retention.ms": "2592000000",
}


def _live(partitions=24, rf=3, **configs):
    base = {**TRANSACTIONS_CONFIGS, "min.insync.replicas": "2"}
    return LiveTopic("defi.transactions", partitions, rf, {**base, **configs})


def test_missing_topic_is_created_with_catalog_configs():
    plan = plan_topic(TRANSACTIONS, None, broker_count=3)
    assert plan.create
    assert plan.replication_factor == 3
    assert dict(plan.desired_configs) == {**TRANSACTIONS_CONFIGS, "min.insync.replicas": "2"}
    assert plan.changes == ("create with 24 partitions, RF 3",)
    assert not plan.in_sync
    assert plan.warnings == ()


def test_replication_capped_on_small_cluster_with_warning():
    plan = plan_topic(TRANSACTIONS, None, broker_count=1)
    assert plan.replication_factor == 1
    assert plan.desired_configs["min.insync.replicas"] == "1"
    assert plan.warnings == (
        "replication factor capped from 3 to 1: the cluster has only 1 broker(s)",
    )
    assert effective_replication_factor(TRANSACTIONS, 2) == (
        2,
        plan.warnings[0].replace("to 1: the cluster has only 1", "to 2: the cluster has only 2"),
    )


def test_no_brokers_is_an_error():
    with pytest.raises(TopicAdminError, match="no brokers"):
        plan_topic(TRANSACTIONS, None, broker_count=0)


def test_matching_topic_is_in_sync():
    plan = plan_topic(TRANSACTIONS, _live(), broker_count=3)
    assert plan.in_sync
    assert plan.changes == ()


def test_config_changed_by_hand_is_set_back_and_unknown_override_removed():
    live = _live(**{"retention.ms": "1000", "max.message.bytes": "2048"})
    plan = plan_topic(TRANSACTIONS, live, broker_count=3)
    assert dict(plan.set_configs) == {"retention.ms": ("1000", "2592000000")}
    assert dict(plan.remove_configs) == {"max.message.bytes": "2048"}
    assert plan.changes == (
        "set retention.ms=2592000000 (was 1000)",
        "remove override max.message.bytes=2048",
    )
    assert plan.drift == ()


def test_fewer_partitions_live_adds_partitions():
    plan = plan_topic(TRANSACTIONS, _live(partitions=12), broker_count=3)
    assert plan.add_partitions == (12, 24)
    assert plan.changes == ("add partitions 12 → 24",)


def test_more_partitions_live_is_drift_not_a_change():
    plan = plan_topic(TRANSACTIONS, _live(partitions=30), broker_count=3)
    assert plan.add_partitions is None
    assert plan.changes == ()
    assert len(plan.drift) == 1
    assert plan.drift[0].startswith("has 30 partitions, the catalog wants 24")
    assert not plan.in_sync


def test_replication_difference_is_drift():
    plan = plan_topic(TRANSACTIONS, _live(rf=2), broker_count=3)
    assert plan.drift == (
        "replication factor is 2, the catalog wants 3: change it with a partition "
        "reassignment (kafka-reassign-partitions)",
    )


def test_missing_min_insync_is_set():
    spec = TopicSpec("x.y", 3, "test", key=None)
    live = LiveTopic("x.y", 3, 3, {})
    plan = plan_topic(spec, live, broker_count=3)
    assert dict(plan.set_configs) == {"min.insync.replicas": (None, "2")}
    assert plan.changes == ("set min.insync.replicas=2 (was default)",)
