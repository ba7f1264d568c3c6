"""Topic reconcile against the local broker: create, repair config drift, add partitions, and
report (not apply) what Kafka cannot do."""

import uuid

import pytest
from confluent_kafka.admin import NewTopic
from kafka_helpers import set_config_by_hand

from ys_platform.catalog.topics import ALL_TOPICS, TopicSpec, topic
from ys_platform.cli import main
from ys_platform.streaming.topics import apply_plans, describe_topics, plan_topics


@pytest.fixture
def admin(local_stack):
    return local_stack.kafka.admin()


def _scratch_topic(admin, partitions: int) -> str:
    name = f"test.reconcile-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(30)
    return name


def test_catalog_applies_and_is_then_in_sync(admin):
    apply_plans(admin, plan_topics(admin, list(ALL_TOPICS)))
    after = plan_topics(admin, list(ALL_TOPICS))
    assert [p.spec.name for p in after if not p.in_sync] == []
    live = describe_topics(admin, ["defi.transactions", "defi.protocols"])
    assert live["defi.transactions"].partitions == 24
    assert live["defi.transactions"].configs["retention.ms"] == "2592000000"
    assert live["defi.transactions"].configs["compression.type"] == "snappy"
    assert live["defi.protocols"].configs["cleanup.policy"] == "compact"


def test_config_altered_by_hand_is_reconciled_back(admin):
    spec = topic("defi.transactions")
    apply_plans(admin, plan_topics(admin, [spec]))
    set_config_by_hand(admin, spec.name, "retention.ms", "60000")
    set_config_by_hand(admin, spec.name, "max.message.bytes", "2048")

    (plan,) = plan_topics(admin, [spec])
    assert dict(plan.set_configs) == {"retention.ms": ("60000", "2592000000")}
    assert dict(plan.remove_configs) == {"max.message.bytes": "2048"}
    apply_plans(admin, [plan])

    live = describe_topics(admin, [spec.name])[spec.name]
    assert live.configs["retention.ms"] == "2592000000"
    assert "max.message.bytes" not in live.configs
    assert plan_topics(admin, [spec])[0].in_sync


def test_fewer_partitions_wanted_is_reported_not_applied(admin):
    name = _scratch_topic(admin, partitions=4)
    spec = TopicSpec(name, 2, "scratch", key=None, replication_factor=1)
    (plan,) = plan_topics(admin, [spec])
    assert plan.drift[0].startswith("has 4 partitions, the catalog wants 2")
    apply_plans(admin, [plan])
    assert describe_topics(admin, [name])[name].partitions == 4


def test_partitions_are_added(admin):
    name = _scratch_topic(admin, partitions=2)
    spec = TopicSpec(name, 5, "scratch", key=None, replication_factor=1)
    (plan,) = plan_topics(admin, [spec])
    assert plan.add_partitions == (2, 5)
    apply_plans(admin, [plan])
    assert describe_topics(admin, [name])[name].partitions == 5
    assert plan_topics(admin, [spec])[0].in_sync


def test_cli_dry_run_changes_nothing(admin, local_stack, capsys):
    spec = topic("market.prices")
    apply_plans(admin, plan_topics(admin, [spec]))
    set_config_by_hand(admin, spec.name, "retention.ms", "60000")
    assert main(["topics", "apply", "--dry-run", spec.name]) == 0
    out = capsys.readouterr().out
    assert "would set retention.ms" not in out  # the catalog has no retention for market.prices
    assert "would remove override retention.ms=60000" in out
    assert describe_topics(admin, [spec.name])[spec.name].configs["retention.ms"] == "60000"

    assert main(["topics", "apply", spec.name]) == 0
    assert "did remove override retention.ms=60000" in capsys.readouterr().out
    assert "retention.ms" not in describe_topics(admin, [spec.name])[spec.name].configs
